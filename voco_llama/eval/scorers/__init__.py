"""The benchmark scorers, one module per benchmark, behind one registry (``SCORERS``, ``score``).

Each ``score_<bench>(answers_path, annotation_path, *, extra_file=None, answered_only=False, ...)``
re-implements (does not copy) the official rule; its module says which and how the parse goes.
``score()`` returns a JSON-able dict; ``"score"`` is the paper's headline number on the paper's
scale: POPE F1 (%) averaged over its categories; MME perception total (sum of acc + acc+ over the
10 perception subtasks, 0-2000); GQA / VQAv2 / TextVQA / ScienceQA-IMG / MMBench (circular) /
SEED accuracy in %. Details: ``metrics`` (overall), ``categories`` (per category/subtask/type),
counts (``n_questions``, ``n_answered``, ``n_missing``, ``n_scored``, ``answered_only``).
"""

from __future__ import annotations

from ..answers import ScoringError
from .gqa import score_gqa
from .mmbench import score_mmbench
from .mme import score_mme
from .pope import score_pope
from .seed import score_seed
from .sqa import score_sqa
from .vqa import score_textvqa, score_vqav2

BENCHES = ("gqa", "mmbench", "mme", "pope", "seed", "sqa", "vqav2", "textvqa")  # paper order first
DISPLAY_NAMES = {
    "gqa": "GQA",
    "mmbench": "MMB",
    "mme": "MME",
    "pope": "POPE",
    "seed": "SEED",
    "sqa": "SQA-I",
    "vqav2": "VQAv2",
    "textvqa": "TextVQA",
}
_ALIASES = {
    "mmb": "mmbench",
    "mmbench-en": "mmbench",
    "mme-p": "mme",
    "sqa-i": "sqa",
    "sqa_i": "sqa",
    "sqa-img": "sqa",
    "scienceqa": "sqa",
    "scienceqa-img": "sqa",
    "vqa-v2": "vqav2",
    "vqa_v2": "vqav2",
    "seed-bench": "seed",
    "text-vqa": "textvqa",
}

SCORERS = {
    "pope": score_pope,
    "mme": score_mme,
    "gqa": score_gqa,
    "vqav2": score_vqav2,
    "textvqa": score_textvqa,
    "sqa": score_sqa,
    "mmbench": score_mmbench,
    "seed": score_seed,
}


def canonical_bench(name: str) -> str:
    """'MMB' -> 'mmbench', 'SQA-I' -> 'sqa', ...; unknown names are just lower-cased."""
    low = name.strip().lower()
    return _ALIASES.get(low, low)


def score(bench: str, answers_path, annotation_path, **options) -> dict:
    """Score one benchmark. Options: extra_file, answered_only; sqa: split; seed: data_type."""
    name = canonical_bench(bench)
    if name not in SCORERS:
        raise ScoringError(f"unknown benchmark {bench!r} (one of {', '.join(SCORERS)})")
    summary = SCORERS[name](answers_path, annotation_path, **options)
    summary["answers_file"] = str(answers_path)
    summary["annotation_file"] = str(annotation_path)
    if options.get("extra_file"):
        summary["extra_file"] = str(options["extra_file"])
    return summary
