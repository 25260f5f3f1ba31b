"""The benchmark scorers, one module per benchmark, each registering itself (``base.register_scorer``:
name, display name, aliases, extra file, options) in ``SCORERS``; ``score`` runs one.

Each ``score_<bench>(answers_path, annotation_path, *, missing="official", ...)`` re-implements (does
not copy) the official rule; its module says which and how the parse goes. ``score()`` returns a
JSON-able dict; ``"score"`` is the paper's headline number on the paper's scale: POPE F1 (%)
averaged over its categories; MME perception total (sum of acc + acc+ over the 10 perception
subtasks, 0-2000); GQA / VQAv2 / TextVQA / ScienceQA-IMG / MMBench (circular) / SEED accuracy in
%. Details: ``metrics`` (overall), ``categories`` (per category/subtask/type), counts
(``n_questions``, ``n_answered``, ``n_missing``, ``n_scored``, ``missing_as``). ``missing``:
"official" (default), "strict" or "answered" -- see ``base``.
"""

from __future__ import annotations

from ..answers import ScoringError, is_generic_key, load_answer_key

# Importing a scorer module registers its scorers, in this order: the paper's columns (GQA, MMB,
# MME, POPE, SEED, SQA-I, VQAv2), then TextVQA.
from . import gqa, mmbench, mme, pope, seed, sqa, vqa
from .base import MISSING_RULES, SCORERS, Scorer
from .mme import MME_COGNITION, MME_PERCEPTION

BENCHES = tuple(SCORERS)
DISPLAY_NAMES = {name: s.display_name for name, s in SCORERS.items()}
_ALIASES = {alias: name for name, s in SCORERS.items() for alias in s.aliases}


def canonical_bench(name: str) -> str:
    """'MMB' -> 'mmbench', 'SQA-I' -> 'sqa', ...; unknown names are just lower-cased."""
    low = name.strip().lower()
    return _ALIASES.get(low, low)


# What a generic key's shape says it is for (first match wins), and which benches take each kind.
_KINDS = (
    ("VQA (annotator 'answers')", lambda rs: any(r["answers"] for r in rs), ("vqav2", "textvqa")),
    (
        "MMBench ('group' or 'options')",
        lambda rs: any(r["group"] is not None or r["options"] for r in rs),
        ("mmbench",),
    ),
    (
        "MME (MME subtask categories)",
        lambda rs: all(r["category"] in MME_PERCEPTION + MME_COGNITION for r in rs),
        ("mme",),
    ),
    (
        "POPE (categories adversarial/popular/random)",
        lambda rs: all(r["category"] in ("adversarial", "popular", "random") for r in rs),
        ("pope",),
    ),
    (
        "multiple-choice (option-letter answers)",
        lambda rs: all(len(r["answer"]) == 1 and r["answer"] in "ABCDEFGH" for r in rs),
        ("mmbench", "seed", "sqa"),
    ),
    (
        "yes/no",
        lambda rs: all(r["answer"].strip().lower() in ("yes", "no") for r in rs),
        ("pope", "mme", "gqa", "vqav2", "textvqa"),
    ),
    ("short-answer", lambda rs: True, ("gqa", "vqav2", "textvqa")),
)


def check_generic_key(bench: str, path) -> None:
    """Refuse a generic key made for another benchmark (its records' ``bench``, else its shape):
    scored as the wrong bench it would still give a number (a POPE key as GQA: 50%)."""
    if not is_generic_key(path):
        return  # the benches' own formats are told apart by their loaders
    records = load_answer_key(path)
    named = {canonical_bench(str(r["bench"])) for r in records if r["bench"] is not None}
    if named and named != {bench}:
        raise ScoringError(f"{path}: an answer key for {', '.join(sorted(named))}, not {bench}")
    if named:
        return
    kind, accepted = next((name, benches) for name, test, benches in _KINDS if test(records))
    if bench not in accepted:
        raise ScoringError(
            f'{path}: this looks like a {kind} answer key, not one for {bench} (or add "bench": "{bench}" '
            "to its records)"
        )


def scorer(bench: str) -> Scorer:
    """The registered scorer of a bench, by its name or an alias."""
    name = canonical_bench(bench)
    if name not in SCORERS:
        raise ScoringError(f"unknown benchmark {bench!r} (one of {', '.join(SCORERS)})")
    return SCORERS[name]


def score(bench: str, answers_path, annotation_path, missing: str = "official", extra_file=None, **options) -> dict:
    """Score one benchmark. ``extra_file``: for a bench that takes one (its ``Scorer.extra_file``);
    ``options``: the bench's own (sqa: split; seed: data_type)."""
    found = scorer(bench)
    if missing not in MISSING_RULES:
        raise ScoringError(f"missing={missing!r}: expected one of {', '.join(MISSING_RULES)}")
    if extra_file is not None:
        if found.extra_file is None:
            raise ScoringError(f"{found.name} takes no extra file")
        options["extra_file"] = extra_file
    check_generic_key(found.name, annotation_path)
    summary = found.function(answers_path, annotation_path, missing=missing, **options)
    summary["missing_rule"] = missing
    summary["answers_file"] = str(answers_path)
    summary["annotation_file"] = str(annotation_path)
    if extra_file:
        summary["extra_file"] = str(extra_file)
    return summary


__all__ = ["BENCHES", "DISPLAY_NAMES", "SCORERS", "Scorer", "canonical_bench", "check_generic_key", "score", "scorer"]
__all__ += ["gqa", "mmbench", "mme", "pope", "seed", "sqa", "vqa"]
