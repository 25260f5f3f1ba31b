"""`voco submit`: the submission files of VQAv2, GQA, MMBench and SEED, as LLaVA's converters write them."""

import json

import pytest

from voco_llama.cli import main
from voco_llama.eval.answers import ScoringError, ScoringWarning
from voco_llama.eval.submit import write_submission


def test_vqav2_every_test_question_normalised_blank_when_unanswered(tmp_path, write_jsonl, answers, capsys):
    questions = write_jsonl(tmp_path / "test2015.jsonl", [{"question_id": q, "text": "?"} for q in (5, 7, 9, 11)])
    ans = answers(tmp_path / "ans.jsonl", [(7, "Two."), (5, "A dog"), (11, "yes ")])
    out = tmp_path / "up" / "vqav2.json"
    assert main(["submit", "vqav2", "--answers-file", str(ans), "--questions", str(questions), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == [
        {"question_id": 5, "answer": "dog"},
        {"question_id": 7, "answer": "2"},
        {"question_id": 9, "answer": ""},
        {"question_id": 11, "answer": "yes"},
    ]
    assert "1 of 4 questions have no answer" in capsys.readouterr().err
    official = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"
    official.write_text(json.dumps({"questions": [{"question_id": q, "question": "?"} for q in (5, 7, 9, 11)]}))
    with pytest.warns(ScoringWarning):
        assert write_submission("vqav2", ans, official, tmp_path / "again.json") == 4
    assert (tmp_path / "again.json").read_text() == out.read_text()


def test_gqa_predictions_file(tmp_path, write_json, answers):
    questions = write_json(tmp_path / "testdev_balanced_questions.json", {"q1": {"answer": "x"}, "q2": {"answer": "y"}})
    ans = answers(tmp_path / "ans.jsonl", [("q2", "Left..."), ("q1", "Dog")])
    out = tmp_path / "testdev_balanced_predictions.json"
    assert write_submission("gqa", ans, questions, out) == 2
    assert json.loads(out.read_text()) == [
        {"questionId": "q1", "prediction": "dog"},
        {"questionId": "q2", "prediction": "left"},
    ]


def test_seed_upload_jsonl(tmp_path, write_json, answers):
    seed = write_json(
        tmp_path / "SEED-Bench.json",
        {"questions": [{"question_id": "1", "answer": "A"}, {"question_id": "2", "answer": "B"}], "question_type": {}},
    )
    ans = answers(tmp_path / "ans.jsonl", [(1, "A"), (2, "C")])  # LLaVA's answers carry int ids
    out = tmp_path / "seed.jsonl"
    assert write_submission("seed", ans, seed, out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"question_id": "1", "prediction": "A"}, {"question_id": "2", "prediction": "C"}]


@pytest.mark.parametrize("suffix", [".xlsx", ".tsv"])
def test_mmbench_submission_columns_and_round_0(tmp_path, answers, mmbench_tsv, write_jsonl, suffix):
    tsv = mmbench_tsv(
        tmp_path / "mmbench_test.tsv",
        [
            {"index": 1, "question": "Which?", "A": "cat", "B": "dog", "hint": "h", "category": "c", "image": "aGk="},
            {"index": 1000001, "question": "Which?", "A": "dog", "B": "cat", "image": "aGk="},
        ],
    )
    ans = write_jsonl(
        tmp_path / "ans.jsonl",
        [
            {"question_id": 1, "round_id": 0, "text": "B"},
            {"question_id": 1, "round_id": 1, "text": "A"},  # --all-rounds: not sent
            {"question_id": 1000001, "round_id": 0, "text": "The answer is A"},
        ],
    )
    out = tmp_path / f"mmbench{suffix}"
    assert write_submission("mmbench", ans, tsv, out) == 2
    if suffix == ".xlsx":
        openpyxl = pytest.importorskip("openpyxl")
        rows = [[c if c is not None else "" for c in r] for r in openpyxl.load_workbook(out).active.values]
    else:
        rows = [line.split("\t") for line in out.read_text().splitlines()]
    # hint, category and image dropped; prediction is the 7th column
    assert rows[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer"]
    assert [r[6] for r in rows[1:]] == ["B", "The answer is A"]
    assert [str(r[0]) for r in rows[1:]] == ["1", "1000001"]


def test_submission_refuses_unknown_and_repeated_answers(tmp_path, write_jsonl, answers, capsys):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1}, {"question_id": 2}])
    with pytest.raises(ScoringError, match=r"ans\.jsonl:2: question_id 3 is not in"):
        write_submission("vqav2", answers(tmp_path / "ans.jsonl", [(1, "a"), (3, "b")]), questions, tmp_path / "o.json")
    with pytest.raises(ScoringError, match="answered twice"):
        write_submission("seed", answers(tmp_path / "ans.jsonl", [(1, "A"), (1, "B")]), questions, tmp_path / "o.jsonl")
    args = ["--answers-file", str(tmp_path / "ans.jsonl"), "--questions", str(questions), "--out", str(tmp_path / "o")]
    assert main(["submit", "pope", *args]) == 2
    err = capsys.readouterr().err
    assert "no submission format for 'pope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("bench", ["vqav2", "gqa", "seed"])
def test_submission_without_one_parsed_answer_is_refused(tmp_path, write_jsonl, bench, capsys):
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1}, {"question_id": 2}])
    torn = tmp_path / "ans.jsonl"
    torn.write_text('{"question_id": 1, "text": "y')  # its only line does not parse
    out = tmp_path / "up.json"
    assert main(["submit", bench, "--answers-file", str(torn), "--questions", str(questions), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"voco: error: {torn}: no answer to any question of {questions}; nothing to submit", err
    assert not out.exists()
    # one parsed answer: written, the other question counted in a warning
    good = write_jsonl(tmp_path / "good.jsonl", [{"question_id": 2, "text": "yes"}])
    assert main(["submit", bench, "--answers-file", str(good), "--questions", str(questions), "--out", str(out)]) == 0
    assert "1 of 2 questions have no answer" in capsys.readouterr().err
