"""The scorer registry: every bench has a scorer; malformed official files are ScoringErrors."""

import pytest

from voco_llama.cli import main
from voco_llama.eval import scorers
from voco_llama.eval.answers import ScoringError
from voco_llama.eval.scorers import score
from voco_llama.eval.scorers.base import register_scorer


def test_malformed_official_files_are_scoring_errors(tmp_path, write_json, answers, mmbench_tsv):
    ans = answers(tmp_path / "ans.jsonl", [(1, "yes")])
    broken = write_json(tmp_path / "v2.json", {"annotations": [{"question_id": 1}]})  # no "answers"
    with pytest.raises(ScoringError, match=r"v2\.json: not a valid VQAv2 answer key \(KeyError"):
        score("vqav2", ans, broken)
    tsv = mmbench_tsv(tmp_path / "mmbench_test.tsv", [{"index": 1, "question": "?", "A": "x", "B": "y"}])
    with pytest.raises(ScoringError, match="row index 1: answer '' is not one of its options"):
        score("mmbench", ans, tsv)
    with pytest.raises(TypeError):
        score("gqa", ans, broken, data_type="image")  # an option another bench takes


def test_every_bench_has_a_scorer():
    assert set(scorers.SCORERS) == set(scorers.BENCHES)
    with pytest.raises(ScoringError, match="unknown benchmark"):
        score("mmmu", "a", "b")


KEYS = {  # one small generic key of each kind, shaped as the toy world writes them
    "gqa": [{"question_id": 0, "answer": "red", "category": "color"}, {"question_id": 1, "answer": "yes"}],
    "vqav2": [{"question_id": 0, "answer": "red", "answers": ["red"] * 10, "category": "other"}],
    "pope": [
        {"question_id": 0, "answer": "yes", "category": "random"},
        {"question_id": 1, "answer": "no", "category": "adversarial"},
    ],
    "mme": [{"question_id": 0, "answer": "yes", "category": "color", "image": "a.png"}],
    "mmbench": [{"question_id": 0, "answer": "B", "group": 0}],
    "seed": [{"question_id": 0, "answer": "C", "category": "Instance Identity"}],
}  # fmt: skip
# a short-answer key without annotator answers is a legitimate VQA key too ([answer] * 10)
ACCEPTS = {"gqa": {"gqa", "vqav2", "textvqa"}, "vqav2": {"vqav2", "textvqa"}, "pope": {"pope"}, "mme": {"mme"}}
ACCEPTS |= {"mmbench": {"mmbench"}, "seed": {"seed", "mmbench", "sqa"}}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_key_from_another_benchmark_is_refused(tmp_path, write_jsonl, answers, kind):
    key = write_jsonl(tmp_path / "key.jsonl", KEYS[kind])
    ans = answers(tmp_path / "ans.jsonl", [(r["question_id"], r["answer"]) for r in KEYS[kind]])
    for bench in scorers.BENCHES:
        if bench in ACCEPTS[kind]:
            score(bench, ans, key)
        else:
            with pytest.raises(ScoringError, match=f"answer key, not one for {bench}"):
                score(bench, ans, key)


def test_a_pope_key_scored_as_gqa_is_one_line_and_exit_2(tmp_path, write_jsonl, answers, capsys):
    # Issue 17: `voco score gqa` took the toy POPE key and printed 50.00.
    key = write_jsonl(tmp_path / "key.jsonl", KEYS["pope"])
    ans = answers(tmp_path / "ans.jsonl", [(0, "yes"), (1, "yes")])
    assert main(["score", "gqa", "--answers-file", str(ans), "--annotation-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voco: error: ") and "POPE" in err and len(err.strip().splitlines()) == 1
    # a key that says which bench it is for is believed, and checked
    named = write_jsonl(tmp_path / "named.jsonl", [{**r, "bench": "GQA"} for r in KEYS["pope"]])
    assert score("gqa", ans, named)["score"] == 50.0
    with pytest.raises(ScoringError, match="an answer key for gqa, not pope"):
        score("pope", ans, named)


def test_each_scorer_registers_its_names_extra_file_and_options():
    # the names the tables and `voco score` used before the registry, now declared by each scorer
    assert scorers.BENCHES == ("gqa", "mmbench", "mme", "pope", "seed", "sqa", "vqav2", "textvqa")
    assert scorers.DISPLAY_NAMES == {
        "gqa": "GQA", "mmbench": "MMB", "mme": "MME", "pope": "POPE", "seed": "SEED", "sqa": "SQA-I",
        "vqav2": "VQAv2", "textvqa": "TextVQA",
    }  # fmt: skip
    for spelling, name in [("MMB", "mmbench"), ("SQA-I", "sqa"), ("ScienceQA-IMG", "sqa"), ("vqa_v2", "vqav2")]:
        assert scorers.canonical_bench(spelling) == name and scorers.scorer(spelling).name == name
    assert {n: s.extra_file is not None for n, s in scorers.SCORERS.items()} == {
        n: n in ("pope", "sqa") for n in scorers.BENCHES
    }
    assert {n: s.options for n, s in scorers.SCORERS.items() if s.options} == {
        "seed": ("data_type",),
        "sqa": ("split",),
    }
    with pytest.raises(ValueError, match=r"already registered"):
        register_scorer("gqa2", "GQA again", aliases=("mmb",))(lambda *a, **k: {})
    assert "gqa2" not in scorers.SCORERS


@pytest.mark.parametrize("bench", ["gqa", "mme", "mmbench", "seed", "vqav2", "textvqa"])
def test_an_extra_file_is_refused_once_for_every_bench_without_one(tmp_path, write_jsonl, answers, bench):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": 0, "answer": "B", "category": "x"}])
    ans = answers(tmp_path / "ans.jsonl", [(0, "B")])
    with pytest.raises(ScoringError, match=rf"^{bench} takes no extra file$"):
        score(bench, ans, key, extra_file=tmp_path / "x.json")


def test_an_option_flag_of_another_bench_is_refused_by_name(tmp_path, write_jsonl, answers, capsys):
    key = write_jsonl(tmp_path / "key.jsonl", [{"question_id": 0, "answer": "red"}])
    ans = answers(tmp_path / "ans.jsonl", [(0, "red")])
    argv = ["score", "gqa", "--answers-file", str(ans), "--annotation-file", str(key)]
    assert main(argv) == 0 and "GQA: accuracy (%) = 100.00" in capsys.readouterr().out
    for flag, value in (("--sqa-split", "val"), ("--seed-data-type", "image")):
        assert main([*argv, flag, value]) == 2
        err = capsys.readouterr().err
        assert err == f"voco: error: {flag} is for {flag.split('-')[2]}, not gqa\n"
