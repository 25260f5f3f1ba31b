"""MME, as LLaVA's ``convert_answer_to_mme.py`` + the MME toolkit's ``eval_tool/calculation.py``.

Parse (after strip()): lower-case; "yes"/"no", else "yes" or "no" within the first 4 characters,
else "other" (wrong). Per subtask: acc (questions) + acc+ (images whose questions are all right);
the headline is the perception total, the sum over the 10 perception subtasks (0-2000).

Keys: a generic key (``category`` = subtask and ``image`` required), or the
``MME_Benchmark_release_version`` directory (``<subtask>/questions_answers_YN/<image>.txt`` or
``<subtask>/<image>.txt``, lines ``question<TAB>Yes|No``), matched like LLaVA's
``convert_answer_to_mme.py``: subtask and image from the answer's ``question_id``
(``"artwork/images/10002.jpg"``), the question from its ``prompt``.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from ..answers import (
    ScoringError,
    generic_matching,
    is_generic_key,
    key_loader,
    load_answer_key,
    question_text,
)
from .base import missing_rule, output, pair, pct, register_scorer, summary, yes_no_gold

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_yes_no(text: str) -> str:
    """MME's parse: lower-case; exactly yes/no, else "yes" / "no" found in the first 4 characters, else "other"."""
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def _mme_check_subtask(name, where):
    if name not in MME_PERCEPTION + MME_COGNITION:
        raise ScoringError(
            f"{where}: {name!r} is not an MME subtask (one of {', '.join(MME_PERCEPTION + MME_COGNITION)})"
        )


@key_loader("MME answer key")
def _mme_key(path):
    if is_generic_key(path):
        records = load_answer_key(path)
        for r in records:
            where = f"{path}:{r['_line']}"
            r["answer"] = yes_no_gold(r["answer"], where)
            if not r["category"] or not r["image"]:
                raise ScoringError(f"{where}: an MME key record needs 'category' (subtask) and 'image'")
            _mme_check_subtask(r["category"], where)
            r["image"] = (r["category"], str(r["image"]))
        return records, generic_matching(records, path)

    if not os.path.isdir(path):
        raise ScoringError(f"{path}: expected a generic JSONL key or the MME_Benchmark_release_version directory")
    records = []
    for subtask in sorted(os.listdir(path)):
        subtask_dir = os.path.join(path, subtask)
        if subtask not in MME_PERCEPTION + MME_COGNITION or not os.path.isdir(subtask_dir):
            continue
        qa_dir = (
            os.path.join(subtask_dir, "questions_answers_YN")
            if os.path.isdir(os.path.join(subtask_dir, "images"))
            else subtask_dir
        )
        for name in sorted(os.listdir(qa_dir)):
            if not name.endswith(".txt"):
                continue
            file, stem = os.path.join(qa_dir, name), name[:-4]
            with open(file, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    parts = line.strip().split("\t")
                    if len(parts) != 2:
                        raise ScoringError(f"{file}:{lineno}: expected 'question<TAB>answer'")
                    question, gold = parts
                    records.append(
                        {
                            "id": f"{subtask}/{stem}",
                            "answer": yes_no_gold(gold, f"{file}:{lineno}"),
                            "category": subtask,
                            "image": (subtask, stem),
                            "key": (subtask, stem, question_text(question)),
                        }
                    )
    if not records:
        raise ScoringError(f"{path}: no MME subtask directories with question files found")

    def answer_key(a):  # "artwork/images/10002.jpg" -> ("artwork", "10002", question)
        parts = str(a["question_id"]).split("/")
        return parts[0], parts[-1].split(".")[0], question_text(a.get("prompt") or "")

    return records, answer_key


@register_scorer("mme", "MME", aliases=("mme-p",))
def score_mme(answers_path, annotation_path, *, missing="official") -> dict:
    records, answer_key = _mme_key(annotation_path)
    # MME's calculation.py needs every answer (it pairs an image's two lines); wrong is what a
    # complete file with an unusable answer scores.
    missing = missing_rule(missing, official="wrong")
    pairs, counts = pair(answers_path, annotation_path, records, answer_key, missing)
    questions = defaultdict(Counter)  # subtask -> n, correct, other
    images = defaultdict(dict)  # subtask -> image -> all questions right so far
    for r, answer in pairs:
        pred, sub = "other" if answer is None else mme_yes_no(output(answer)), r["category"]
        right = pred == r["answer"]
        questions[sub]["n"] += 1
        questions[sub]["correct"] += right
        questions[sub]["other"] += pred == "other"
        images[sub][r["image"]] = images[sub].get(r["image"], True) and right
    categories = {}
    for sub in [s for s in MME_PERCEPTION + MME_COGNITION if s in questions]:
        q, imgs = questions[sub], images[sub]
        acc, acc_plus = pct(q["correct"], q["n"]), pct(sum(imgs.values()), len(imgs))
        categories[sub] = {
            "score": acc + acc_plus,
            "acc": acc,
            "acc_plus": acc_plus,
            "n": q["n"],
            "n_images": len(imgs),
            "n_other": q["other"],
        }
    perception = sum(categories[s]["score"] for s in MME_PERCEPTION if s in categories)
    cognition = sum(categories[s]["score"] for s in MME_COGNITION if s in categories)
    absent = [s for s in MME_PERCEPTION + MME_COGNITION if s not in categories]
    metrics = {"perception": perception, "cognition": cognition, "total": perception + cognition}
    return summary(
        "mme",
        perception,
        "perception score (sum of 10 subtasks' acc + acc+, 0-2000)",
        counts,
        metrics,
        categories,
        absent_subtasks=absent,
    )
