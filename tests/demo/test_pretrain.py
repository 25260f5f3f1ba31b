"""`voco demo --pretrain` and the shipped tower and base: the bundle it writes, the checks before a run
starts from one, and the demo preset's shipped bundle against its recipe."""

import hashlib
import json
import shutil

import pytest

from voco_llama.cli import main
from voco_llama.demo import pretrain
from voco_llama.demo.presets import PRESETS
from voco_llama.demo.toyworld import BENCHES

BUNDLE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "recipe.json", "log.json")
BUNDLE_FILES += ("tower_probe.json", "curves.json", "curves.md", "curves.png")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    assert main(["demo", "--pretrain", "--preset", "smoke", "--out", str(out)]) == 0
    return out / "pretrained"


def test_pretrain_writes_the_bundle_its_recipe_describes(bundle):
    for name in BUNDLE_FILES:
        assert (bundle / name).is_file(), name
    assert not list(bundle.glob("checkpoint-*")) and not (bundle / "trainer_state.json").exists()
    made = json.loads((bundle / "recipe.json").read_text())
    want = pretrain.recipe(PRESETS["smoke"])
    assert {k: made[k] for k in want} == want
    weights = hashlib.sha256((bundle / "model.safetensors").read_bytes()).hexdigest()
    assert made["sha256"]["model.safetensors"] == weights
    assert set(made["seconds"]) == {"tower", "base", "curves (this run)", "total"}
    log = json.loads((bundle / "log.json").read_text())
    assert any("loss" in e for e in log["tower"]) and any("loss" in e for e in log["base"])
    # a checkpoint every step (smoke), each scored on every benchmark of the slice
    curves = json.loads((bundle / "curves.json").read_text())
    assert list(curves["base"]) == ["1", "2", "3"]
    assert all(set(point) == set(BENCHES) for point in curves["base"].values())
    probe = json.loads((bundle / "tower_probe.json").read_text())
    assert probe["targets"] == ["shape", "colour", "size", "cell"]
    assert all(0 <= probe[t]["accuracy"] <= 100 for t in probe["targets"])


@pytest.fixture()
def shipped(bundle, tmp_path, monkeypatch):
    root = tmp_path / "shipped"
    shutil.copytree(bundle, root / "smoke")
    monkeypatch.setattr(pretrain, "SHIPPED", root)
    return root / "smoke"


def test_demo_starts_from_the_shipped_base(shipped, tmp_path):
    out = tmp_path / "run"
    assert main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["base"]["shipped"] == str(shipped)
    # the run's base is the shipped weights, and neither tower nor base was trained in the run
    assert (out / "models" / "base" / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    assert not (out / "models" / "init").exists()
    assert report["tower_probe"]["targets"] == ["shape", "colour", "size", "cell"]


def test_from_scratch_ignores_the_shipped_base(shipped, tmp_path):
    out = tmp_path / "run"
    assert main(["demo", "--preset", "smoke", "--from-scratch", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["base"]["shipped"] is None
    assert (out / "models" / "init" / "tower_log.json").is_file()


def test_a_stale_or_altered_bundle_is_refused_in_one_line(shipped, tmp_path, capsys):
    recipe = json.loads((shipped / "recipe.json").read_text())
    recipe["base"]["steps"] += 1
    (shipped / "recipe.json").write_text(json.dumps(recipe))
    assert main(["demo", "--preset", "smoke", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe.json" in err[0] and "'base'" in err[0] and "--pretrain" in err[0]
    recipe["base"]["steps"] -= 1
    (shipped / "recipe.json").write_text(json.dumps(recipe))
    with (shipped / "model.safetensors").open("r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    assert main(["demo", "--preset", "smoke", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0]
    assert not (tmp_path / "b" / "models").exists()


def test_the_shipped_demo_base_is_what_the_demo_preset_describes():
    """The committed bundle (voco_llama/demo/pretrained/demo) was made by `voco demo --pretrain` from the
    demo preset as it is now: the same model, tower and base settings, the same training split (its
    fingerprint is recomputed here from the world generator), and the recorded weights."""
    preset = PRESETS["demo"]
    bundle = pretrain.shipped_bundle(preset)
    assert bundle is not None, "voco_llama/demo/pretrained/demo is missing"
    made = pretrain.check_shipped(bundle, preset)
    assert made["train_fingerprint"] == pretrain.recipe(preset)["train_fingerprint"]
    for name in BUNDLE_FILES:
        assert (bundle / name).is_file(), name
