"""GQA, as LLaVA's ``convert_gqa_for_eval.py`` + GQA's ``eval.py``: exact match after
``text.rstrip('.').lower()`` (no other normalisation).

Keys: a generic key, or the questions JSON (``{question_id: {"answer": ...}}``, e.g.
testdev_balanced_questions.json); the reporting category is ``types.structural``. As ``eval.py``,
only questions with ``isBalanced`` true are scored and need an answer (an answer to another is
read and left out); a hand-made questions JSON without ``isBalanced`` has every question scored.
The rule is taken from the ``eval.py`` GQA distributes, as vendored by SHI-Labs/VCoder at
playground/data/eval/gqa/data/eval/eval.py (where LLaVA's scripts/v1_5/eval/gqa.sh runs it):
``if question["isBalanced"]:`` around the accuracy, and a missing prediction is an error only
``if ... questions[qid]["isBalanced"]``.
"""

from __future__ import annotations

from ..answers import ScoringError, key_loader, simple_key
from .base import accuracy_summary, missing_rule, pair, register_scorer


def gqa_prediction(text: str) -> str:
    return text.rstrip(".").lower()


def _gqa_records(data, path) -> list[dict]:
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "answer" in v for v in data.values()):
        raise ScoringError(f"{path}: expected GQA questions JSON ({{question_id: {{'answer': ...}}}})")
    return [
        {
            "id": str(qid),
            "answer": q["answer"],
            "category": (q.get("types") or {}).get("structural"),
            "balanced": bool(q.get("isBalanced", True)),
        }
        for qid, q in data.items()
    ]


@key_loader("GQA answer key")
def _gqa_key(path):
    return simple_key(path, _gqa_records)


def gqa_scored(record: dict) -> bool:
    """Whether eval.py scores a key record: the balanced questions only (isBalanced; a key without
    the field is all balanced)."""
    return record.get("balanced", True)


@register_scorer("gqa", "GQA")
def score_gqa(answers_path, annotation_path, *, missing="official") -> dict:
    records, answer_key = _gqa_key(annotation_path)
    # GQA's eval.py stops on a question without a prediction; wrong is what a blank one scores.
    missing = missing_rule(missing, official="wrong")
    pairs, counts = pair(answers_path, annotation_path, records, answer_key, missing, keep=gqa_scored)
    # GQA golds are lower-case already; lower-casing them only matters for hand-made keys.
    return accuracy_summary("gqa", pairs, counts, lambda r, text: gqa_prediction(text) == r["answer"].lower())
