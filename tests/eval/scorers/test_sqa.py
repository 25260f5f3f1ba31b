"""ScienceQA-IMG as LLaVA-1.5's eval_science_qa.py."""

import pytest

from voco_llama.eval.answers import ScoringError, ScoringWarning
from voco_llama.eval.scorers import score
from voco_llama.eval.scorers.sqa import sqa_letter

EXACT = 1e-9


def test_sqa_letter_parse():
    assert sqa_letter("B") == "B"
    assert sqa_letter("B. blue") == "B"
    assert sqa_letter("The answer is B.") == "B"
    assert sqa_letter("B.") is None  # neither "X" nor "X. ..." in LLaVA's rule
    assert sqa_letter("b") is None
    assert sqa_letter("The answer is B") is None  # the pattern needs a character after the letter
    assert sqa_letter("The answer is A. The answer is B.") is None  # must be found exactly once
    assert sqa_letter("C", n_choices=2) is None  # beyond the question's choices


def test_sqa_image_accuracy(tmp_path, write_json, answers):
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

    # Missing p4 and p5 (both wrong above) and p6: eval_science_qa.py counts them wrong in
    # "Accuracy" (2 of 6 right) but leaves them out of "IMG-Accuracy" (their prompts, being absent,
    # have no <image>): 3 of 3 image questions answered are right.
    partial = answers(tmp_path / "ans3.jsonl", [("p1", "The answer is B."), ("p2", "A. x"), ("p3", "D")])
    with pytest.warns(ScoringWarning, match="3 of 6 questions have no answer"):
        s = score("sqa", partial, problems)
    assert s["score"] == 100.0 and s["metrics"]["n_image_questions"] == 3
    assert s["metrics"]["accuracy_all"] == pytest.approx(300 / 6, abs=EXACT)
    with pytest.warns(ScoringWarning):
        s = score("sqa", partial, problems, missing="strict")
    assert s["score"] == 60.0 and s["metrics"]["accuracy_all"] == 50.0
    with pytest.warns(ScoringWarning):
        s = score("sqa", partial, problems, missing="answered")
    assert s["score"] == 100.0 and s["metrics"]["accuracy_all"] == 100.0
