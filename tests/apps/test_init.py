"""`voco init`: presets listed, nothing written over without --overwrite."""

from __future__ import annotations

from voco_llama.cli import main
from voco_llama.core.presets import PRESETS


def test_init_lists_presets_and_never_overwrites_without_asking(tmp_path, capsys):
    assert main(["init", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in PRESETS)
    out = tmp_path / "model"
    assert main(["init", "--out", str(out)]) == 0
    weights = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["init", "--out", str(out), "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"voco: error: {out}: folder is not empty; pass --overwrite to write over what it holds"]
    assert (out / "model.safetensors").read_bytes() == weights
    assert main(["init", "--out", str(out), "--seed", "3", "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != weights
    (tmp_path / "empty").mkdir()
    assert main(["init", "--out", str(tmp_path / "empty"), "--num_voco", "2"]) == 0
