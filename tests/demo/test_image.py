"""`voco demo --preset smoke`: the whole pipeline's plumbing, and a report its answer files reproduce."""

import json
import math
import random

import pytest

from voco_llama.cli import main
from voco_llama.demo.paired import paired_bootstrap
from voco_llama.demo.report import LEARNED_GAP, MIXTURE_MARGIN, TABLE1, comparisons, learned_benchmarks
from voco_llama.demo.stats import binomial_se, f1_se, standard_error
from voco_llama.demo.toyworld import BENCHES, load_world
from voco_llama.eval.scorers import score

SLUGS = {
    "Upper bound": "upper-bound",
    "VoCo K=1": "voco-k1",
    "Avg-pool": "avg-pool",
    "Q-Former": "q-former",
    "Lower bound": "lower-bound",
    "VoCo K=2": "voco-k2",
    "Mixture K=1": "mixture-k1",  # one model for K in {1, 2} (issue 18), at each K
    "Mixture K=2": "mixture-k2",
    "VoCo K=2-only at K=1": "voco-k2-only-at-k1",  # the paper's failure case
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def test_report_and_plots_are_written(demo):
    report = json.loads((demo / "report.json").read_text())
    assert list(report["table1"]) == list(TABLE1)
    assert set(report["table2"]) == {"1", "2"}
    for name in ("report.md", "table1_methods.png", "table2_retention_vs_k.png", "example.voco"):
        assert (demo / name).stat().st_size > 0
    assert (demo / "table1_methods.png").read_bytes()[:4] == b"\x89PNG"
    md = (demo / "report.md").read_text()
    assert "Table 1" in md and "Table 2" in md and "| Q-Former |" in md and "## Goals" in md
    assert "16 vision tokens -> K" in md and "576" not in md  # the toy's own numbers
    assert report["seed"] == 0 and json.loads((demo / "run.json").read_text()) == {"preset": "smoke", "seed": 0}


def test_tables_recompute_from_the_answer_files(demo):
    report = json.loads((demo / "report.json").read_text())
    world = load_world(demo / "world")
    summaries = {
        name: {b: score(b, demo / "answers" / slug / f"{b}.jsonl", world.answer_key(b)) for b in BENCHES}
        for name, slug in SLUGS.items()
    }
    scores = {n: {b: s["score"] for b, s in per.items()} for n, per in summaries.items()}
    upper, lower = scores["Upper bound"], scores["Lower bound"]
    mme_scale = 200.0 * len(summaries["Upper bound"]["mme"]["categories"])
    scales = {b: mme_scale if b == "mme" else 100.0 for b in BENCHES}
    # POPE's learning is judged on accuracy (F1 of "always yes" is 66.7, of "always no" 0)
    judged = {
        n: {b: summaries[n][b]["metrics"]["mean_accuracy"] if b == "pope" else scores[n][b] for b in BENCHES}
        for n in ("Upper bound", "Lower bound")
    }
    learned = [b for b in BENCHES if judged["Upper bound"][b] - judged["Lower bound"][b] >= LEARNED_GAP * scales[b]]
    assert report["learned_benchmarks"] == learned
    # every standard error and paired difference: the bootstrap over eval images, from the answer files
    rows = {name: {b: demo / "answers" / slug / f"{b}.jsonl" for b in BENCHES} for name, slug in SLUGS.items()}
    pairs = comparisons((1, 2), rows)
    boot = paired_bootstrap(rows, {b: world.answer_key(b) for b in BENCHES}, learned=learned, comparisons=pairs)
    assert report["differences"] == json.loads(json.dumps(boot["comparisons"]))
    assert [(d["a"], d["b"]) for d in report["differences"]][:2] == [("VoCo K=1", "Avg-pool"), ("VoCo K=1", "Q-Former")]
    for name, row in report["table1"].items():
        assert row["scores"] == pytest.approx(scores[name], abs=1e-9)
        assert row["se"] == json.loads(json.dumps(boot["rows"][name]["se"]))
        assert row["mean_retention_se"] == boot["rows"][name]["mean_retention_se"]
        assert set(row["retention"]) == set(learned)  # "-" (left out) everywhere else
        expected = {b: (scores[name][b] - lower[b]) / (upper[b] - lower[b]) for b in learned}
        assert row["retention"] == pytest.approx(expected)
        mean = sum(expected.values()) / len(expected) if expected else None
        assert row["mean_retention"] == (pytest.approx(mean) if mean is not None else None)
    for bench in BENCHES:
        lines = (demo / "answers" / "voco-k1" / f"{bench}.jsonl").read_text().splitlines()
        assert len(lines) == len(world.questions(bench).read_text().splitlines())

    # Table 2's three kinds of row, and issue 18's goal, from the same answer files
    def mean_retention(name):
        per = [(scores[name][b] - lower[b]) / (upper[b] - lower[b]) for b in learned]
        return sum(per) / len(per) if per else None

    def approx(value):
        return pytest.approx(value) if value is not None else None

    for k in (1, 2):
        assert report["table2"][str(k)]["mean_retention"] == approx(mean_retention(f"VoCo K={k}"))
        assert report["table2_mixture"][str(k)]["mean_retention"] == approx(mean_retention(f"Mixture K={k}"))
    assert report["k_only_at_1"]["mean_retention"] == approx(mean_retention("VoCo K=2-only at K=1"))
    goal = report["goals"]["mixture"]
    for k in ("1", "2"):
        mixture, per_k = report["table2_mixture"][k]["mean_retention"], report["table2"][k]["mean_retention"]
        within = mixture is not None and per_k is not None and mixture - per_k >= -MIXTURE_MARGIN
        assert goal["per_k"][k]["met"] == within
    at_1, failure = report["table2_mixture"]["1"]["mean_retention"], report["k_only_at_1"]["mean_retention"]
    above = at_1 is not None and failure is not None and at_1 > failure
    assert goal["met"] == (all(v["met"] for v in goal["per_k"].values()) and above)


def test_mixture_model_and_the_failure_case_are_what_they_say(demo):
    """The mixture row is one model trained for K in {1, 2}, answering at each K; the failure case is the
    K=2 model's weights answering at K=1."""
    config = json.loads((demo / "models" / "voco-mixture" / "config.json").read_text())
    assert (config["num_voco_choices"], config["num_voco"]) == ([1, 2], 1)
    trainer = json.loads((demo / "models" / "voco-mixture" / "trainer_state.json").read_text())
    per_k = json.loads((demo / "models" / "voco-k2" / "trainer_state.json").read_text())
    assert trainer["global_step"] == per_k["global_step"]  # the same steps as each per-K model
    meta = {
        slug: json.loads((demo / "answers" / slug / "gqa.jsonl.meta.json").read_text())
        for slug in ("mixture-k1", "mixture-k2", "voco-k2", "voco-k2-only-at-k1")
    }
    assert meta["mixture-k1"]["model_fingerprint"] == meta["mixture-k2"]["model_fingerprint"]
    assert (meta["mixture-k1"]["num_voco"], meta["mixture-k2"]["num_voco"]) == (1, 2)
    assert meta["voco-k2-only-at-k1"]["model_fingerprint"] == meta["voco-k2"]["model_fingerprint"]
    assert meta["voco-k2-only-at-k1"]["num_voco"] == 1
    md = (demo / "report.md").read_text()
    assert "| one model for every K (K drawn from {1, 2}) |" in md and "K=2-only model run at K=1" in md


def test_example_answers_several_questions_from_one_cache(demo):
    ex = json.loads((demo / "report.json").read_text())["example"]
    assert len(ex["questions"]) >= 3 and len({q["bench"] for q in ex["questions"]}) >= 3
    assert ex["right"] == sum(q["answer"].strip().lower().rstrip(".") == q["expected"].lower() for q in ex["questions"])
    assert f"Right: {ex['right']} of {len(ex['questions'])}" in (demo / "report.md").read_text()


def test_learned_benchmarks_need_a_gap_of_fifteen_percent_of_the_scale():
    upper = {"gqa": 43.0, "vqav2": 40.0, "pope": 62.9, "mme": 329.2, "mmbench": 20.0, "seed": 40.0}
    lower = {"gqa": 27.0, "vqav2": 30.0, "pope": 65.1, "mme": 208.3, "mmbench": 0.0, "seed": 24.0}
    scales = {b: 800.0 if b == "mme" else 100.0 for b in BENCHES}
    # GQA 16 >= 15; VQAv2 10 < 15; POPE below; MME 120.9 >= 120; MMB 20; SEED 16
    assert learned_benchmarks(upper, lower, scales) == ["gqa", "mme", "mmbench", "seed"]


def test_standard_errors():
    assert binomial_se(50.0, 100) == pytest.approx(5.0)
    assert binomial_se(0.0, 100) == 0.0
    # POPE F1's delta-method error against a bootstrap of the same confusion counts
    tp, fp, tn, fn = 60, 15, 45, 30
    outcomes = ["tp"] * tp + ["fp"] * fp + ["tn"] * tn + ["fn"] * fn
    rng, f1s = random.Random(0), []
    for _ in range(4000):
        sample = [rng.choice(outcomes) for _ in outcomes]
        t, f, n = sample.count("tp"), sample.count("fp"), sample.count("fn")
        f1s.append(200 * t / (2 * t + f + n))
    mean = sum(f1s) / len(f1s)
    bootstrap = math.sqrt(sum((x - mean) ** 2 for x in f1s) / (len(f1s) - 1))
    assert f1_se(tp, fp, tn, fn) == pytest.approx(bootstrap, rel=0.08)
    # MMBench: binomial on the circular groups, not the copies
    summary = {"score": 50.0, "metrics": {"n_groups": 25}, "n_scored": 100}
    assert standard_error("mmbench", summary) == pytest.approx(10.0)


def test_a_run_directory_holds_one_preset_and_seed(demo, capsys):
    assert main(["demo", "--preset", "smoke", "--seed", "1", "--out", str(demo)]) == 2
    assert "holds the demo run of preset 'smoke' seed 0" in capsys.readouterr().err


def test_rerun_reuses_finished_stages(demo, capsys):
    before = {p: p.stat().st_mtime_ns for p in (demo / "models").rglob("model.safetensors")}
    report = json.loads((demo / "report.json").read_text())
    assert main(["demo", "--preset", "smoke", "--out", str(demo)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (demo / "models").rglob("model.safetensors")} == before
    assert json.loads((demo / "report.json").read_text())["table1"] == report["table1"]
    assert "voco train" not in capsys.readouterr().out


def test_curves_score_every_checkpoint(demo):
    assert main(["demo", "--curves", "--preset", "smoke", "--out", str(demo)]) == 0
    curves = json.loads((demo / "curves" / "curves.json").read_text())
    assert set(curves["curves"]) == {"Base", "Upper bound", "Lower bound", "VoCo K=1"}
    assert list(curves["curves"]["Base"]) == ["1", "2", "3"]  # smoke: a checkpoint every step
    assert list(curves["curves"]["VoCo K=1"]) == ["0", "1", "2"]  # 0 = the base it starts from
    world = load_world(demo / "world")
    for bench in BENCHES:
        answers = demo / "curves" / "answers" / "VoCo K=1" / "2" / f"{bench}.jsonl"
        key = demo / "curves" / "slice" / bench / "answer_key.jsonl"
        assert curves["curves"]["VoCo K=1"]["2"][bench]["score"] == score(bench, answers, key)["score"]
        images = {json.loads(line)["image"] for line in key.read_text().splitlines()}
        assert images <= {json.loads(q)["image"] for q in world.questions(bench).read_text().splitlines()}
    assert (demo / "curves" / "curves.png").read_bytes()[:4] == b"\x89PNG"
