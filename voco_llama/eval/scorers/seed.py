"""SEED-Bench, as LLaVA's ``convert_seed_for_submission.py``: the stripped output must equal the
gold letter ("B." is wrong); accuracy per question type.

Keys: a generic key, or SEED-Bench JSON (``{"questions": [{"question_id", "answer",
"question_type_id", "data_type"}], "question_type": {name: id}}``); option ``data_type``
("image"/"video") restricts the scored questions, default all (the LLaVA-1.5 paper's SEED column).
"""

from __future__ import annotations

from ..answers import ScoringError, key_loader, simple_key
from .base import accuracy_summary, missing_rule, output, pair, pct, register_scorer


def _seed_records(data, path) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ScoringError(f"{path}: expected SEED-Bench JSON ({{'questions': [...], 'question_type': {{...}}}})")
    type_names = {v: k for k, v in (data.get("question_type") or {}).items()}
    return [
        {
            "id": str(q["question_id"]),
            "answer": q["answer"],
            "category": type_names.get(q.get("question_type_id"), q.get("question_type_id")),
            "data_type": q.get("data_type"),
        }
        for q in data["questions"]
    ]


@key_loader("SEED answer key")
def _seed_key(path):
    return simple_key(path, _seed_records)


@register_scorer("seed", "SEED", aliases=("seed-bench",), options=("data_type",))
def score_seed(answers_path, annotation_path, *, missing="official", data_type=None) -> dict:
    records, answer_key = _seed_key(annotation_path)
    if data_type is not None and not any(r.get("data_type") == data_type for r in records):
        raise ScoringError(f"{annotation_path}: no questions with data_type {data_type!r}")
    pairs, counts = pair(
        answers_path,
        annotation_path,
        records,
        answer_key,
        missing_rule(missing, official="wrong"),  # LLaVA's eval_single counts a missing question wrong
        keep=None if data_type is None else lambda r: r.get("data_type") == data_type,
    )
    summary = accuracy_summary(
        "seed",
        pairs,
        counts,
        lambda r, text: text == r["answer"],
        "accuracy (%)" + (f", {data_type} questions" if data_type else ""),
        data_type=data_type or "all",
    )
    for kind in ("image", "video"):
        subset = [output(a) == r["answer"] for r, a in pairs if r.get("data_type") == kind]
        if subset:
            summary["metrics"][f"accuracy_{kind}"] = pct(sum(subset), len(subset))
    return summary
