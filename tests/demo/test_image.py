"""`voco demo --preset smoke`: the whole pipeline's plumbing, and a report its answer files reproduce."""

import json

import pytest

from voco_llama.cli import main
from voco_llama.demo.image import learned_benchmarks
from voco_llama.demo.toyworld import BENCHES, load_world
from voco_llama.eval.retention import retention
from voco_llama.eval.scorers import score


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
    slugs = {
        "Upper bound": "upper-bound",
        "VoCo K=1": "voco-k1",
        "Avg-pool": "avg-pool",
        "Q-Former": "q-former",
        "Lower bound": "lower-bound",
    }
    recomputed = {
        name: {b: score(b, demo / "answers" / slug / f"{b}.jsonl", world.answer_key(b))["score"] for b in BENCHES}
        for name, slug in slugs.items()
    }
    upper, lower = recomputed["Upper bound"], recomputed["Lower bound"]
    mme_subtasks = len(json.loads((demo / "answers" / "upper-bound" / "mme.score.json").read_text())["categories"])
    learned = learned_benchmarks(upper, lower, {b: 200.0 * mme_subtasks if b == "mme" else 100.0 for b in BENCHES})
    assert report["learned_benchmarks"] == learned
    for name, row in report["table1"].items():
        assert row["scores"] == pytest.approx(recomputed[name], abs=1e-9)
        r = retention(upper, recomputed[name], lower)
        assert row["mean_retention"] == (pytest.approx(r["mean"]) if r["mean"] is not None else None)
        on_learned = [r["retention"][b] for b in learned if b in r["retention"]]
        expected = sum(on_learned) / len(on_learned) if on_learned else None
        assert row["mean_retention_learned"] == (pytest.approx(expected) if expected is not None else None)
    for bench in BENCHES:
        lines = (demo / "answers" / "voco-k1" / f"{bench}.jsonl").read_text().splitlines()
        assert len(lines) == len(world.questions(bench).read_text().splitlines())


def test_learned_benchmarks_need_a_gap_of_five_percent_of_the_scale():
    upper = {"gqa": 43.0, "pope": 62.9, "mme": 229.2, "seed": 28.0}
    lower = {"gqa": 27.0, "pope": 65.1, "mme": 208.3, "seed": 24.0}
    scales = {"gqa": 100.0, "pope": 100.0, "mme": 800.0, "seed": 100.0}
    assert learned_benchmarks(upper, lower, scales) == ["gqa"]  # MME: 20.9 < 40; SEED: 4 < 5
    assert learned_benchmarks({**upper, "seed": 29.0}, lower, scales) == ["gqa", "seed"]


def test_rerun_reuses_finished_stages(demo, capsys):
    before = {p: p.stat().st_mtime_ns for p in (demo / "models").rglob("model.safetensors")}
    report = json.loads((demo / "report.json").read_text())
    assert main(["demo", "--preset", "smoke", "--out", str(demo)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (demo / "models").rglob("model.safetensors")} == before
    assert json.loads((demo / "report.json").read_text())["table1"] == report["table1"]
    assert "voco train" not in capsys.readouterr().out
