"""The `voco` command end to end: init -> compress -> ask, and its errors."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from voco_llama.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["init", "--preset", "tiny", "--out", str(d / "model"), "--num-voco", "2"]) == 0
    image = Image.new("RGB", (48, 40), (200, 30, 30))  # not square: exercises the pad path
    image.paste((20, 20, 220), (5, 5, 20, 20))
    image.save(d / "img.png")
    return d


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_compress_then_ask_equals_masked_pass(workdir, capsys):
    model, img, cache = str(workdir / "model"), str(workdir / "img.png"), workdir / "img.voco"
    assert main(["compress", "--model", model, "--image", img, "--out", str(cache)]) == 0
    capsys.readouterr()
    q = "What colour is the square?"
    from_cache = run_json(
        capsys, ["ask", "--model", model, "--cache", str(cache), "--question", q, "--json", "--max-new-tokens", "8"]
    )
    masked = run_json(
        capsys,
        [
            "ask",
            "--model",
            model,
            "--image",
            img,
            "--question",
            q,
            "--json",
            "--path",
            "masked",
            "--max-new-tokens",
            "8",
        ],
    )
    assert from_cache["token_ids"] == masked["token_ids"] and len(masked["token_ids"]) > 0
    assert max(abs(a - b) for a, b in zip(from_cache["logprobs"], masked["logprobs"])) < 1e-4
    # layers x 2 x kv_heads x head_dim x K x bytes, plus a small header
    config = json.loads((workdir / "model" / "config.json").read_text())["text_config"]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    payload = config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim * 2 * 4
    assert payload < cache.stat().st_size < payload + 2048


def test_bad_inputs_exit_2_with_one_line(workdir, capsys, tmp_path):
    model = str(workdir / "model")
    assert main(["ask", "--model", model, "--image", str(tmp_path / "nope.png"), "--question", "q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.png" in err[0]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["compress", "--model", model, "--image", str(tmp_path / "bad.png"), "--out", str(tmp_path / "c")]) == 2
    assert "bad.png" in capsys.readouterr().err
    # a cache made by another model
    assert main(["init", "--out", str(tmp_path / "other"), "--seed", "7", "--num-voco", "2"]) == 0
    assert (
        main(
            [
                "compress",
                "--model",
                str(tmp_path / "other"),
                "--image",
                str(workdir / "img.png"),
                "--out",
                str(tmp_path / "other.voco"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["ask", "--model", model, "--cache", str(tmp_path / "other.voco"), "--question", "q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.voco" in err[0] and "different model" in err[0]


def test_console_script_exit_code(tmp_path):
    voco = [sys.executable, "-m", "voco_llama.cli"]
    result = subprocess.run(
        voco + ["ask", "--model", str(tmp_path / "missing"), "--cache", "x", "--question", "q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "missing" in result.stderr
