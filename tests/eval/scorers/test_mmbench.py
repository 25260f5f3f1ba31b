"""MMBench: rule-based letter matching and circular evaluation."""

import pytest

from voco_llama.eval.scorers import score
from voco_llama.eval.scorers.mmbench import mmbench_letter

EXACT = 1e-9


def test_mmbench_letter_match():
    assert mmbench_letter("B") == "B"
    assert mmbench_letter("A. dog") == "A"
    assert mmbench_letter("The answer is (C).") == "C"
    assert mmbench_letter("B or C") is None  # two letters: no match
    assert mmbench_letter("dog") is None
    assert mmbench_letter("D", "ABC") is None


def test_mmbench_option_text_fallback_as_vlmevalkit():
    options = {"A": "cat", "B": "dog", "C": "red fox", "D": "cow"}
    assert mmbench_letter("dog", options) == "B"  # the option's text, not its letter
    assert mmbench_letter("It is a dog.", options) == "B"
    assert mmbench_letter("Red Fox", options) == "C"  # case-insensitive substring
    assert mmbench_letter("B. dog", options) == "B"
    assert mmbench_letter("cat or dog", options) is None  # two options' texts
    assert mmbench_letter("B or C", options) is None  # two letters, and no option text
    assert mmbench_letter("B or C, the dog", options) == "B"  # two letters: the text decides
    assert mmbench_letter("A dog", options) == "A"  # VLMEvalKit's quirk: "A" stands as a word
    assert mmbench_letter("Cannot determine the answer", options) == "Z"  # a refusal: wrong, no text match
    assert mmbench_letter("Z", options) == "Z"
    assert mmbench_letter("horse", options) is None
    assert mmbench_letter("dog", "ABCD") is None  # without option texts only letters count


def test_mmbench_circular_one_wrong_copy_fails_the_group(tmp_path, answers, mmbench_tsv):
    def row(index, options, answer, category):
        return {
            "index": index,
            "question": "?",
            "hint": "nan",
            "answer": answer,
            "category": category,
            "image": "aGVsbG8=",
            **dict(zip("ABCD", options)),
        }

    tsv = mmbench_tsv(
        tmp_path / "mmbench_dev.tsv",
        [
            row(1, ["cat", "dog", "cow", "pig"], "B", "attribute"),  # dog
            row(1000001, ["dog", "cow", "pig", "cat"], "A", "attribute"),
            row(2000001, ["cow", "pig", "cat", "dog"], "D", "attribute"),
            row(3000001, ["pig", "cat", "dog", "cow"], "C", "attribute"),
            row(2, ["yes", "no"], "A", "relation"),
            row(1000002, ["no", "yes"], "B", "relation"),
            row(3, ["red", "green", "blue"], "C", "attribute"),
            row(1000003, ["green", "blue", "red"], "B", "attribute"),
            row(2000003, ["blue", "red", "green"], "A", "attribute"),
        ],
    )
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            (1, "B"),
            (1000001, "A. dog"),
            (2000001, "The answer is D"),
            (3000001, "C"),  # group 1: all right
            (2, "A"),
            (1000002, "A"),  # group 2: one wrong
            (3, "C"),
            (1000003, "B"),
            (2000003, "A"),  # group 3: all right
        ],
    )
    s = score("mmbench", ans, tsv)
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)  # 2 of 3 groups
    assert s["metrics"]["n_groups"] == 3
    assert s["metrics"]["single_copy_accuracy"] == pytest.approx(800 / 9, abs=EXACT)  # 8 of 9 copies
    assert s["categories"] == {
        "attribute": {"n_groups": 2, "circular_accuracy": 100.0},
        "relation": {"n_groups": 1, "circular_accuracy": 0.0},
    }


def test_mmbench_all_rounds_rotates_the_gold(tmp_path, write_jsonl, mmbench_tsv):
    tsv = mmbench_tsv(
        tmp_path / "mmbench_dev.tsv",
        [{"index": 5, "question": "?", "A": "cat", "B": "dog", "C": "cow", "D": "nan", "answer": "B"}],
    )
    # LLaVA --all-rounds: round r shows the options rotated left r times; the gold "dog" moves
    # from B (round 0) to A ([dog, cow, cat], round 1) to C ([cow, cat, dog], round 2).
    ans = write_jsonl(
        tmp_path / "ans.jsonl",
        [
            {"question_id": 5, "round_id": 0, "text": "B"},  # right
            {"question_id": 5, "round_id": 1, "text": "A"},  # right
            {"question_id": 5, "round_id": 2, "text": "B"},  # wrong (gold C)
        ],
    )
    s = score("mmbench", ans, tsv)
    assert s["score"] == 0.0
    assert s["metrics"]["single_copy_accuracy"] == pytest.approx(200 / 3, abs=EXACT)


def test_mmbench_generic_key_groups(tmp_path, write_jsonl, answers):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [
            {"question_id": "q1a", "answer": "B", "group": "g1"},
            {"question_id": "q1b", "answer": "A", "group": "g1"},
            {"question_id": "q2", "answer": "C"},  # its own group
        ],
    )
    ans = answers(tmp_path / "ans.jsonl", [("q1a", "B"), ("q1b", "B"), ("q2", "C")])
    assert score("mmbench", ans, key)["score"] == 50.0  # g1 fails (q1b wrong), q2 passes


def test_mmbench_answers_given_as_option_text_score_as_the_official_matcher(tmp_path, answers, mmbench_tsv):
    # 16 single-copy questions (no circular copies), options cat/dog/cow/pig; answers as a model
    # gives them: 8 letters, 3 option texts, 5 that no rule can match. The letter-only rule scored
    # the 3 texts wrong: 6 right of 16 (37.5); VLMEvalKit's matcher: 9 of 16 (56.25).
    texts = ["cat", "dog", "cow", "pig"]
    rows, pairs = [], []
    outputs = {
        1: ("A", "A"), 2: ("B", "B. dog"), 3: ("C", "The answer is C"), 4: ("D", "(D)"),
        5: ("A", "A"), 6: ("B", "B"), 7: ("C", "D"), 8: ("D", "A"),  # 2 wrong letters
        9: ("B", "dog"), 10: ("C", "It is a cow."), 11: ("D", "Pig"),  # option texts, right
        12: ("A", "dog"),  # option text, wrong
        13: ("A", "a horse"), 14: ("B", "cat or dog"), 15: ("C", "B or C"), 16: ("D", ""),  # unmatched
    }  # fmt: skip
    for index, (gold, text) in outputs.items():
        rows.append({"index": index, "question": "?", "answer": gold, "category": "c", **dict(zip("ABCD", texts))})
        pairs.append((index, text))
    s = score("mmbench", answers(tmp_path / "ans.jsonl", pairs), mmbench_tsv(tmp_path / "mmb.tsv", rows))
    assert s["score"] == pytest.approx(100 * 9 / 16, abs=EXACT)  # 56.25
    assert s["metrics"]["n_groups"] == 16


def test_mmbench_generic_key_reads_the_options_from_the_prompt(tmp_path, write_jsonl, answers):
    prompt = (
        "What is it?\nA. cat\nB. dog\nC. cow\nD. pig\nAnswer with the option's letter from the given choices directly."
    )
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [
            {"question_id": 1, "answer": "B", "group": 0},
            {"question_id": 2, "answer": "C", "group": 1, "options": ["cat", "dog", "cow", "pig"]},
            {"question_id": 3, "answer": "A", "group": 2},
        ],
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "dog", prompt), (2, "cow"), (3, "cat")])  # q3: no prompt, no options
    s = score("mmbench", ans, key)
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)  # q1 via its prompt, q2 via the key; q3 unmatched
