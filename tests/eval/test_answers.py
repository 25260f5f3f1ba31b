"""Reading LLaVA answer files: torn tails, bad lines, unknown and repeated question ids."""

import pytest

from voco_llama.eval.answers import ScoringError, ScoringWarning, load_answers
from voco_llama.eval.scorers import score


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


def test_unknown_and_duplicate_question_ids_are_errors(tmp_path, write_jsonl, answers):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": "q1", "answer": "dog"}])
    with pytest.raises(ScoringError, match=r"ans\.jsonl:2: question_id 'q9' is not in the answer key"):
        score("gqa", answers(tmp_path / "ans.jsonl", [("q1", "dog"), ("q9", "cat")]), key)
    with pytest.raises(ScoringError, match=r"ans\.jsonl:2: question_id 'q1' is answered twice \(first on line 1\)"):
        score("gqa", answers(tmp_path / "ans.jsonl", [("q1", "dog"), ("q1", "cat")]), key)


def test_outputs_are_stripped_unlike_the_official_scripts(tmp_path, write_jsonl, answers):
    # A difference on purpose (README): LLaVA's scripts compare "A\n" or "yes " as they are; the
    # generators strip their outputs, so only hand-made files can tell.
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": 1, "answer": "A"}, {"question_id": 2, "answer": "B"}])
    assert score("seed", answers(tmp_path / "ans.jsonl", [(1, "A\n"), (2, " B ")]), key)["score"] == 100.0
