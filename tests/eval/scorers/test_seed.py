"""SEED-Bench: exact letter per question type."""

import warnings

import pytest

from voco_llama.eval.answers import ScoringWarning
from voco_llama.eval.scorers import score

EXACT = 1e-9


def test_seed_exact_letter_per_question_type(tmp_path, write_json, answers):
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
