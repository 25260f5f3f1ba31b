"""Standard errors of the demo's scores, computed from the scorers' summaries.

Accuracy-type scores (GQA, VQAv2, SEED): binomial on the number of questions scored (for VQAv2's
soft accuracy, whose per-question values lie in [0, 1], the binomial value bounds the true one from
above). MMBench: binomial on the circular groups. MME: per subtask acc (binomial on its questions)
plus acc+ (binomial on its images), the two errors added since both count the same answers, then
subtasks combined as independent. POPE: the delta-method error of each category's F1 from its
TP/FP/FN/TN counts; categories share their positives, so their errors are added, not combined in
quadrature, before taking the mean.
"""

from __future__ import annotations

import math


def binomial_se(percent: float, n: int) -> float:
    """Standard error, in points, of a percentage measured on n independent trials."""
    if n <= 0:
        return 0.0
    p = min(max(percent / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def f1_se(tp: int, fp: int, tn: int, fn: int) -> float:
    """Delta-method standard error (points) of F1 = 2TP / (2TP + FP + FN) over n = TP+FP+TN+FN questions."""
    n, denominator = tp + fp + tn + fn, 2 * tp + fp + fn
    if n == 0 or denominator == 0:
        return 0.0
    f1 = 2 * tp / denominator
    # F1 is a ratio of means: its influence per question is a_i - F1 * b_i (TP: 2 - 2 F1; FP, FN: -F1)
    variance = (tp * (2 - 2 * f1) ** 2 + (fp + fn) * f1**2) / n
    return 100.0 * math.sqrt(variance / n) / (denominator / n)


def standard_error(bench: str, summary: dict) -> float:
    """The standard error of `summary["score"]`, in the score's own units."""
    if bench == "mmbench":
        return binomial_se(summary["score"], summary["metrics"]["n_groups"])
    if bench == "mme":
        parts = [
            binomial_se(c["acc"], c["n"]) + binomial_se(c["acc_plus"], c["n_images"])
            for c in summary["categories"].values()
        ]
        return math.sqrt(sum(p * p for p in parts))
    if bench == "pope":
        cats = summary["categories"].values()
        return sum(f1_se(c["TP"], c["FP"], c["TN"], c["FN"]) for c in cats) / max(1, len(cats))
    return binomial_se(summary["score"], summary["n_scored"])
