"""`voco bench` (Table 7): analytic 7B numbers, the three answering paths agree, byte counts, FLOPs
order, and the --quick CLI run's outputs."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from voco_llama.bench import inference as bench


@pytest.fixture(scope="module")
def small():
    """LLaVA-1.5's 576-token geometry at a tiny width: the paths' costs keep their order."""
    model, tokenizer, _ = bench.build_model(bench.llava15_geometry(hidden=64, layers=2))
    return model, tokenizer


def test_analytic_llava15_7b_bytes():
    a = bench.analytic_7b()
    assert a["bytes_1_token"] == 32 * 2 * 32 * 128 * 1 * 2 == 524_288
    assert a["bytes_576_tokens"] == 576 * 524_288 == 301_989_888
    assert a["mib_1_token"] == 0.5 and a["mib_576_tokens"] == 288
    # The paper's figures: 0.525 MB per token (rounded up) and 576 x 0.525 = 302.4 MB.
    assert a["paper_mb_1_token"] == pytest.approx(0.525) and a["paper_mb_576_tokens"] == pytest.approx(302.4)
    assert round(a["mb_576_tokens"], 1) == 302.0  # the exact figure is not 302.4
    assert f"{a['reduction_k1']:.1%}" == "99.8%"
    assert "302.4 MB" in "\n".join(bench.analytic_lines(a))


@pytest.mark.parametrize("frames", [1, 2])
def test_three_ways_give_the_same_first_token(small, frames):
    model, tokenizer = small
    batch = bench.encode(tokenizer, model.config, num_images=frames)
    pixels = bench.example_pixels(model.config, frames)
    pixels[-1] = pixels[-1].flip(-1)  # distinct frames: every group of (b) is computed, none reused
    cache = model.compress(pixels)
    full = bench.build_full_cache(model, batch, pixels)
    calls = bench.answerers(model, batch, pixels, full, cache)
    firsts = {m: bench.answer_once(model, call, 0)[2][0] for m, call in calls.items()}
    for mode in ("full_cache", "voco_cache"):
        assert torch.allclose(firsts[mode], firsts["no_cache"], atol=1e-4), (
            mode,
            (firsts[mode] - firsts["no_cache"]).abs().max(),
        )
        assert int(firsts[mode].argmax()) == int(firsts["no_cache"].argmax())


def test_repeated_frames_reuse_rerotated_keys_exactly(small):
    model, tokenizer = small
    batch = bench.encode(tokenizer, model.config, num_images=3)
    pixels = bench.example_pixels(model.config, 3)  # identical frames: groups 2, 3 re-rotate group 1
    full = bench.build_full_cache(model, batch, pixels)
    calls = bench.answerers(model, batch, pixels, full, None)
    a, b = (bench.answer_once(model, calls[m], 2)[2][0] for m in ("no_cache", "full_cache"))
    assert torch.allclose(a, b, atol=1e-4)


def test_cache_bytes_are_layers_x_2_x_kv_heads_x_head_dim_x_tokens_x_bytes(small, tmp_path):
    model, tokenizer = small
    text = model.config.text_config
    per_token = (
        text.num_hidden_layers * 2 * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 4
    )
    n = model.config.num_vision_tokens
    assert n == 576
    pixels = bench.example_pixels(model.config)
    model.config.num_voco_choices = [1, 4]  # bytes, not answers: compress at a K the weights never trained at
    for k in (1, 4):
        cache = model.compress(pixels, num_voco=k)
        assert cache.nbytes == per_token * k == bench.kv_bytes(model.config, k)
        size = cache.save(tmp_path / f"c{k}.safetensors").stat().st_size
        assert per_token * k < size < per_token * k + 4096
    full = bench.build_full_cache(model, bench.encode(tokenizer, model.config), pixels)
    assert full.num_tokens == n + 1 and full.nbytes == per_token * (n + 1)
    size = full.save(tmp_path / "full.safetensors").stat().st_size
    assert full.nbytes < size < full.nbytes + 4096


def test_flops_voco_below_full_caching_below_no_cache(small):
    model, tokenizer = small
    batch = bench.encode(tokenizer, model.config)
    pixels = bench.example_pixels(model.config)
    calls = bench.answerers(model, batch, pixels, bench.build_full_cache(model, batch, pixels), model.compress(pixels))
    flops = {m: bench.count_flops(call) for m, call in calls.items()}
    assert 0 < flops["voco_cache"] < flops["full_cache"] < flops["no_cache"]


def test_quick_cli_writes_json_markdown_and_plots(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.register_cli(parser.add_subparsers())
    out = tmp_path / "bench"
    args = parser.parse_args(["bench", "--quick", "--hidden", "64", "--layers", "2", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "VoCo caching" in printed and "302.4 MB" in printed and "PASS storage reduction" in printed
    result = json.loads((out / "bench.json").read_text())
    for key in (
        "model",
        "geometry",
        "analytic_7b",
        "table7",
        "agreement",
        "goals",
        "sweep_k",
        "sweep_frames",
        "sweep_frames_skipped",
        "plots",
        "runtime_s",
    ):
        assert key in result, key
    assert set(result["table7"]) == {"no_cache", "full_cache", "voco_cache", "floor"}
    for row in result["table7"].values():
        for key in (
            "tokens_cached",
            "cache_bytes",
            "disk_bytes",
            "ttft",
            "decode_per_token",
            "flops",
            "peak_alloc_bytes",
        ):
            assert key in row, key
    assert (
        result["table7"]["voco_cache"]["tokens_cached"] == 1 and result["table7"]["full_cache"]["tokens_cached"] == 577
    )
    assert [g["passed"] for g in result["goals"]][0] is True
    assert [r["k"] for r in result["sweep_k"]] == [1, 4] and [r["frames"] for r in result["sweep_frames"]] == [1, 2]
    assert result["agreement"]["max_abs_logit_diff_voco_cache_vs_no_cache"] < 1e-4
    assert result["agreement"]["max_abs_logit_diff_full_cache_vs_no_cache"] < 1e-4
    markdown = (out / "bench.md").read_text()
    assert "| VoCo caching | 1 |" in markdown and "## Sweep: K" in markdown and "## Sweep: images" in markdown
    for name in result["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(result["plots"]) == ["bench_frames.png", "bench_k.png"]


def test_peak_alloc_prints_no_profiler_lines(tmp_path):
    """`voco bench` printed kineto's `USDT: ... profiler_start/stop` pair for every measurement."""
    code = (
        "import torch\n"
        "from voco_llama.bench.inference import peak_alloc_bytes\n"
        "print(peak_alloc_bytes(lambda: torch.ones(1024, 256) + 1))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 2 * 1024 * 256 * 4  # two 1 MiB tensors alive at once: the ones and the sum
    assert "USDT" not in out.stderr and "profiler_start" not in out.stderr, out.stderr
