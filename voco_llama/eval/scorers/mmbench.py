"""MMBench: its rule-based letter matching and circular evaluation.

Parse (after strip()): ".()[],:;!*#{}" to spaces, and the single option letter standing as a word
("B", "B. blue", "The answer is B"). Its ChatGPT fallback is not reproduced. A circular group
counts as right only if every copy in it is right; the headline is the share of right groups.

Keys: a generic key (``group`` = circular group, default the question itself), or the MMBench TSV
(columns ``index, question, A, B, C, D, answer, category, ...``). Assumed convention (the TSVs
LLaVA evaluates, e.g. mmbench_dev_20230712.tsv): circular copies are separate rows whose
``index`` differ by multiples of 1,000,000, so ``index % 1e6`` is the group. Answers from LLaVA's
``--all-rounds`` (``round_id`` r, options rotated left r times) are scored against the
correspondingly rotated gold and join the row's group.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

from ..answers import ScoringError, generic_matching, is_generic_key, key_loader, load_answer_key, load_answers
from .base import pair, pct, summary


def mmbench_letter(text: str, letters: str = "ABCD") -> str | None:
    """MMBench's rule-based match: punctuation to spaces, the one option letter standing as a word."""
    for ch in ".()[],:;!*#{}":
        text = text.replace(ch, " ")
    words = set(text.split())
    hits = [letter for letter in letters if letter in words]
    return hits[0] if len(hits) == 1 else None


def _is_none(value) -> bool:
    return value is None or str(value).strip().lower() in ("", "nan", "none")


@key_loader("MMBench answer key")
def _mmbench_key(path, answers):
    if is_generic_key(path):
        if any(int(a.get("round_id") or 0) for a in answers):
            raise ScoringError(f"{path}: answers with round_id > 0 (--all-rounds) need the MMBench TSV")
        records = load_answer_key(path)
        for r in records:  # options A-D, or up to the gold letter if that is later
            if len(r["answer"]) != 1 or r["answer"] not in "ABCDEFGH":
                raise ScoringError(f"{path}:{r['_line']}: gold {r['answer']!r} is not an option letter")
            r["letters"] = "ABCDEFGH"[: max(4, "ABCDEFGH".index(r["answer"]) + 1)]
            r["group"] = str(r["group"]) if r["group"] is not None else r["id"]
        return records, generic_matching(records, path)

    old_limit = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # rows carry base64 images
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    finally:
        csv.field_size_limit(old_limit)
    if not rows or not {"index", "answer", "A", "B"} <= rows[0].keys():
        raise ScoringError(f"{path}: expected an MMBench TSV with columns index, A, B, ..., answer")
    n_rounds = 1 + max((int(a.get("round_id") or 0) for a in answers), default=0)
    records = []
    for row in rows:
        n_options = 0
        for letter in "ABCD":
            if _is_none(row.get(letter)):
                break
            n_options += 1
        gold = (row["answer"] or "").strip()
        if gold not in list("ABCD"[:n_options]):
            raise ScoringError(
                f"{path}: row index {row['index']}: answer {row['answer']!r} is not one of its options "
                "(a test split without answers cannot be scored locally)"
            )
        index = int(float(row["index"]))
        for r in range(min(n_rounds, n_options)):  # round r shows the options rotated left r times
            records.append(
                {
                    "id": str(index),
                    "key": (str(index), r),
                    "letters": "ABCD"[:n_options],
                    "answer": "ABCD"[("ABCD".index(gold) - r) % n_options],
                    "group": str(index % 1_000_000),
                    "category": row.get("category"),
                }
            )
    return records, lambda a: (str(a["question_id"]), int(a.get("round_id") or 0))


def score_mmbench(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    if extra_file is not None:
        raise ScoringError("mmbench takes no extra file")
    answers = load_answers(answers_path)
    records, answer_key = _mmbench_key(annotation_path, answers)
    pairs, counts = pair(answers, answers_path, records, answer_key, str(annotation_path), answered_only)
    groups: dict[str, list] = {}
    for r, text in pairs:
        right = mmbench_letter(text, r["letters"]) == r["answer"]
        entry = groups.setdefault(r["group"], [r.get("category"), True, 0])
        entry[1] = entry[1] and right
        entry[2] += right
    n_right_groups = sum(ok for _, ok, _ in groups.values())
    score = pct(n_right_groups, len(groups))
    by_category = defaultdict(lambda: [0, 0])
    for category, ok, _ in groups.values():
        if category is not None:
            by_category[str(category)][0] += ok
            by_category[str(category)][1] += 1
    categories = {
        name: {"n_groups": n, "circular_accuracy": pct(ok, n)} for name, (ok, n) in sorted(by_category.items())
    }
    metrics = {
        "circular_accuracy": score,
        "n_groups": len(groups),
        "single_copy_accuracy": pct(sum(right for _, _, right in groups.values()), len(pairs)),
    }
    return summary("mmbench", score, "circular accuracy (%)", counts, metrics, categories)
