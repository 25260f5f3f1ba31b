"""Tests for voco_llama.eval.scoring: every scorer on tiny hand-made inputs with hand-computed scores."""

import argparse
import json
import warnings

import pytest

from voco_llama.cli import main
from voco_llama.eval import scoring
from voco_llama.eval.scoring import (
    ScoringError,
    ScoringWarning,
    format_retention,
    format_table,
    load_answers,
    load_scores,
    mmbench_letter,
    mme_yes_no,
    pope_yes_no,
    register_cli,
    retention,
    score,
    sqa_letter,
    vqa_normalize,
    vqa_soft_accuracy,
)

EXACT = 1e-9  # "exact" for float arithmetic


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def answers(path, pairs, **extra):
    """LLaVA-style answer file from [(question_id, text)] or [(question_id, text, prompt)]."""
    records = []
    for item in pairs:
        qid, text, prompt = (*item, "")[:3]
        records.append(
            {
                "question_id": qid,
                "prompt": prompt,
                "text": text,
                "answer_id": "x",
                "model_id": "m",
                "metadata": {},
                **extra,
            }
        )
    return write_jsonl(path, records)


# ---------------------------------------------------------------------------------------------
# Answer files
# ---------------------------------------------------------------------------------------------


def test_torn_final_line_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"question_id": 1, "text": "yes"}\n\n{"question_id": 2, "text": "no"}\n{"question_id": 3, "te',
        encoding="utf-8",
    )
    with pytest.warns(ScoringWarning, match=r"a\.jsonl:4"):
        got = load_answers(path)
    assert [(a["question_id"], a["text"], a["_line"]) for a in got] == [(1, "yes", 1), (2, "no", 3)]


def test_bad_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1, "text": "yes"}\nnot json\n{"question_id": 3, "text": "no"}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:2: not valid JSON"):
        load_answers(path)
    path.write_text('{"question_id": 1, "text": "yes"}\n{"question_id": 2}\n{"question_id": 3, "text": "no"}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:2: an answer needs"):
        load_answers(path)


def test_unknown_and_duplicate_question_ids_are_errors(tmp_path):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": "q1", "answer": "dog"}])
    with pytest.raises(ScoringError, match=r"ans\.jsonl:2: question_id 'q9' is not in the answer key"):
        score("gqa", answers(tmp_path / "ans.jsonl", [("q1", "dog"), ("q9", "cat")]), key)
    with pytest.raises(ScoringError, match=r"ans\.jsonl:2: question_id 'q1' is answered twice \(first on line 1\)"):
        score("gqa", answers(tmp_path / "ans.jsonl", [("q1", "dog"), ("q1", "cat")]), key)


# ---------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------


def test_pope_parser_is_llavas():
    assert pope_yes_no("Yes, there is a cat.") == "yes"
    assert pope_yes_no("no.") == "no"
    assert pope_yes_no("No, there is not.") == "no"
    assert pope_yes_no("There is a car, no doubt.") == "no"  # any "no" word in the first sentence
    assert pope_yes_no("Yes. But no cat.") == "yes"  # only the first sentence counts
    # LLaVA's word list is {"No", "not", "no"}, case-sensitive: "Not really" does NOT parse as no.
    assert pope_yes_no("Not really") == "yes"
    assert pope_yes_no("") == "yes"  # so a missing answer counts as "yes", as in LLaVA


def _pope_files(tmp_path):
    """Two label files that both number their questions 1..4, plus LLaVA's renumbering question file."""
    d = tmp_path / "coco"
    d.mkdir()
    adversarial = [("a.jpg", "cat", "yes"), ("a.jpg", "dog", "no"), ("b.jpg", "person", "yes"), ("b.jpg", "car", "no")]
    random_ = [("a.jpg", "cat", "yes"), ("a.jpg", "kite", "no"), ("c.jpg", "sheep", "no"), ("c.jpg", "bus", "yes")]
    questions = []
    for category, rows, offset in (("adversarial", adversarial, 0), ("random", random_, 10000000)):
        write_jsonl(
            d / f"coco_pope_{category}.json",
            [
                {"question_id": i, "image": img, "text": f"Is there a {obj} in the image?", "label": label}
                for i, (img, obj, label) in enumerate(rows, 1)
            ],
        )
        questions += [
            {
                "question_id": offset + i,
                "image": img,
                "category": category,
                "text": f"Is there a {obj} in the image?\nAnswer the question using a single word or phrase.",
            }
            for i, (img, obj, _) in enumerate(rows, 1)
        ]
    return d, write_jsonl(tmp_path / "llava_pope_test.jsonl", questions)


def test_pope_per_category_metrics_through_llavas_question_file(tmp_path):
    label_dir, question_file = _pope_files(tmp_path)
    ans = answers(
        tmp_path / "ans.jsonl",
        [  # shuffled on purpose: matching is by content, not position
            (10000004, "Yes"),  # random 4, gold yes -> TP
            (1, "Yes, there is a cat."),  # adversarial 1, gold yes -> TP
            (2, "no."),  # adversarial 2, gold no -> TN
            (10000001, "No"),  # random 1, gold yes -> FN
            (3, "Not really"),  # adversarial 3, gold yes; parses as "yes" -> TP
            (10000002, "No, there is not."),  # random 2, gold no -> TN
            (4, "There is a car, yes"),  # adversarial 4, gold no -> FP
            (10000003, "I do not think so"),  # random 3, gold no -> TN ("not")
        ],
    )
    s = score("pope", ans, label_dir, extra_file=question_file)
    adv, rnd = s["categories"]["adversarial"], s["categories"]["random"]
    # adversarial: TP 2, FP 1, TN 1, FN 0 -> precision 2/3, recall 1, F1 = 2*(2/3)/(5/3) = 0.8
    assert (adv["TP"], adv["FP"], adv["TN"], adv["FN"]) == (2, 1, 1, 0)
    assert adv["precision"] == pytest.approx(200 / 3, abs=EXACT)
    assert adv["recall"] == 100.0
    assert adv["f1"] == pytest.approx(80.0, abs=EXACT)
    assert adv["accuracy"] == 75.0 and adv["yes_ratio"] == 75.0
    # random: TP 1, FP 0, TN 2, FN 1 -> precision 1, recall 1/2, F1 = 2/3
    assert (rnd["TP"], rnd["FP"], rnd["TN"], rnd["FN"]) == (1, 0, 2, 1)
    assert rnd["f1"] == pytest.approx(200 / 3, abs=EXACT)
    assert rnd["accuracy"] == 75.0 and rnd["yes_ratio"] == 25.0
    # headline: mean F1 over categories = (80 + 66.667) / 2
    assert s["score"] == pytest.approx((80 + 200 / 3) / 2, abs=EXACT)
    assert (s["n_questions"], s["n_answered"], s["n_missing"]) == (8, 8, 0)


def test_pope_label_files_with_colliding_ids_need_the_question_file(tmp_path):
    label_dir, _ = _pope_files(tmp_path)
    with pytest.raises(ScoringError, match="extra-file"):
        score("pope", answers(tmp_path / "ans.jsonl", [(1, "yes")]), label_dir)


def test_pope_single_label_file_matches_by_id(tmp_path):
    label_dir, _ = _pope_files(tmp_path)
    ans = answers(tmp_path / "ans.jsonl", [(1, "yes"), (2, "no"), (3, "no"), (4, "no")])
    s = score("pope", ans, label_dir / "coco_pope_adversarial.json")
    # TP 1 (q1), TN 2 (q2, q4), FN 1 (q3): precision 1, recall 1/2, F1 2/3
    assert list(s["categories"]) == ["adversarial"]
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)


def test_pope_generic_key_missing_answer_scores_as_empty_output(tmp_path):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "No"}, {"question_id": 3, "answer": "no"}],
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "Yes"), (2, "No")])
    with pytest.warns(ScoringWarning, match="1 of 3 questions have no answer"):
        s = score("pope", ans, key)
    # q3 (gold no) is scored as "" -> "yes": TP 1, TN 1, FP 1 -> precision 1/2, recall 1, F1 2/3
    assert s["categories"]["all"]["FP"] == 1
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)
    assert (s["n_missing"], s["n_scored"]) == (1, 3)
    s = score("pope", ans, key, answered_only=True)
    assert s["score"] == 100.0 and (s["n_missing"], s["n_scored"]) == (1, 2)


# ---------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------


def test_mme_parser_is_mmes():
    assert mme_yes_no("Yes, there is a cat.") == "yes"
    assert mme_yes_no("no.") == "no"
    assert mme_yes_no("Not really") == "no"  # "not " contains "no"
    assert mme_yes_no("NO") == "no"
    assert mme_yes_no("I think so") == "other"
    assert mme_yes_no("") == "other"


def test_mme_release_directory_with_llava_answers(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    qa = root / "existence" / "questions_answers_YN"  # layout with images/ + questions_answers_YN/
    qa.mkdir(parents=True)
    (root / "existence" / "images").mkdir()
    (qa / "0001.txt").write_text(
        "Is there a cat in this image? Please answer yes or no.\tYes\n"
        "Is there a dog in this image? Please answer yes or no.\tNo\n"
    )
    (qa / "0002.txt").write_text(
        "Is there a car in this image? Please answer yes or no.\tYes\n"
        "Is there a bus in this image?  Please answer yes or no.\tNo\n"
    )  # two spaces
    (root / "code_reasoning").mkdir()  # flat layout
    (root / "code_reasoning" / "0001.txt").write_text(
        "Is the output of the code '3'? Please answer yes or no.\tYes\n"
        "Is the output of the code '4'? Please answer yes or no.\tNo\n"
    )
    (root / "not_a_subtask").mkdir()  # ignored
    suffix = "\nAnswer the question using a single word or phrase."
    ans = answers(
        tmp_path / "ans.jsonl",
        [  # LLaVA reuses the image path as question_id for both questions
            ("existence/images/0001.jpg", "Yes", "Is there a cat in this image?" + suffix),  # right
            ("existence/images/0001.jpg", "No", "Is there a dog in this image?" + suffix),  # right
            ("existence/images/0002.jpg", "Yes, it is.", "Is there a car in this image?" + suffix),  # right
            ("existence/images/0002.jpg", "Yes", "Is there a bus in this image?" + suffix),  # wrong
            ("code_reasoning/0001.png", "Not really", "Is the output of the code '3'?" + suffix),  # "no": wrong
            ("code_reasoning/0001.png", "no.", "Is the output of the code '4'?" + suffix),  # right
        ],
    )
    s = score("mme", ans, root)
    # existence: acc 3/4 = 75, acc+ 1/2 images = 50 -> 125; code_reasoning: acc 50, acc+ 0 -> 50
    assert s["categories"]["existence"] == {
        "score": 125.0,
        "acc": 75.0,
        "acc_plus": 50.0,
        "n": 4,
        "n_images": 2,
        "n_other": 0,
    }
    assert s["categories"]["code_reasoning"]["score"] == 50.0
    assert s["metrics"] == {"perception": 125.0, "cognition": 50.0, "total": 175.0}
    assert s["score"] == 125.0
    assert len(s["absent_subtasks"]) == 12


def test_mme_generic_key_pairs_by_image(tmp_path):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [
            {"question_id": 1, "answer": "yes", "category": "count", "image": "i1"},
            {"question_id": 2, "answer": "no", "category": "count", "image": "i1"},
            {"question_id": 3, "answer": "yes", "category": "count", "image": "i2"},
            {"question_id": 4, "answer": "no", "category": "count", "image": "i2"},
            {"question_id": 5, "answer": "yes", "category": "OCR", "image": "i2"},  # same image name, other subtask
            {"question_id": 6, "answer": "no", "category": "OCR", "image": "i2"},
        ],
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "Yes"), (2, "No"), (3, "Yes"), (4, "Maybe"), (5, "yes"), (6, "no")])
    s = score("mme", ans, key)
    # count: 3/4 right (q4 is "other") -> 75, images i1 right, i2 not -> 50: 125. OCR: 100 + 100 = 200.
    assert s["categories"]["count"]["score"] == 125.0 and s["categories"]["count"]["n_other"] == 1
    assert s["categories"]["OCR"]["score"] == 200.0
    assert s["score"] == 325.0 and s["metrics"]["cognition"] == 0


def test_mme_rejects_unknown_subtasks(tmp_path):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": 1, "answer": "yes", "category": "colour", "image": "i"}])
    with pytest.raises(ScoringError, match="'colour' is not an MME subtask"):
        score("mme", answers(tmp_path / "ans.jsonl", [(1, "yes")]), key)


# ---------------------------------------------------------------------------------------------
# GQA
# ---------------------------------------------------------------------------------------------


def test_gqa_exact_match_after_rstrip_dot_lower(tmp_path):
    key = write_json(
        tmp_path / "testdev_balanced_questions.json",
        {
            "q1": {"answer": "dog"},
            "q2": {"answer": "2"},
            "q3": {"answer": "dog"},
            "q4": {"answer": "left"},
            "q5": {"answer": "yes"},
        },
    )
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            ("q1", "Dog."),  # "dog": right
            ("q2", "two"),  # no number mapping in GQA: wrong
            ("q3", "a dog"),  # no article stripping: wrong
            ("q4", "Left..."),  # rstrip('.') removes all trailing dots: right
            ("q5", "Yes, there is."),  # "yes, there is": wrong
        ],
    )
    assert score("gqa", ans, key)["score"] == 40.0


# ---------------------------------------------------------------------------------------------
# VQAv2 / TextVQA
# ---------------------------------------------------------------------------------------------


def test_evalai_normalisation():
    assert vqa_normalize("Two") == "2"  # number words
    assert vqa_normalize("None") == "0"
    assert vqa_normalize("A dog.") == "dog"  # articles and the final period
    assert vqa_normalize("the dog") == vqa_normalize("dog")
    assert vqa_normalize("dont") == "don't"  # contractions
    assert vqa_normalize("Dont!") == "don't"  # glued "!" -> space, then the contraction
    assert vqa_normalize("1,000") == "1000"  # commas are dropped first
    assert vqa_normalize("3.5") == "3.5"  # a period before a digit stays
    assert vqa_normalize("red/white") == "red white"  # glued punctuation becomes a space
    assert vqa_normalize("red / white") == "red white"  # spaced punctuation disappears
    assert vqa_normalize("the man's hat") == "man 's hat"
    assert vqa_normalize("Yes, there is a cat.") == "yes there is cat"


def test_evalai_contraction_table_quirks():
    assert vqa_normalize("yall'll") == "y'all'll" == vqa_normalize("y'allll")
    assert vqa_normalize("couldnt've") == "couldn't've"
    assert vqa_normalize("im") == "im"  # the official "Im" key is capitalised: never matches
    assert vqa_normalize("somebody'd") == "somebodyd"  # the official table maps this one backwards
    assert len(scoring._CONTRACTIONS) == 114  # the official table's 120 minus 4 dead and 2 identity entries


def test_vqa_soft_accuracy_leave_one_out():
    # k of 10 annotators agree with the prediction. Leaving out one of the k: (k-1) matches; leaving
    # out one of the other 10-k: k matches. accuracy = [k*min(1,(k-1)/3) + (10-k)*min(1,k/3)] / 10
    others = ["cat"] * 10
    assert vqa_soft_accuracy("dog", others) == 0.0
    assert vqa_soft_accuracy("dog", ["dog"] + others[:9]) == pytest.approx(0.3, abs=EXACT)  # (0 + 9/3)/10
    assert vqa_soft_accuracy("dog", ["dog"] * 2 + others[:8]) == pytest.approx(0.6, abs=EXACT)  # (2/3 + 16/3)/10
    assert vqa_soft_accuracy("dog", ["dog"] * 3 + others[:7]) == pytest.approx(0.9, abs=EXACT)  # (3*2/3 + 7)/10
    assert vqa_soft_accuracy("dog", ["dog"] * 4 + others[:6]) == 1.0  # (4*1 + 6)/10


def test_vqav2_annotation_file(tmp_path):
    def ann(qid, golds, answer_type):
        return {
            "question_id": qid,
            "answer_type": answer_type,
            "answers": [{"answer": g, "answer_id": i + 1} for i, g in enumerate(golds)],
        }

    key = write_json(
        tmp_path / "v2_mscoco_val2014_annotations.json",
        {
            "annotations": [
                ann(1, ["2"] * 2 + ["3"] * 8, "number"),
                ann(2, ["dog"] * 3 + ["cat"] * 7, "other"),
                ann(3, ["don't"] * 4 + ["no"] * 6, "other"),
                ann(4, ["red/white"] + ["red"] * 9, "other"),
                ann(5, ["yes"] * 10, "yes/no"),
            ]
        },
    )
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            (1, "two"),  # "2": 2 of 10 -> 0.6
            (2, "A dog."),  # "dog": 3 of 10 -> 0.9
            (3, "dont"),  # "don't": 4 of 10 -> 1.0
            (4, "red white"),  # gold "red/white" normalises to "red white": 1 of 10 -> 0.3
            (5, "no"),  # 0
        ],
    )
    s = score("vqav2", ans, key)
    assert s["score"] == pytest.approx(100 * 2.8 / 5, abs=EXACT)  # 56.0
    assert s["categories"]["number"]["accuracy"] == pytest.approx(60.0, abs=EXACT)
    assert s["categories"]["other"]["accuracy"] == pytest.approx(100 * 2.2 / 3, abs=EXACT)
    assert s["categories"]["yes/no"]["accuracy"] == 0.0


def test_vqav2_generic_key_with_and_without_annotator_answers(tmp_path):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [
            {"question_id": 1, "answer": "2", "answers": ["2"] * 2 + ["3"] * 8},
            {"question_id": 2, "answer": "dog"},  # no "answers": ten copies of "dog"
        ],
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "Two."), (2, "the dog")])
    assert score("vqav2", ans, key)["score"] == pytest.approx(80.0, abs=EXACT)  # (0.6 + 1) / 2


def test_textvqa_matches_llavas_image_id_and_prompt(tmp_path):
    key = write_json(
        tmp_path / "TextVQA_0.5.1_val.json",
        {
            "data": [
                {"question_id": 100, "image_id": "abc", "question": "What is the brand?", "answers": ["nikon"] * 10},
                {
                    "question_id": 101,
                    "image_id": "abc",
                    "question": "what year is it?",
                    "answers": ["1999"] * 2 + ["1998"] * 8,
                },
            ]
        },
    )
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            # LLaVA's TextVQA file uses the image id as question_id; the question comes from the prompt
            (
                "abc",
                "Nikon",
                "what is the brand?\nReference OCR token: Nikon, camera\n"
                "Answer the question using a single word or phrase.",
            ),  # 1.0
            (101, "1999"),  # plain question id: 2 of 10 -> 0.6
        ],
    )
    assert score("textvqa", ans, key)["score"] == pytest.approx(80.0, abs=EXACT)


# ---------------------------------------------------------------------------------------------
# ScienceQA-IMG
# ---------------------------------------------------------------------------------------------


def test_malformed_official_files_are_scoring_errors(tmp_path):
    ans = answers(tmp_path / "ans.jsonl", [(1, "yes")])
    broken = write_json(tmp_path / "v2.json", {"annotations": [{"question_id": 1}]})  # no "answers"
    with pytest.raises(ScoringError, match=r"v2\.json: not a valid VQAv2 answer key \(KeyError"):
        score("vqav2", ans, broken)
    tsv = _mmbench_tsv(tmp_path / "mmbench_test.tsv", [{"index": 1, "question": "?", "A": "x", "B": "y"}])
    with pytest.raises(ScoringError, match="row index 1: answer '' is not one of its options"):
        score("mmbench", ans, tsv)
    with pytest.raises(TypeError):
        score("gqa", ans, broken, data_type="image")  # an option another bench takes


def test_sqa_letter_parse():
    assert sqa_letter("B") == "B"
    assert sqa_letter("B. blue") == "B"
    assert sqa_letter("The answer is B.") == "B"
    assert sqa_letter("B.") is None  # neither "X" nor "X. ..." in LLaVA's rule
    assert sqa_letter("b") is None
    assert sqa_letter("The answer is B") is None  # the pattern needs a character after the letter
    assert sqa_letter("The answer is A. The answer is B.") is None  # must be found exactly once
    assert sqa_letter("C", n_choices=2) is None  # beyond the question's choices


def test_sqa_image_accuracy(tmp_path):
    def problem(choices, answer, image="image.png", split="test"):
        return {
            "question": "?",
            "choices": choices,
            "answer": answer,
            "image": image,
            "split": split,
            "subject": "natural science",
        }

    problems = write_json(
        tmp_path / "problems.json",
        {
            "p1": problem(["red", "blue", "green"], 1),  # B
            "p2": problem(["x", "y"], 0),  # A
            "p3": problem(["a", "b", "c", "d"], 3),  # D
            "p4": problem(["a", "b", "c"], 2),  # C
            "p5": problem(["a", "b"], 1),  # B
            "p6": problem(["a", "b"], 0, image=None),  # A, text-only
            "p7": problem(["a", "b"], 0, split="train"),
        },
    )
    write_json(tmp_path / "pid_splits.json", {"test": ["p1", "p2", "p3", "p4", "p5", "p6"], "train": ["p7"]})
    ans = answers(
        tmp_path / "ans.jsonl",
        [
            ("p1", "The answer is B."),  # right
            ("p2", "A. x"),  # right
            ("p3", "D"),  # right
            ("p4", "C."),  # unparsed: wrong
            ("p5", "The answer is B. The answer is B."),  # found twice: wrong
            ("p6", "A"),  # right, but not an image question
        ],
    )
    s = score("sqa", ans, problems)  # pid_splits.json found next to problems.json
    assert s["score"] == 60.0  # image questions: 3 of 5
    assert s["metrics"]["accuracy_all"] == pytest.approx(400 / 6, abs=EXACT)  # all test: 4 of 6
    assert s["metrics"]["n_image_questions"] == 5
    with pytest.raises(ScoringError, match="'p7' is not in the answer key"):
        score("sqa", answers(tmp_path / "ans2.jsonl", [("p7", "A")]), problems)


# ---------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------


def test_mmbench_letter_match():
    assert mmbench_letter("B") == "B"
    assert mmbench_letter("A. dog") == "A"
    assert mmbench_letter("The answer is (C).") == "C"
    assert mmbench_letter("B or C") is None  # two letters: no match
    assert mmbench_letter("dog") is None
    assert mmbench_letter("D", letters="ABC") is None


def _mmbench_tsv(path, rows):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    lines = ["\t".join(header)] + ["\t".join(str(row.get(h, "")) for h in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_mmbench_circular_one_wrong_copy_fails_the_group(tmp_path):
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

    tsv = _mmbench_tsv(
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


def test_mmbench_all_rounds_rotates_the_gold(tmp_path):
    tsv = _mmbench_tsv(
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


def test_mmbench_generic_key_groups(tmp_path):
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


# ---------------------------------------------------------------------------------------------
# SEED
# ---------------------------------------------------------------------------------------------


def test_seed_exact_letter_per_question_type(tmp_path):
    key = write_json(
        tmp_path / "SEED-Bench.json",
        {
            "question_type": {"Scene Understanding": 1, "Instance Identity": 2},
            "questions": [
                {"question_id": "s1", "answer": "A", "question_type_id": 1, "data_type": "image"},
                {"question_id": "s2", "answer": "B", "question_type_id": 1, "data_type": "image"},
                {"question_id": "s3", "answer": "C", "question_type_id": 2, "data_type": "image"},
                {"question_id": "s4", "answer": "D", "question_type_id": 2, "data_type": "video"},
                {"question_id": "s5", "answer": "A", "question_type_id": 2, "data_type": "video"},
            ],
        },
    )
    ans = answers(tmp_path / "ans.jsonl", [("s1", "A"), ("s2", "B."), ("s3", "C"), ("s4", "D")])  # s5 missing
    with pytest.warns(ScoringWarning):
        s = score("seed", ans, key)
    # right: s1, s3, s4 ("B." is not "B"; the missing s5 is wrong) -> 3 of 5
    assert s["score"] == 60.0 and s["n_missing"] == 1
    assert s["categories"]["Scene Understanding"]["accuracy"] == 50.0
    assert s["categories"]["Instance Identity"]["accuracy"] == pytest.approx(200 / 3, abs=EXACT)
    assert s["metrics"]["accuracy_image"] == pytest.approx(200 / 3, abs=EXACT)
    assert s["metrics"]["accuracy_video"] == 50.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # s5 is a video question: not missing when scoring images
        s = score("seed", ans, key, data_type="image")
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)  # s1, s3 of s1-s3
    assert (s["n_questions"], s["n_missing"]) == (3, 0)


# ---------------------------------------------------------------------------------------------
# Retention (paper Table 1)
# ---------------------------------------------------------------------------------------------

TABLE1 = {  # GQA, MMB, MME, POPE, SEED, SQA-I, VQAv2 -- PAPER.md Table 1
    "upper": {"GQA": 61.1, "MMB": 64.0, "MME": 1487.2, "POPE": 85.0, "SEED": 57.9, "SQA-I": 66.5, "VQAv2": 77.7},
    "VoCo-LLaMA": {"GQA": 57.0, "MMB": 58.8, "MME": 1323.3, "POPE": 81.4, "SEED": 53.7, "SQA-I": 65.4, "VQAv2": 72.3},
    "avg pool": {"GQA": 52.9, "MMB": 55.5, "MME": 1210.3, "POPE": 79.1, "SEED": 50.3, "SQA-I": 62.2, "VQAv2": 65.0},
    "Q-Former": {"GQA": 51.1, "MMB": 51.7, "MME": 1079.7, "POPE": 77.3, "SEED": 47.2, "SQA-I": 62.7, "VQAv2": 63.4},
    "lower": {"GQA": 37.7, "MMB": 22.3, "MME": 617.3, "POPE": 53.9, "SEED": 36.9, "SQA-I": 60.7, "VQAv2": 41.2},
}


@pytest.mark.parametrize("method, expected", [("VoCo-LLaMA", 83.7), ("avg pool", 64.1), ("Q-Former", 57.2)])
def test_retention_reproduces_table1(method, expected):
    # The paper's own numbers reproduce exactly: the unrounded means are 83.690%, 64.093% and
    # 57.217%. Nothing about MME's scale matters -- (m - l) / (u - l) is unchanged by any affine
    # rescaling of a benchmark -- and rounding each benchmark to 0.1% first gives the same three
    # results (83.686, 64.100, 57.214 -> 83.7, 64.1, 57.2).
    r = retention(TABLE1["upper"], TABLE1[method], TABLE1["lower"])
    assert r["benchmarks"] == ["gqa", "mmbench", "mme", "pope", "seed", "sqa", "vqav2"]
    assert round(100 * r["mean"], 1) == expected
    per_bench_rounded = [round(100 * v, 1) for v in r["retention"].values()]
    assert round(sum(per_bench_rounded) / 7, 1) == expected
    rescaled = {k: {**v, "MME": v["MME"] / 20 + 3} for k, v in TABLE1.items()}
    assert retention(rescaled["upper"], rescaled[method], rescaled["lower"])["mean"] == pytest.approx(
        r["mean"], abs=1e-12
    )


def test_retention_per_benchmark_values_and_missing_benchmarks():
    r = retention(TABLE1["upper"], TABLE1["VoCo-LLaMA"], TABLE1["lower"])
    assert r["retention"]["gqa"] == pytest.approx(19.3 / 23.4, abs=EXACT)  # (57.0-37.7)/(61.1-37.7)
    assert r["retention"]["mme"] == pytest.approx(706.0 / 869.9, abs=EXACT)  # (1323.3-617.3)/(1487.2-617.3)
    assert r["retention"]["seed"] == pytest.approx(0.8, abs=EXACT)  # 16.8 / 21.0
    assert r["mean"] == pytest.approx(0.83690, abs=5e-6)
    r = retention({"gqa": 60, "pope": 80, "mme": 1}, {"gqa": 50, "pope": 70}, {"gqa": 40, "pope": 80})
    assert r["retention"] == {"gqa": 0.5} and r["undefined"] == ["pope"] and r["not_in_all_three"] == ["mme"]
    assert r["mean"] == 0.5


def test_load_scores_accepts_summaries_and_plain_json(tmp_path):
    plain = write_json(tmp_path / "plain.json", {"MMB": 58.8, "SQA-I": 65.4})
    summary = write_json(tmp_path / "gqa.json", {"bench": "gqa", "score": 57.0, "score_name": "accuracy (%)"})
    nested = write_json(tmp_path / "nested.json", {"pope": {"bench": "pope", "score": 81.4}})
    assert load_scores(plain, summary, nested) == {"mmbench": 58.8, "sqa": 65.4, "gqa": 57.0, "pope": 81.4}
    with pytest.raises(ScoringError, match="not a number"):
        load_scores(write_json(tmp_path / "bad.json", {"gqa": "high"}))


# ---------------------------------------------------------------------------------------------
# Tables and CLI
# ---------------------------------------------------------------------------------------------


def test_format_table_lists_headline_and_categories(tmp_path):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [{"question_id": 1, "answer": "A", "category": "t1"}, {"question_id": 2, "answer": "B", "category": "t2"}],
    )
    text = format_table(score("seed", answers(tmp_path / "ans.jsonl", [(1, "A"), (2, "A")]), key))
    assert text.splitlines()[0] == "SEED: accuracy (%) = 50.00"
    assert "| t1 | 1 | 100.00 |" in text and "| t2 | 1 | 0.00 |" in text


def _cli():
    parser = argparse.ArgumentParser(prog="voco")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_score_writes_summary(tmp_path, capsys):
    key = write_jsonl(
        tmp_path / "key.jsonl", [{"question_id": 1, "answer": "dog"}, {"question_id": 2, "answer": "cat"}]
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "Dog."), (2, "dog")])
    out = tmp_path / "out" / "summary.json"
    args = _cli().parse_args(
        ["score", "gqa", "--answers-file", str(ans), "--annotation-file", str(key), "--out", str(out)]
    )
    assert args.func(args) == 0
    assert json.loads(out.read_text())["score"] == 50.0
    assert "GQA: accuracy (%) = 50.00" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["summary.json"]  # no temp file left behind


def test_cli_score_bad_input_exits_2(tmp_path, capsys):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": 1, "answer": "dog"}])
    missing = tmp_path / "nope.jsonl"
    assert main(["score", "gqa", "--answers-file", str(missing), "--annotation-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voco: error:") and "nope.jsonl" in err and len(err.strip().splitlines()) == 1
    ans = answers(tmp_path / "ans.jsonl", [(7, "dog")])
    assert main(["score", "gqa", "--answers-file", str(ans), "--annotation-file", str(key)]) == 2
    assert "ans.jsonl:1: question_id 7 is not in the answer key" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["score", "gqa", "--answers-file", str(ans), "--annotation-file", str(tmp_path / "broken.json")]) == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err


def test_cli_retention(tmp_path, capsys):
    files = {name: write_json(tmp_path / f"{name.replace(' ', '_')}.json", scores) for name, scores in TABLE1.items()}
    out = tmp_path / "retention.json"
    args = _cli().parse_args(
        [
            "retention",
            "--upper",
            str(files["upper"]),
            "--lower",
            str(files["lower"]),
            "--method",
            f"VoCo={files['VoCo-LLaMA']}",
            "--method",
            f"QF={files['Q-Former']}",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert round(100 * report["methods"]["VoCo"]["mean"], 1) == 83.7
    assert round(100 * report["methods"]["QF"]["mean"], 1) == 57.2
    printed = capsys.readouterr().out
    assert "| VoCo retention | 82.5% | 87.5% | 81.2% | 88.4% | 80.0% | 81.0% | 85.2% | 83.7% |" in printed
    assert printed == format_retention(report) + "\n"
    assert main(["retention", "--upper", str(files["upper"]), "--lower", str(files["lower"]), "--method", "x"]) == 2
    assert "expected NAME=FILE" in capsys.readouterr().err


def test_every_bench_has_a_scorer():
    assert set(scoring.SCORERS) == set(scoring.BENCHES)
    with pytest.raises(ScoringError, match="unknown benchmark"):
        score("mmmu", "a", "b")
