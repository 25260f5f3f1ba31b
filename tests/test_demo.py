"""`voco demo --preset smoke`: the whole pipeline's plumbing, and a report its answer files reproduce."""

import json

import pytest

from voco_llama.cli import main
from voco_llama.scoring import retention, score
from voco_llama.toyworld import BENCHES, load_world


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def test_report_and_plots_are_written(demo):
    report = json.loads((demo / "report.json").read_text())
    assert list(report["table1"]) == ["Upper bound", "VoCo K=1", "Avg-pool", "Q-Former", "Lower bound"]
    assert set(report["table2"]) == {"1", "2"}
    for name in ("report.md", "table1_methods.png", "table2_retention_vs_k.png", "example.voco"):
        assert (demo / name).stat().st_size > 0
    assert (demo / "table1_methods.png").read_bytes()[:4] == b"\x89PNG"
    md = (demo / "report.md").read_text()
    assert "Table 1" in md and "Table 2" in md and "| Q-Former |" in md


def test_tables_recompute_from_the_answer_files(demo):
    report = json.loads((demo / "report.json").read_text())
    world = load_world(demo / "world")
    slugs = {"Upper bound": "upper-bound", "VoCo K=1": "voco-k1", "Avg-pool": "avg-pool", "Q-Former": "q-former",
             "Lower bound": "lower-bound"}
    recomputed = {name: {b: score(b, demo / "answers" / slug / f"{b}.jsonl", world.answer_key(b))["score"]
                         for b in BENCHES} for name, slug in slugs.items()}
    for name, row in report["table1"].items():
        assert row["scores"] == pytest.approx(recomputed[name], abs=1e-9)
        expected = retention(recomputed["Upper bound"], recomputed[name], recomputed["Lower bound"])["mean"]
        assert row["mean_retention"] == (pytest.approx(expected) if expected is not None else None)
    for bench in BENCHES:
        lines = (demo / "answers" / "voco-k1" / f"{bench}.jsonl").read_text().splitlines()
        assert len(lines) == len(world.questions(bench).read_text().splitlines())


def test_rerun_reuses_finished_stages(demo, capsys):
    before = {p: p.stat().st_mtime_ns for p in (demo / "models").rglob("model.safetensors")}
    report = json.loads((demo / "report.json").read_text())
    assert main(["demo", "--preset", "smoke", "--out", str(demo)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (demo / "models").rglob("model.safetensors")} == before
    assert json.loads((demo / "report.json").read_text())["table1"] == report["table1"]
    assert "voco train" not in capsys.readouterr().out
