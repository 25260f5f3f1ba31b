"""What every scorer shares: the registry it joins (`register_scorer`), matching answers to key
records, the missing-answer rule, and the summary dict.

Registry
--------
Each scorer registers itself where it is defined, as lm-eval's task registry does::

    @register_scorer("sqa", "SQA-I", aliases=("scienceqa", ...), extra_file="pid_splits.json", options=("split",))
    def score_sqa(answers_path, annotation_path, *, missing="official", extra_file=None, split="test"): ...

``name`` is the bench's one name (what ``voco score`` takes and summaries carry), ``display_name``
its table heading, ``aliases`` other names it is known by, ``extra_file`` what the bench's extra
file is (``voco score --extra-file``; None: the bench takes none, and one given is refused here,
not by each scorer) and ``options`` its further keyword options (``voco score --<name>-<option>``).

Missing answers, bad ids
------------------------
An answer whose question is not in the key raises ScoringError, so does a question answered twice.
A key question without an answer is handled as the benchmark's official script handles it
(``missing="official"``, the default), and its count is always reported (``n_missing``, a warning):

- POPE, TextVQA, ScienceQA-IMG: scored over the answers present (LLaVA's ``eval_pope.py`` zips the
  answers it has with the labels, ``eval_textvqa.py`` scores the answer lines, ``eval_science_qa.py``
  counts a missing problem as text-only, since its prompt has no ``<image>``);
- the others: scored wrong (the VQAv2 submission sends "" for it, SEED's script counts it wrong;
  GQA's ``eval.py`` and MME's ``calculation.py`` stop on it, so wrong is the number a complete
  file with a useless answer would get).

``missing="strict"`` scores every missing answer wrong (POPE: the opposite of the label, so it is
neither a "yes" nor a "no" that happens to be right); ``missing="answered"`` scores only answered
questions everywhere. Outputs are ``strip()``-ed before parsing (the official scripts do not strip,
LLaVA's generators already strip theirs, so this differs only on hand-made files: "yes " is right
here and wrong there).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..answers import AnswerKey, ScoringError, ScoringWarning, load_answers

MISSING_RULES = ("official", "strict", "answered")


@dataclass(frozen=True)
class Scorer:
    name: str
    display_name: str
    function: Callable[..., dict]  # (answers_path, annotation_path, *, missing, [extra_file], **options) -> summary
    aliases: tuple[str, ...] = ()
    extra_file: str | None = None  # what the bench's extra file is; None: it takes none
    options: tuple[str, ...] = ()


SCORERS: dict[str, Scorer] = {}  # name -> scorer, in registration order


def register_scorer(
    name: str, display_name: str, aliases: tuple[str, ...] = (), extra_file: str | None = None, options=()
):
    """Decorator: add the function to ``SCORERS`` under ``name`` (see the module docstring)."""

    def add(function: Callable[..., dict]) -> Callable[..., dict]:
        known = {n for s in SCORERS.values() for n in (s.name, *s.aliases)}
        if {name, *aliases} & known:
            raise ValueError(f"scorer {name!r}: name or alias {sorted({name, *aliases} & known)} already registered")
        SCORERS[name] = Scorer(name, display_name, function, tuple(aliases), extra_file, tuple(options))
        return function

    return add


def missing_rule(missing: str, official: str) -> str:
    """ "wrong" or "skip": what a missing answer counts as under ``missing`` for a bench whose
    official script does ``official``."""
    if missing not in MISSING_RULES:
        raise ScoringError(f"missing={missing!r}: expected one of {', '.join(MISSING_RULES)}")
    return {"official": official, "strict": "wrong", "answered": "skip"}[missing]


def output(answer: dict | None) -> str | None:
    """The stripped model output of a matched answer; None for a missing one."""
    return None if answer is None else answer["text"].strip()


def pair(
    answers_path,
    annotation_path,
    records: list[dict],
    answer_key: AnswerKey,
    missing: str,
    *,
    answers: list[dict] | None = None,
    where: str | None = None,
    keep: Callable[[dict], bool] | None = None,
    repeated_keys: bool = False,
) -> tuple[list[tuple[dict, dict | None]], dict]:
    """Match the answers of ``answers_path`` to the key records read from ``annotation_path``.
    Returns [(record, answer or None)] in key order, and counts.

    ``missing`` is "wrong" (missing answers are kept, as None) or "skip" (left out). ``answers``: the
    file's answers when the scorer read them already; ``where``: how errors name the key (default
    the annotation path). Records failing ``keep`` may be answered but are neither scored nor
    counted. ``repeated_keys``: records may share a key (an official script that collapses duplicate
    questions); its answers fill them in order.
    """
    answers = load_answers(answers_path) if answers is None else answers
    where = str(annotation_path) if where is None else where
    index: dict[Hashable, list[dict]] = defaultdict(list)
    for r in records:
        if index[r["key"]] and not repeated_keys:
            raise ScoringError(f"{where}: question {r['id']!r} appears twice in the answer key")
        index[r["key"]].append(r)
    found: dict[int, dict] = {}  # id(record) -> answer
    first_line: dict[Hashable, int] = {}
    for a in answers:
        key = answer_key(a)
        if key is None or key not in index:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is not in the answer key ({where})"
            )
        free = [r for r in index[key] if id(r) not in found]
        if not free:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is answered "
                f"twice (first on line {first_line[key]})"
            )
        found[id(free[0])] = a
        first_line.setdefault(key, a["_line"])
    records = [r for r in records if keep is None or keep(r)]
    pairs = [(r, found.get(id(r))) for r in records]
    n_missing = sum(a is None for _, a in pairs)
    if missing == "skip":
        pairs = [(r, a) for r, a in pairs if a is not None]
    if n_missing:
        how = "left out of the score" if missing == "skip" else "scored as wrong"
        warnings.warn(
            f"{answers_path}: {n_missing} of {len(records)} questions have no answer; they are {how}",
            ScoringWarning,
            stacklevel=3,
        )
    if not any(a is not None for _, a in pairs):
        raise ScoringError(f"{answers_path}: nothing to score (no answered question in {where})")
    counts = {
        "n_questions": len(records),
        "n_answered": len(records) - n_missing,
        "n_missing": n_missing,
        "n_scored": len(pairs),
        "missing_as": missing,
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
    """Mean of per-question scores (0..1) overall and per category, in percent; ``score_fn(record,
    output)`` scores an answered question, a missing one scores 0."""
    total, by_category = 0.0, defaultdict(lambda: [0.0, 0])
    for r, answer in pairs:
        s = 0.0 if answer is None else float(score_fn(r, output(answer)))
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
