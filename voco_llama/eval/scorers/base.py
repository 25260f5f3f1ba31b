"""What every scorer shares: matching answers to key records, and the summary dict.

Missing answers, bad ids
------------------------
An answer whose question is not in the key raises ScoringError, so does a question answered twice.
A key question without an answer is counted in ``n_missing`` (with a warning) and scored as an
empty output through the official parser -- wrong everywhere, except POPE, whose parser turns
anything without a "no" word into "yes", as LLaVA's would. ``answered_only=True`` scores only the
answered questions instead. Outputs are ``strip()``-ed before parsing (LLaVA's generators already
strip theirs).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable

from ..answers import AnswerKey, ScoringError, ScoringWarning


def pair(
    answers: list[dict],
    answers_path,
    records: list[dict],
    answer_key: AnswerKey,
    where: str,
    answered_only: bool,
    keep: Callable[[dict], bool] | None = None,
) -> tuple[list[tuple[dict, str]], dict]:
    """Match answers to key records. Returns [(record, stripped output)] in key order, and counts.

    Records failing ``keep`` may be answered but are neither scored nor counted.
    """
    index = {}
    for r in records:
        if r["key"] in index:
            raise ScoringError(f"{where}: question {r['id']!r} appears twice in the answer key")
        index[r["key"]] = r
    found: dict[Hashable, dict] = {}
    for a in answers:
        key = answer_key(a)
        if key is None or key not in index:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is not in the answer key ({where})"
            )
        if key in found:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is answered "
                f"twice (first on line {found[key]['_line']})"
            )
        found[key] = a
    records = [r for r in records if keep is None or keep(r)]
    pairs, missing = [], 0
    for r in records:
        if r["key"] in found:
            pairs.append((r, found[r["key"]]["text"].strip()))
        else:
            missing += 1
            if not answered_only:
                pairs.append((r, ""))
    if missing and not answered_only:
        warnings.warn(
            f"{answers_path}: {missing} of {len(records)} questions have no answer; they are scored as empty outputs",
            ScoringWarning,
            stacklevel=3,
        )
    if not pairs:
        raise ScoringError(f"{answers_path}: nothing to score (no answered question in {where})")
    counts = {
        "n_questions": len(records),
        "n_answered": len(records) - missing,
        "n_missing": missing,
        "n_scored": len(pairs),
        "answered_only": answered_only,
    }
    return pairs, counts


def pct(num, den) -> float:
    return 100.0 * num / den if den else 0.0


def summary(bench, score, score_name, counts, metrics, categories, **extra) -> dict:
    return {
        "bench": bench,
        "score": score,
        "score_name": score_name,
        **counts,
        "metrics": metrics,
        "categories": categories,
        **extra,
    }


def accuracy_summary(bench, pairs, counts, score_fn, score_name="accuracy (%)", **extra) -> dict:
    """Mean of per-question scores (0..1) overall and per category, in percent."""
    total, by_category = 0.0, defaultdict(lambda: [0.0, 0])
    for r, text in pairs:
        s = float(score_fn(r, text))
        total += s
        if r.get("category") is not None:
            by_category[str(r["category"])][0] += s
            by_category[str(r["category"])][1] += 1
    accuracy = pct(total, len(pairs))
    categories = {name: {"n": n, "accuracy": pct(s, n)} for name, (s, n) in sorted(by_category.items())}
    return summary(bench, accuracy, score_name, counts, {"accuracy": accuracy}, categories, **extra)


def yes_no_gold(value, where) -> str:
    gold = str(value).strip().lower()
    if gold not in ("yes", "no"):
        raise ScoringError(f"{where}: gold answer {value!r} is not yes/no")
    return gold
