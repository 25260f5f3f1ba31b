"""MMBench: VLMEvalKit's rule-based answer matching and circular evaluation.

Parse (after strip()), as VLMEvalKit's ``can_infer`` (the step before any GPT judge): a refusal
("Cannot determine the answer", ...) is "Z" (wrong); else ".()[],:;!*#{}" become spaces and the one
option letter standing as a word is the answer ("B", "B. blue", "The answer is B"); else, failing
that (no letter, or several), the one option whose text appears in the lower-cased output ("dog"
for "B. dog"); else nothing (wrong). VLMEvalKit's ChatGPT judge, tried after this, is not
reproduced. A circular group counts as right only if every copy in it is right; the headline is the
share of right groups.

Keys: a generic key (``group`` = circular group, default the question itself; ``options``, a list
or {letter: text}, optional: without it the options are read from the answer's prompt, lines
"A. text" as LLaVA's and the toy world's prompts list them), or the MMBench TSV (columns ``index,
question, A, B, C, D, answer, category, ...``). Assumed convention (the TSVs LLaVA evaluates, e.g.
mmbench_dev_20230712.tsv): circular copies are separate rows whose ``index`` differ by multiples of
1,000,000, so ``index % 1e6`` is the group. Answers from LLaVA's ``--all-rounds`` (``round_id`` r,
options rotated left r times) are scored against the correspondingly rotated gold and options, and
join the row's group.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict

from ..answers import ScoringError, generic_matching, is_generic_key, key_loader, load_answer_key, load_answers
from .base import missing_rule, output, pair, pct, register_scorer, summary

# VLMEvalKit's refusals: answered "Z", which is never right and stops the option-text match
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_OPTION_LINE = re.compile(r"^([A-Z])\. (.+)$", re.MULTILINE)


def mmbench_letter(text: str, options: dict[str, str] | str = "ABCD") -> str | None:
    """VLMEvalKit's can_infer: the option letter, else the option text (module docstring).
    ``options``: {letter: option text}, or just the letters (no text match then)."""
    options = dict.fromkeys(options, "") if isinstance(options, str) else options
    if "Failed to obtain answer via API" not in text:
        if any(refusal in text for refusal in _REFUSALS):
            return "Z"
        words = text
        for ch in ".()[],:;!*#{}":
            words = words.replace(ch, " ")
        words = set(words.split())
        hits = [letter for letter in options if letter in words]
        if len(hits) == 1:
            return hits[0]
        if not hits and "Z" in words:
            return "Z"
    lower = text.lower()
    found = [letter for letter, option in options.items() if option and str(option).lower() in lower]
    return found[0] if len(found) == 1 else None


def prompt_options(prompt: str) -> dict[str, str]:
    """The options a prompt lists, one "A. text" line each."""
    return dict(_OPTION_LINE.findall(prompt or ""))


def _is_none(value) -> bool:
    return value is None or str(value).strip().lower() in ("", "nan", "none")


def read_tsv(path) -> list[dict]:
    """The rows of an MMBench TSV (columns index, question, A, B, ..., answer, ...)."""
    old_limit = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # rows carry base64 images
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    finally:
        csv.field_size_limit(old_limit)
    if not rows or not {"index", "A", "B"} <= rows[0].keys():
        raise ScoringError(f"{path}: expected an MMBench TSV with columns index, A, B, ..., answer")
    return rows


@key_loader("MMBench answer key")
def _mmbench_key(path, answers):
    if is_generic_key(path):
        if any(int(a.get("round_id") or 0) for a in answers):
            raise ScoringError(f"{path}: answers with round_id > 0 (--all-rounds) need the MMBench TSV")
        records = load_answer_key(path)
        for r in records:
            if len(r["answer"]) != 1 or r["answer"] not in "ABCDEFGH":
                raise ScoringError(f"{path}:{r['_line']}: gold {r['answer']!r} is not an option letter")
            options = r.get("options")
            if isinstance(options, list):
                options = dict(zip("ABCDEFGH", options))
            if options is not None and not (isinstance(options, dict) and r["answer"] in options):
                raise ScoringError(f"{path}:{r['_line']}: 'options' must be a list or {{letter: text}} with the gold")
            r["options"] = options  # None: from the answer's prompt
            r["group"] = str(r["group"]) if r["group"] is not None else r["id"]
        return records, generic_matching(records, path)

    rows = read_tsv(path)
    if "answer" not in rows[0]:
        raise ScoringError(f"{path}: an MMBench TSV without an 'answer' column (a test split) cannot be scored locally")
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
        texts = [row[letter] for letter in "ABCD"[:n_options]]
        for r in range(min(n_rounds, n_options)):  # round r shows the options rotated left r times
            records.append(
                {
                    "id": str(index),
                    "key": (str(index), r),
                    "options": dict(zip("ABCD", texts[r:] + texts[:r])),
                    "answer": "ABCD"[("ABCD".index(gold) - r) % n_options],
                    "group": str(index % 1_000_000),
                    "category": row.get("category"),
                }
            )
    return records, lambda a: (str(a["question_id"]), int(a.get("round_id") or 0))


@register_scorer("mmbench", "MMB", aliases=("mmb", "mmbench-en"))
def score_mmbench(answers_path, annotation_path, *, missing="official") -> dict:
    answers = load_answers(answers_path)
    records, answer_key = _mmbench_key(annotation_path, answers)
    # a row without a prediction is wrong on the MMBench server
    missing = missing_rule(missing, official="wrong")
    pairs, counts = pair(answers_path, annotation_path, records, answer_key, missing, answers=answers)
    groups: dict[str, list] = {}
    for r, answer in pairs:
        options = r["options"] if r["options"] is not None else prompt_options(answer and answer.get("prompt"))
        right = answer is not None and mmbench_letter(output(answer), options or "ABCD") == r["answer"]
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
