"""GQA exact match after rstrip('.').lower()."""

from voco_llama.eval.scorers import score


def test_gqa_exact_match_after_rstrip_dot_lower(tmp_path, write_json, answers):
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
