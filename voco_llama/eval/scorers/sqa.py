"""ScienceQA-IMG, as LLaVA-1.5's ``llava/eval/eval_science_qa.py``.

Parse (after strip()): exactly a letter, or "X. ...", or exactly one "The answer is X<any char>";
the letter must be within the question's choices. "B." alone is wrong, as in LLaVA. The headline
is the accuracy over the image questions.

Keys: a generic key (every question counts as an image question), or ScienceQA ``problems.json``;
the split (option ``split``, default ``"test"``) comes from ``pid_splits.json`` given as
``extra_file``, else next to problems.json, else each problem's ``split`` field. Gold letter =
"ABCDE"[answer]. Image questions (``image`` set) make the score.
"""

from __future__ import annotations

import os
import re

from ..answers import (
    ScoringError,
    generic_matching,
    is_generic_key,
    key_loader,
    load_answer_key,
    read_json,
)
from .base import accuracy_summary, missing_rule, output, pair, pct, register_scorer

SQA_OPTIONS = ["A", "B", "C", "D", "E"]


def sqa_letter(text: str, n_choices: int = len(SQA_OPTIONS)) -> str | None:
    """ "B" / "B. blue" / exactly one "The answer is B." (any character after the letter); None if
    unparsed or beyond the question's choices. "B." alone does not parse, as in LLaVA."""
    if text in SQA_OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in SQA_OPTIONS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = re.findall(r"The answer is ([A-Z]).", text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter in SQA_OPTIONS[:n_choices] else None


@key_loader("ScienceQA answer key")
def _sqa_key(path, extra_file, split):
    if is_generic_key(path):
        records = load_answer_key(path)
        for r in records:
            r.update(n_choices=len(SQA_OPTIONS), has_image=True)
        return records, generic_matching(records, path)
    problems = read_json(path)
    if not isinstance(problems, dict) or not all(
        isinstance(p, dict) and "answer" in p and "choices" in p for p in problems.values()
    ):
        raise ScoringError(f"{path}: expected ScienceQA problems.json ({{pid: {{'choices', 'answer', ...}}}})")
    splits_file = extra_file or os.path.join(os.path.dirname(os.path.abspath(path)), "pid_splits.json")
    if extra_file or os.path.exists(splits_file):
        splits = read_json(splits_file)
        if split not in splits:
            raise ScoringError(f"{splits_file}: no split {split!r}")
        pids = [str(p) for p in splits[split]]
    else:
        pids = [pid for pid, p in problems.items() if p.get("split") == split]
    records = []
    for pid in pids:
        if pid not in problems:
            raise ScoringError(f"{splits_file}: problem {pid!r} is not in {path}")
        p = problems[pid]
        records.append(
            {
                "id": pid,
                "key": pid,
                "answer": SQA_OPTIONS[p["answer"]],
                "n_choices": len(p["choices"]),
                "has_image": bool(p.get("image")),
                "category": p.get("subject"),
            }
        )
    return records, lambda a: str(a["question_id"])


@register_scorer(
    "sqa",
    "SQA-I",
    aliases=("sqa-i", "sqa_i", "sqa-img", "scienceqa", "scienceqa-img"),
    extra_file="pid_splits.json",
    options=("split",),
)
def score_sqa(answers_path, annotation_path, *, missing="official", extra_file=None, split="test") -> dict:
    records, answer_key = _sqa_key(annotation_path, extra_file, split)
    # LLaVA's eval_science_qa.py counts a missing problem wrong in "Accuracy" but, its prompt having
    # no <image>, leaves it out of "IMG-Accuracy" (the headline): both are kept here.
    rule = missing_rule(missing, official="skip")
    pairs, counts = pair(
        answers_path, annotation_path, records, answer_key, "skip" if missing == "answered" else "wrong"
    )

    def right(r, text):
        return sqa_letter(text, r["n_choices"]) == r["answer"]

    image_pairs = [(r, a) for r, a in pairs if r["has_image"] and (a is not None or rule == "wrong")]
    if not image_pairs:
        raise ScoringError(f"{annotation_path}: no answered image questions to score in split {split!r}")
    summary = accuracy_summary("sqa", image_pairs, counts, right, "IMG accuracy (%)")
    summary["n_scored"] = len(image_pairs)
    summary["metrics"]["n_image_questions"] = len(image_pairs)
    summary["metrics"]["accuracy_all"] = pct(sum(a is not None and right(r, output(a)) for r, a in pairs), len(pairs))
    return summary
