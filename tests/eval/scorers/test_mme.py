"""MME as LLaVA's converter + the MME toolkit's calculation: acc + acc+ per subtask."""

import pytest

from voco_llama.eval.answers import ScoringError
from voco_llama.eval.scorers import score
from voco_llama.eval.scorers.mme import mme_yes_no


def test_mme_parser_is_mmes():
    assert mme_yes_no("Yes, there is a cat.") == "yes"
    assert mme_yes_no("no.") == "no"
    assert mme_yes_no("Not really") == "no"  # "not " contains "no"
    assert mme_yes_no("NO") == "no"
    assert mme_yes_no("I think so") == "other"
    assert mme_yes_no("") == "other"


def test_mme_release_directory_with_llava_answers(tmp_path, answers):
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


def test_mme_generic_key_pairs_by_image(tmp_path, write_jsonl, answers):
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


def test_mme_rejects_unknown_subtasks(tmp_path, write_jsonl, answers):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": 1, "answer": "yes", "category": "colour", "image": "i"}])
    with pytest.raises(ScoringError, match="'colour' is not an MME subtask"):
        score("mme", answers(tmp_path / "ans.jsonl", [(1, "yes")]), key)
