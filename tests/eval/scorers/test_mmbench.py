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
    assert mmbench_letter("D", letters="ABC") is None


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
