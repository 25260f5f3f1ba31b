"""Paired cluster-bootstrap standard errors for the image demo's rows, from their answer files.

Every row answers the same eval questions, so a difference between two rows is paired: an easy image
helps both. And the questions about one eval image are not independent (one misread object spoils
several answers), so the unit resampled is the eval *image*, not the question. One set of resamples
(multinomial counts over the union of the eval images: the benches share their images, like COCO val)
is drawn once and applied to every row and every bench; each resample rescores every bench from
per-image sufficient statistics (`image_stats`, `score_from_stats`), recomputes the retention with
that resample's own upper and lower bound, and the spread of a quantity over the resamples is its
standard error -- of a row's score, its mean retention, or the difference between two rows.

Per-question correctness comes from the scorers' own parse functions and answer-key loaders
(eval/scorers/), paired with the key and with missing answers counted as each scorer does under
``missing="official"`` (POPE skips them, the others score them wrong); the full-sample numbers are
therefore the scorers' numbers exactly (tests/demo/test_paired.py checks it per bench).
"""

from __future__ import annotations

import functools
import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..core.errors import InputError
from ..eval.answers import ScoringWarning, is_generic_key, load_answer_key, load_answers
from ..eval.scorers import canonical_bench, check_generic_key
from ..eval.scorers.base import output, pair
from ..eval.scorers.gqa import _gqa_key, gqa_prediction, gqa_scored
from ..eval.scorers.mmbench import _mmbench_key, mmbench_letter, prompt_options
from ..eval.scorers.mme import MME_PERCEPTION, _mme_key, mme_yes_no
from ..eval.scorers.pope import _pope_key, pope_yes_no
from ..eval.scorers.seed import _seed_key
from ..eval.scorers.vqa import _vqav2_key, vqav2_accuracy

# bench -> the scorer's key loader as (path, answers) -> (records, answer_key), and what the scorer does
# with a missing answer under missing="official"
_KEYS = {
    "gqa": (lambda path, answers: _gqa_key(path), "wrong"),
    "vqav2": (lambda path, answers: _vqav2_key(path), "wrong"),
    "pope": (lambda path, answers: _pope_key(path, None), "skip"),
    "mme": (lambda path, answers: _mme_key(path), "wrong"),
    "mmbench": (_mmbench_key, "wrong"),
    "seed": (lambda path, answers: _seed_key(path), "wrong"),
}
# the scorers' per-question scores (0..1) for an answered question of the accuracy benches
_QUESTION_SCORE = {
    "gqa": lambda r, text: gqa_prediction(text) == r["answer"].lower(),
    "vqav2": lambda r, text: vqav2_accuracy(text, r["answers"] or [r["answer"]] * 10),
    "seed": lambda r, text: text == r["answer"],
}
_POPE_OUTCOMES = ("TP", "FP", "TN", "FN")


def _accuracy_stats(bench, records, pairs, image, where) -> tuple[int, dict]:
    """(score sum, questions) per image; a missing answer scores 0."""
    stats = defaultdict(lambda: np.zeros(2))
    for r, answer in pairs:
        stats[image(r)] += (0.0 if answer is None else float(_QUESTION_SCORE[bench](r, output(answer))), 1.0)
    return 2, stats


def _pope_stats(records, pairs, image, where) -> tuple[int, dict]:
    """TP, FP, TN, FN per category (the key's categories, sorted) per image."""
    categories = sorted({r["category"] for r in records})
    stats = defaultdict(lambda: np.zeros(4 * len(categories)))
    for r, answer in pairs:  # missing answers were skipped, as the scorer skips them
        gold_yes, pred_yes = r["answer"] == "yes", pope_yes_no(output(answer)) == "yes"
        outcome = ("TP" if pred_yes else "FN") if gold_yes else ("FP" if pred_yes else "TN")
        stats[image(r)][4 * categories.index(r["category"]) + _POPE_OUTCOMES.index(outcome)] += 1
    return 4 * len(categories), stats


def _mme_stats(records, pairs, image, where) -> tuple[int, dict]:
    """Per perception subtask of the key: right answers, questions, images with all right, images."""
    subtasks = [s for s in MME_PERCEPTION if any(r["category"] == s for r in records)]
    stats = defaultdict(lambda: np.zeros(4 * len(subtasks)))
    all_right = {}  # (subtask, image) -> (cluster, every question right)
    for r, answer in pairs:
        if r["category"] not in subtasks:
            continue  # cognition: not in the headline
        right = ("other" if answer is None else mme_yes_no(output(answer))) == r["answer"]
        at = 4 * subtasks.index(r["category"])
        stats[image(r)][at : at + 2] += (right, 1)
        all_right[r["image"]] = (image(r), all_right.get(r["image"], (None, True))[1] and right)
    for (subtask, _), (cluster, ok) in all_right.items():
        at = 4 * subtasks.index(subtask)
        stats[cluster][at + 2 : at + 4] += (ok, 1)
    return 4 * len(subtasks), stats


def _mmbench_stats(records, pairs, image, where) -> tuple[int, dict]:
    """Circular groups with every copy right, and groups, per image (a group's copies share one)."""
    groups = {}  # group -> (cluster, every copy right)
    for r, answer in pairs:
        options = r["options"] if r["options"] is not None else prompt_options(answer and answer.get("prompt"))
        right = answer is not None and mmbench_letter(output(answer), options or "ABCD") == r["answer"]
        cluster, ok = groups.get(r["group"], (image(r), True))
        if cluster != image(r):
            raise InputError(f"{where}: MMBench group {r['group']!r} spans images {cluster} and {image(r)}")
        groups[r["group"]] = (cluster, ok and right)
    stats = defaultdict(lambda: np.zeros(2))
    for cluster, ok in groups.values():
        stats[cluster] += (ok, 1)
    return 2, stats


_STATS = {
    "gqa": functools.partial(_accuracy_stats, "gqa"),
    "vqav2": functools.partial(_accuracy_stats, "vqav2"),
    "seed": functools.partial(_accuracy_stats, "seed"),
    "pope": _pope_stats,
    "mme": _mme_stats,
    "mmbench": _mmbench_stats,
}


class _Key:
    """One answer key, read once for every row that answers it."""

    def __init__(self, bench: str, path):
        bench = canonical_bench(bench)
        if bench not in _STATS:
            raise InputError(f"{path}: no paired statistics for {bench!r} (one of {', '.join(_STATS)})")
        check_generic_key(bench, path)
        if not is_generic_key(path):
            raise InputError(f"{path}: paired statistics need a generic JSONL answer key (with 'image')")
        self.bench, self.path, self.image_of = bench, path, {}
        for r in load_answer_key(path):
            if not r["image"]:
                raise InputError(f"{path}:{r['_line']}: no 'image': the question cannot be clustered by image")
            self.image_of[r["_line"]] = str(r["image"])
        self.images = sorted(set(self.image_of.values()))
        # MMBench's loader reads the answers too (it refuses --all-rounds answers with a generic key)
        self.loaded = None if bench == "mmbench" else _KEYS[bench][0](path, [])

    def stats(self, answers_path) -> np.ndarray:
        answers = load_answers(answers_path)
        load, missing = _KEYS[self.bench]
        records, answer_key = self.loaded if self.loaded is not None else load(self.path, answers)
        with warnings.catch_warnings():  # missing answers: the scorer's summary already reports them
            warnings.simplefilter("ignore", ScoringWarning)
            keep = gqa_scored if self.bench == "gqa" else None
            pairs, _ = pair(answers_path, self.path, records, answer_key, missing, answers=answers, keep=keep)
        n_stats, per_image = _STATS[self.bench](records, pairs, lambda r: self.image_of[r["_line"]], str(self.path))
        stats = np.zeros((len(self.images), n_stats))
        for i, name in enumerate(self.images):
            if name in per_image:
                stats[i] = per_image[name]
        return stats


def image_stats(bench: str, answers_path, key_path) -> tuple[list[str], np.ndarray]:
    """The key's eval images (sorted) and, per image, the sufficient statistics of the bench's score
    [n_images, n_stats]: their sum over images gives the scorer's numbers (`score_from_stats`).

    Columns: gqa, vqav2, seed (score sum, questions); mmbench (groups all right, groups); pope per
    category (TP, FP, TN, FN); mme per perception subtask (right, questions, images all right, images).
    The key must be a generic JSONL key with an ``image`` on every record (the toy world's are)."""
    key = _Key(bench, key_path)
    return key.images, key.stats(answers_path)


def _pct(num, den):
    """100 num / den, 0 where den is 0 (the scorers' pct), elementwise."""
    safe = np.where(den > 0, den, 1)
    return np.where(den > 0, 100.0 * num / safe, 0.0)


def score_from_stats(bench: str, stats, learning: bool = False) -> np.ndarray:
    """The bench's score from summed statistics [..., n_stats] (any leading axes, e.g. resamples).
    ``learning``: what "learned" is judged on -- POPE's mean accuracy instead of its F1 (report.py's
    learning_score); the score itself for the other benches."""
    bench, s = canonical_bench(bench), np.asarray(stats, dtype=float)
    if bench == "pope":
        tp, fp, tn, fn = np.moveaxis(s.reshape(*s.shape[:-1], -1, 4), -1, 0)
        n = tp + fp + tn + fn
        if learning:
            per_category = _pct(tp + tn, n)
        else:
            precision, recall = _pct(tp, tp + fp), _pct(tp, tp + fn)
            both = precision + recall
            per_category = np.where(both > 0, 2 * precision * recall / np.where(both > 0, both, 1), 0.0)
        present = n > 0  # the scorer averages over the categories it scored
        with np.errstate(invalid="ignore"):  # no POPE question in a resample: undefined
            return (per_category * present).sum(-1) / present.sum(-1)
    if bench == "mme":
        right, n, images_right, images = np.moveaxis(s.reshape(*s.shape[:-1], -1, 4), -1, 0)
        return (_pct(right, n) + _pct(images_right, images)).sum(-1)
    if bench not in _STATS:
        raise InputError(f"no paired statistics for {bench!r} (one of {', '.join(_STATS)})")
    return _pct(s[..., 0], s[..., 1])


def _se(values: np.ndarray) -> np.ndarray:
    """Bootstrap standard error over axis 0, ignoring resamples where the quantity is undefined."""
    finite = np.isfinite(values)
    count = finite.sum(0)
    mean = np.where(finite, values, 0).sum(0) / np.maximum(count, 1)
    squares = np.where(finite, (values - mean) ** 2, 0).sum(0)
    return np.where(count > 1, np.sqrt(squares / np.maximum(count - 1, 1)), np.nan)


def _number(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def paired_bootstrap(
    rows: dict[str, dict[str, object]],
    keys: dict[str, object],
    upper: str = "Upper bound",
    lower: str = "Lower bound",
    learned: Sequence[str] = (),
    comparisons: Sequence[tuple[str, str]] = (),
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Paired cluster-bootstrap errors of every row's scores and mean retention, and of differences.

    ``rows``: row name -> bench -> answers file; ``keys``: bench -> answer key (every row answers every
    bench of ``keys``); retention per bench of ``learned`` is (row - lower) / (upper - lower), a fraction,
    with each resample's own bounds (undefined, and left out of the error, where that gap is <= 0).
    Returns {"resamples", "seed", "n_images", "learned", "rows": {name: {"scores", "se" (bench -> ...),
    "retention", "retention_se" (learned bench -> ...), "mean_retention", "mean_retention_se"}},
    "comparisons": [{"a", "b", "difference", "se" (a's mean retention minus b's), "scores": {bench:
    {"difference", "se"}}}]}; point values are the full sample's, None where undefined."""
    names = list(rows)
    for name in (upper, lower, *(n for pair_ in comparisons for n in pair_)):
        if name not in rows:
            raise InputError(f"paired bootstrap: no row {name!r} (rows: {', '.join(names)})")
    for bench in learned:
        if bench not in keys:
            raise InputError(f"paired bootstrap: learned benchmark {bench!r} has no answer key")
    for name, files in rows.items():
        absent = [b for b in keys if b not in files]
        if absent:
            raise InputError(f"paired bootstrap: row {name!r} has no answers for {', '.join(absent)}")
    if resamples < 2:
        raise InputError(f"paired bootstrap: resamples={resamples}: need at least 2")

    opened = {b: _Key(b, path) for b, path in keys.items()}
    images = sorted({i for key in opened.values() for i in key.images})
    index = {name: i for i, name in enumerate(images)}
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(images), np.full(len(images), 1 / len(images)), size=resamples).astype(float)

    full, boot = {}, {}  # bench -> scores [rows], [resamples, rows]
    for bench, key in opened.items():
        stats = [key.stats(rows[n][bench]) for n in names]
        stacked = np.zeros((len(names), len(images), stats[0].shape[1]))
        stacked[:, [index[i] for i in key.images]] = stats
        full[bench] = score_from_stats(bench, stacked.sum(1))
        boot[bench] = score_from_stats(bench, np.moveaxis(counts @ stacked, 0, 1))  # [resamples, rows, stats]

    u, lo = names.index(upper), names.index(lower)

    def retention(scores: np.ndarray) -> np.ndarray:
        gap = scores[..., u : u + 1] - scores[..., lo : lo + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, (scores - scores[..., lo : lo + 1]) / gap, np.nan)

    full_ret = {b: retention(full[b]) for b in learned}
    boot_ret = {b: retention(boot[b]) for b in learned}
    if learned:
        full_mean = np.mean([full_ret[b] for b in learned], axis=0)
        boot_mean = np.mean([boot_ret[b] for b in learned], axis=0)
    else:
        full_mean, boot_mean = np.full(len(names), np.nan), np.full((resamples, len(names)), np.nan)
    score_se = {b: _se(boot[b]) for b in keys}
    ret_se = {b: _se(boot_ret[b]) for b in learned}
    mean_se = _se(boot_mean)

    out_rows = {
        name: {
            "scores": {b: float(full[b][r]) for b in keys},
            "se": {b: _number(score_se[b][r]) for b in keys},
            "retention": {b: _number(full_ret[b][r]) for b in learned},
            "retention_se": {b: _number(ret_se[b][r]) for b in learned},
            "mean_retention": _number(full_mean[r]),
            "mean_retention_se": _number(mean_se[r]),
        }
        for r, name in enumerate(names)
    }
    out_comparisons = []
    for a, b in comparisons:
        i, j = names.index(a), names.index(b)
        out_comparisons.append(
            {
                "a": a,
                "b": b,
                "difference": _number(full_mean[i] - full_mean[j]),
                "se": _number(_se(boot_mean[:, i] - boot_mean[:, j])),
                "scores": {
                    bench: {
                        "difference": float(full[bench][i] - full[bench][j]),
                        "se": _number(_se(boot[bench][:, i] - boot[bench][:, j])),
                    }
                    for bench in keys
                },
            }
        )
    return {
        "resamples": resamples,
        "seed": seed,
        "n_images": len(images),
        "learned": list(learned),
        "rows": out_rows,
        "comparisons": out_comparisons,
    }
