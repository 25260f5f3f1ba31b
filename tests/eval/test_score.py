"""`voco score`: the printed table, the JSON summary, bad input as one line and exit 2."""

import argparse
import json

from voco_llama.cli import main
from voco_llama.eval.score import format_table, register_cli
from voco_llama.eval.scorers import score


def test_format_table_lists_headline_and_categories(tmp_path, write_jsonl, answers):
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


def test_cli_score_writes_summary(tmp_path, capsys, write_jsonl, answers):
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


def test_cli_score_bad_input_exits_2(tmp_path, capsys, write_jsonl, answers):
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
