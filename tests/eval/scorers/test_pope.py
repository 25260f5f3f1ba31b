"""POPE as LLaVA's eval_pope.py, on hand-made label files with hand-computed F1."""

import pytest

from voco_llama.eval.answers import ScoringError, ScoringWarning
from voco_llama.eval.scorers import score
from voco_llama.eval.scorers.pope import pope_yes_no

EXACT = 1e-9


def test_pope_parser_is_llavas():
    assert pope_yes_no("Yes, there is a cat.") == "yes"
    assert pope_yes_no("no.") == "no"
    assert pope_yes_no("No, there is not.") == "no"
    assert pope_yes_no("There is a car, no doubt.") == "no"  # any "no" word in the first sentence
    assert pope_yes_no("Yes. But no cat.") == "yes"  # only the first sentence counts
    # LLaVA's word list is {"No", "not", "no"}, case-sensitive: "Not really" does NOT parse as no.
    assert pope_yes_no("Not really") == "yes"
    assert pope_yes_no("") == "yes"  # an empty output; a missing answer is not one (see below)


def _pope_files(tmp_path, write_jsonl):
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


def test_pope_per_category_metrics_through_llavas_question_file(tmp_path, write_jsonl, answers):
    label_dir, question_file = _pope_files(tmp_path, write_jsonl)
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


def test_pope_label_files_with_colliding_ids_need_the_question_file(tmp_path, write_jsonl, answers):
    label_dir, _ = _pope_files(tmp_path, write_jsonl)
    with pytest.raises(ScoringError, match="extra-file"):
        score("pope", answers(tmp_path / "ans.jsonl", [(1, "yes")]), label_dir)


def test_pope_single_label_file_matches_by_id(tmp_path, write_jsonl, answers):
    label_dir, _ = _pope_files(tmp_path, write_jsonl)
    ans = answers(tmp_path / "ans.jsonl", [(1, "yes"), (2, "no"), (3, "no"), (4, "no")])
    s = score("pope", ans, label_dir / "coco_pope_adversarial.json")
    # TP 1 (q1), TN 2 (q2, q4), FN 1 (q3): precision 1, recall 1/2, F1 2/3
    assert list(s["categories"]) == ["adversarial"]
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)


def test_pope_missing_answers_are_not_counted_as_yes(tmp_path, write_jsonl, answers):
    # Issue 17: a model that says "no" to everything has F1 0; before, its 6 missing answers went
    # through LLaVA's parser as "" -> "yes" and lifted F1 to 40.
    labels = ["yes"] * 6 + ["no"] * 6
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": i, "answer": g} for i, g in enumerate(labels)])
    answered = [0, 1, 2, 6, 7, 8]  # 3 yes-questions and 3 no-questions answered, all "No"
    ans = answers(tmp_path / "ans.jsonl", [(i, "No") for i in answered])
    with pytest.warns(ScoringWarning, match="6 of 12 questions have no answer; they are left out of the score"):
        s = score("pope", ans, key)
    c = s["categories"]["all"]
    # LLaVA's eval_pope.py scores the answers present: TP 0, FN 3, TN 3 -> F1 0, accuracy 50
    assert (c["TP"], c["FP"], c["TN"], c["FN"]) == (0, 0, 3, 3)
    assert s["score"] == 0.0 and c["accuracy"] == 50.0
    assert (s["n_questions"], s["n_answered"], s["n_missing"], s["n_scored"]) == (12, 6, 6, 6)
    # --strict: each missing answer is wrong, the opposite of its label: 3 more FN, 3 FP
    with pytest.warns(ScoringWarning, match="scored as wrong"):
        s = score("pope", ans, key, missing="strict")
    c = s["categories"]["all"]
    assert (c["TP"], c["FP"], c["TN"], c["FN"]) == (0, 3, 3, 6)
    assert s["score"] == 0.0 and c["accuracy"] == 25.0 and s["n_scored"] == 12


def test_pope_strict_and_official_differ_when_the_answers_are_right(tmp_path, write_jsonl, answers):
    key = write_jsonl(
        tmp_path / "key.jsonl",
        [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "No"}, {"question_id": 3, "answer": "no"}],
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "Yes"), (2, "No")])
    with pytest.warns(ScoringWarning, match="1 of 3 questions have no answer"):
        s = score("pope", ans, key)
    assert s["score"] == 100.0 and (s["n_missing"], s["n_scored"]) == (1, 2)
    with pytest.warns(ScoringWarning):
        s = score("pope", ans, key, missing="strict")
    # q3 (gold no) scored wrong -> FP: TP 1, TN 1, FP 1 -> precision 1/2, recall 1, F1 2/3
    assert s["categories"]["all"]["FP"] == 1
    assert s["score"] == pytest.approx(200 / 3, abs=EXACT)
    with pytest.warns(ScoringWarning):
        assert score("pope", ans, key, missing="answered")["score"] == 100.0
