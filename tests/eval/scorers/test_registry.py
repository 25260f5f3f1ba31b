"""The scorer registry: every bench has a scorer; malformed official files are ScoringErrors."""

import pytest

from voco_llama.eval import scorers
from voco_llama.eval.answers import ScoringError
from voco_llama.eval.scorers import score


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
