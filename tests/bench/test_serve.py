"""`voco bench-serve` on the tiny preset: every mode served over loopback, same answers, stores
filled to their budget, report and plot written."""

import json

from voco_llama.cli import main
from voco_llama.core.cache import kv_bytes
from voco_llama.core.presets import build_model


def test_bench_serve_tiny(tmp_path, capsys):
    out = tmp_path / "bs"
    argv = ["bench-serve", "--preset", "tiny", "--clients", "1,3", "--requests-per-client", "4", "--pool", "6"]
    argv += ["--joiners", "3", "--long-tokens", "60"]
    assert main([*argv, "--cache-memory", "48KiB", "--max-tokens", "5", "--out", str(out)]) == 0
    result = json.loads((out / "bench_serve.json").read_text())
    assert [(p["clients"], p["mode"]) for p in result["points"]] == [
        (c, m) for c in (1, 3) for m in ("voco_cache", "full_cache", "no_cache")
    ]
    assert all(p["requests"] == 4 * p["clients"] and p["p99_ms"] >= p["p50_ms"] > 0 for p in result["points"])
    # the three servers give the same greedy answers to the same image and question
    assert all(a["compared"] > 0 and a["different"] == 0 for a in result["agreement"].values())
    config = build_model("tiny")[0].config
    modes = result["modes"]
    n = config.num_vision_tokens
    assert modes["voco_cache"]["bytes_per_image"] == kv_bytes(config, 1)
    assert modes["full_cache"]["bytes_per_image"] == kv_bytes(config, n + 1)
    for mode in ("voco_cache", "full_cache"):  # the store holds what fits in its budget, no more
        assert modes[mode]["resident_capacity"] == 48 * 1024 // modes[mode]["bytes_per_image"]
        assert modes[mode]["resident_after_run"] == min(6, modes[mode]["resident_capacity"])
    assert modes["no_cache"]["resident_after_run"] == 0
    join = result["join"]  # continuous batching: 3 short requests sent during a 60-token answer
    assert len(join["joined_ms"]) == 3 and join["alone_ms"] > 0 and join["long_ms"] > max(join["joined_ms"])
    assert join["long_still_running"] and join["worst_ratio"] == max(join["joined_ms"]) / join["alone_ms"]
    assert (out / "bench_serve.png").stat().st_size > 10_000
    assert "## Goals" in (out / "bench_serve.md").read_text() and "questions / s" in capsys.readouterr().out
