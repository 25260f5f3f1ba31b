"""POPE, as LLaVA's ``llava/eval/eval_pope.py``: F1 per category, the headline their mean.

Parse (after strip()): text before the first ".", commas dropped, split on " "; a word "No", "not"
or "no" -> no, anything else -> yes (case-sensitive, so "Not really" -> yes, exactly as LLaVA).

Keys: a generic key, or a ``coco_pope_{adversarial,popular,random}.json`` label file (JSONL
``question_id, image, text, label``), or a directory of them (LLaVA's ``--annotation-dir``). The
category is the record's ``category`` or the file name's part after ``_pope_``. The label files all
number their questions from 1 while LLaVA's ``llava_pope_test.jsonl`` renumbers them (random from
10000001, ...), so with LLaVA answers pass that question file as ``extra_file``: answers are then
matched through it by (category, image, question text). (LLaVA itself zips answers and labels by
position.)
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from ..answers import (
    ScoringError,
    generic_matching,
    is_generic_key,
    iter_jsonl,
    key_loader,
    load_answer_key,
    question_text,
)
from .base import missing_rule, output, pair, pct, register_scorer, summary, yes_no_gold


def pope_yes_no(text: str) -> str:
    """LLaVA's POPE parse: first sentence, commas dropped, split on spaces; No/not/no -> "no".

    Case-sensitive as in LLaVA: "Not really" has no such word ("Not" is not "not") -> "yes".
    """
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if {"No", "not", "no"} & set(words) else "yes"


@key_loader("POPE answer key")
def _pope_key(path, extra_file):
    if is_generic_key(path):
        records = load_answer_key(path)
        for r in records:
            r["answer"] = yes_no_gold(r["answer"], f"{path}:{r['_line']}")
            r["category"] = r["category"] or "all"
        return records, generic_matching(records, path)

    files = (
        [os.path.join(path, n) for n in sorted(os.listdir(path)) if "_pope_" in n and n.endswith(".json")]
        if os.path.isdir(path)
        else [path]
    )
    if not files:
        raise ScoringError(f"{path}: no *_pope_*.json label files in this directory")
    records = []
    for file in files:
        name = os.path.basename(file)
        file_category = name.split("_pope_", 1)[1][:-5] if "_pope_" in name else name.rsplit(".", 1)[0]
        for lineno, obj in iter_jsonl(file, tolerate_torn_tail=False):
            if "question_id" not in obj or "label" not in obj:
                raise ScoringError(f"{file}:{lineno}: a POPE label needs 'question_id' and 'label'")
            records.append(
                {
                    "id": str(obj["question_id"]),
                    "answer": yes_no_gold(obj["label"], f"{file}:{lineno}"),
                    "category": obj.get("category") or file_category,
                    "image": obj.get("image"),
                    "question": obj.get("text") or "",
                    "_line": lineno,
                }
            )

    if extra_file is None:
        if len({r["id"] for r in records}) < len(records):
            raise ScoringError(
                f"{path}: question ids repeat across the label files; pass LLaVA's POPE "
                "question file (llava_pope_test.jsonl) as --extra-file to match answers "
                "by category, image and question"
            )
        for r in records:
            r["key"] = r["id"]
        return records, lambda a: str(a["question_id"])

    # Match through LLaVA's question file: its id -> (category, image, question text).
    for r in records:
        r["key"] = (r["category"], r["image"], question_text(r["question"]))
    questions = {}
    for lineno, q in iter_jsonl(extra_file, tolerate_torn_tail=False):
        if not {"question_id", "category", "image", "text"} <= q.keys():
            raise ScoringError(f"{extra_file}:{lineno}: a question needs question_id, category, image, text")
        questions[str(q["question_id"])] = (q["category"], q["image"], question_text(q["text"]))
    return records, lambda a: questions.get(str(a["question_id"]))


@register_scorer("pope", "POPE", extra_file="LLaVA's llava_pope_test.jsonl")
def score_pope(answers_path, annotation_path, *, missing="official", extra_file=None) -> dict:
    records, answer_key = _pope_key(annotation_path, extra_file)
    where = f"{annotation_path}" + (f" via {extra_file}" if extra_file else "")
    # LLaVA zips the answers it has with the labels: the official score is over the answers present.
    missing = missing_rule(missing, official="skip")
    pairs, counts = pair(answers_path, annotation_path, records, answer_key, missing, where=where)
    by_category = defaultdict(Counter)
    for r, answer in pairs:
        gold_yes = r["answer"] == "yes"
        # a missing answer scored wrong is the opposite of the label (not LLaVA's parse of "": "yes")
        pred_yes = not gold_yes if answer is None else pope_yes_no(output(answer)) == "yes"
        outcome = ("TP" if pred_yes else "FN") if gold_yes else ("FP" if pred_yes else "TN")
        by_category[r["category"]][outcome] += 1
    categories = {}
    for name in sorted(by_category):
        c = by_category[name]
        tp, fp, tn, fn = c["TP"], c["FP"], c["TN"], c["FN"]
        n = tp + fp + tn + fn
        precision, recall = pct(tp, tp + fp), pct(tp, tp + fn)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        categories[name] = {
            "n": n,
            "accuracy": pct(tp + tn, n),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "yes_ratio": pct(tp + fp, n),
            "TP": tp,
            "FP": fp,
            "TN": tn,
            "FN": fn,
        }
    metrics = {
        f"mean_{k}": sum(c[k] for c in categories.values()) / len(categories)
        for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")
    }
    return summary("pope", metrics["mean_f1"], "F1 (%), mean over categories", counts, metrics, categories)
