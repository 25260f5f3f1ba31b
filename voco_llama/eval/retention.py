"""The paper's compression retention: (method - lower) / (upper - lower) per benchmark, and their
mean. It is invariant to rescaling a benchmark, so MME's 0-2000 scale does not matter.

Scores are read from ``score()`` summaries, ``{bench: summary}``, lists of them, or plain
``{bench: number}`` JSON; benchmark names are canonicalised (``MMB`` -> ``mmbench``).
"""

from __future__ import annotations

import math

from .answers import ScoringError, read_json
from .scorers import BENCHES, canonical_bench


def bench_order(names) -> list[str]:
    return sorted(names, key=lambda b: (BENCHES.index(b) if b in BENCHES else len(BENCHES), b))


def _canonical_scores(scores: dict, where="scores") -> dict[str, float]:
    out = {}
    for bench, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScoringError(f"{where}: score for {bench!r} is not a number: {value!r}")
        name = canonical_bench(bench)
        if name in out and out[name] != value:
            raise ScoringError(f"{where}: two different scores for {name!r}")
        out[name] = float(value)
    return out


def retention(upper: dict[str, float], method: dict[str, float], lower: dict[str, float]) -> dict:
    """Per-benchmark retention (fractions, 1.0 = the upper bound) and their mean over the
    benchmarks present in all three (those with upper == lower are undefined and left out)."""
    u, m, lo = _canonical_scores(upper, "upper"), _canonical_scores(method, "method"), _canonical_scores(lower, "lower")
    common = bench_order(set(u) & set(m) & set(lo))
    per, undefined = {}, []
    for b in common:
        if u[b] == lo[b]:
            undefined.append(b)
        else:
            per[b] = (m[b] - lo[b]) / (u[b] - lo[b])
    return {
        "retention": per,
        "mean": sum(per.values()) / len(per) if per else None,
        "benchmarks": list(per),
        "undefined": undefined,
        "not_in_all_three": bench_order((set(u) | set(m) | set(lo)) - set(common)),
    }


def scores_from_json(data, where="scores") -> dict[str, float]:
    """{bench: number}, a score() summary, {bench: summary} or a list of summaries -> {bench: score}."""
    if isinstance(data, list):
        merged: dict[str, float] = {}
        for item in data:
            for bench, value in scores_from_json(item, where).items():
                if bench in merged and merged[bench] != value:
                    raise ScoringError(f"{where}: two different scores for {bench!r}")
                merged[bench] = value
        return merged
    if not isinstance(data, dict):
        raise ScoringError(f"{where}: expected a JSON object or list")
    if "bench" in data and "score" in data:
        return _canonical_scores({data["bench"]: data["score"]}, where)
    return _canonical_scores(
        {b: v["score"] if isinstance(v, dict) and "score" in v else v for b, v in data.items()}, where
    )


def load_scores(*paths) -> dict[str, float]:
    """Merge the scores in one or more JSON files (any form scores_from_json accepts)."""
    merged: dict[str, float] = {}
    for path in paths:
        for bench, value in scores_from_json(read_json(path), str(path)).items():
            if bench in merged and merged[bench] != value:
                raise ScoringError(f"{path}: a different score for {bench!r} was already loaded")
            merged[bench] = value
    return merged


def retention_report(upper: dict, lower: dict, methods: dict[str, dict]) -> dict:
    """Scores and retention for several methods against one pair of bounds."""
    return {
        "upper": _canonical_scores(upper, "upper"),
        "lower": _canonical_scores(lower, "lower"),
        "methods": {
            name: {"scores": _canonical_scores(s, name), **retention(upper, s, lower)} for name, s in methods.items()
        },
    }
