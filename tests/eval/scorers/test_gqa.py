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


def test_gqa_scores_balanced_questions_only(tmp_path, write_json, answers):
    # GQA's eval.py: `if question["isBalanced"]:` around the accuracy; an unbalanced question may be
    # answered (ignored) or not (no missing-prediction error)
    key = write_json(
        tmp_path / "testdev_all_questions.json",
        {
            "q1": {"answer": "dog", "isBalanced": True},
            "q2": {"answer": "cat", "isBalanced": True},
            "q3": {"answer": "red", "isBalanced": False},  # answered wrong: not scored
            "q4": {"answer": "left", "isBalanced": False},  # unanswered: not missing
        },
    )
    ans = answers(tmp_path / "ans.jsonl", [("q1", "dog"), ("q2", "cat"), ("q3", "blue")])
    s = score("gqa", ans, key)
    assert s["score"] == 100.0  # every question scored (q4 as wrong): 50.0
    assert (s["n_questions"], s["n_answered"], s["n_missing"], s["n_scored"]) == (2, 2, 0, 2)
    # a balanced question left unanswered is still missing (scored wrong, as before)
    ans = answers(tmp_path / "ans2.jsonl", [("q1", "dog"), ("q3", "red")])
    s = score("gqa", ans, key)
    assert (s["score"], s["n_missing"]) == (50.0, 1)
