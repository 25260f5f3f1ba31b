"""Reading answer files and answer keys: the part every benchmark scorer shares.

Answer files
------------
LLaVA answer JSONL (``model_vqa_loader`` style), one object per line::

    {"question_id": ..., "prompt": "...", "text": "<model output>", "answer_id": ..., "model_id": ..., "metadata": {}}

Only ``question_id`` and ``text`` are required; ``prompt`` is read where LLaVA's scripts read it
(MME and TextVQA matching, repeated question ids) and ``round_id`` for MMBench ``--all-rounds``
output. Blank lines are skipped. An unparseable *final* line (a generator killed mid-write) is
ignored with a ``ScoringWarning``; any other bad line raises ``ScoringError`` (an ``InputError``)
naming the file and line. Question ids are compared as strings, so ``1`` and ``"1"`` are the same
question.

The generic answer key
----------------------
Every bench accepts it: JSONL, one object per line, recognised by its first line having both
``question_id`` and ``answer``::

    {"question_id": "q1", "answer": "yes", "category": "random", "image": "img1.jpg",
     "group": "g1", "answers": ["..."] * 10, "question": "Is there a cat?"}

- ``question_id`` (required) and ``answer`` (required): the gold string -- a word/phrase (GQA, VQA),
  ``yes``/``no`` (POPE, MME, case-insensitive) or an option letter (ScienceQA, MMBench, SEED).
- ``answers``: the annotators' answers for VQAv2/TextVQA (normally 10); without it the gold is
  ``[answer] * 10`` (so a match scores 1, anything else 0).
- ``category``: POPE category (default ``"all"``), MME subtask (required), SEED question type,
  MMBench / GQA / VQA reporting category.
- ``image``: MME only, required -- the questions of one image within a subtask form its acc+ pair.
- ``group``: MMBench circular group (default: the question itself); ``options``: MMBench option
  texts (a list in letter order, or {letter: text}) for matching an answer given as the text.
- ``bench``: optional; a key naming another benchmark is refused. Without it a key is refused when
  its shape says it belongs to another one (``scorers.check_generic_key``).
- ``question``: needed only when a ``question_id`` is used by more than one record (as LLaVA's MME
  answers reuse ``"subtask/image.png"``); such records are told apart by comparing ``question``
  with the answer's ``prompt`` (case, whitespace, ``<image>`` and the standard instructions such as
  "Answer the question using a single word or phrase." / "Please answer yes or no." ignored).

The benchmarks' own key formats are read by their scorers (``scorers/<bench>.py``).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Iterator

from ..core.errors import InputError

INSTRUCTIONS = (
    "Answer the question using a single word or phrase.",
    "Please answer yes or no.",
    "Answer with the option's letter from the given choices directly.",
)

AnswerKey = Callable[[dict], Hashable]


class ScoringError(InputError):
    """Unusable input: a bad file, record or id. The CLI prints it and exits with 2."""


class ScoringWarning(UserWarning):
    """Something was tolerated (torn final line, unanswered questions)."""


def read_json(path):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ScoringError(f"{path}: not valid JSON ({err})") from None


def iter_jsonl(path, *, tolerate_torn_tail: bool) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line."""
    with open(path, encoding="utf-8") as f:
        numbered = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    for pos, (lineno, line) in enumerate(numbered):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if tolerate_torn_tail and pos == len(numbered) - 1:
                warnings.warn(
                    f"{path}:{lineno}: ignoring the unparseable final line (torn write?)", ScoringWarning, stacklevel=2
                )
                return
            raise ScoringError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ScoringError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, obj


def load_answers(path) -> list[dict]:
    """A LLaVA answer JSONL as a list of dicts, each with its line number under ``_line``."""
    answers = []
    for lineno, rec in iter_jsonl(path, tolerate_torn_tail=True):
        if "question_id" not in rec or not isinstance(rec.get("text"), str):
            raise ScoringError(f"{path}:{lineno}: an answer needs a 'question_id' and a string 'text'")
        answers.append({**rec, "_line": lineno})
    return answers


def is_generic_key(path) -> bool:
    """True if the first non-blank line of ``path`` is a JSON object with question_id and answer."""
    if os.path.isdir(path):
        return False
    with open(path, "rb") as f:
        for raw in iter(lambda: f.readline(1 << 20), b""):
            if raw.strip():
                try:
                    first = json.loads(raw)
                except ValueError:  # a pretty-printed or huge one-line JSON document
                    return False
                return isinstance(first, dict) and "question_id" in first and "answer" in first
    return False


def load_answer_key(path) -> list[dict]:
    """The generic JSONL key, normalised: one dict per question (see the module docstring)."""
    records = []
    for lineno, obj in iter_jsonl(path, tolerate_torn_tail=False):
        if "question_id" not in obj or not isinstance(obj.get("answer"), str):
            raise ScoringError(f"{path}:{lineno}: a key record needs 'question_id' and a string 'answer'")
        answers = obj.get("answers")
        if answers is not None and not (
            isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)
        ):
            raise ScoringError(f"{path}:{lineno}: 'answers' must be a non-empty list of strings")
        records.append(
            {
                "id": str(obj["question_id"]),
                "answer": obj["answer"],
                "answers": answers,
                "category": obj.get("category"),
                "image": obj.get("image"),
                "group": obj.get("group"),
                "question": obj.get("question"),
                "options": obj.get("options"),
                "bench": obj.get("bench"),
                "_line": lineno,
            }
        )
    if not records:
        raise ScoringError(f"{path}: the answer key is empty")
    return records


def question_text(text: str) -> str:
    """A question without <image>, the standard instructions, case and whitespace differences."""
    text = text.replace("<image>", " ")
    for phrase in INSTRUCTIONS:
        text = text.replace(phrase, " ")
    return " ".join(text.split()).lower()


def key_loader(what: str):
    """Decorate a ``loader(path, ...) -> (records, answer_key)``: malformed content -> ScoringError."""

    def decorate(load):
        @functools.wraps(load)
        def loader(path, *args):
            try:
                return load(path, *args)
            except ScoringError:
                raise
            except (KeyError, TypeError, IndexError, AttributeError, ValueError) as err:
                raise ScoringError(f"{path}: not a valid {what} ({type(err).__name__}: {err})") from None

        return loader

    return decorate


def generic_matching(records: list[dict], path) -> AnswerKey:
    """Set each record's match ``key``; return the function giving an answer's key."""
    counts = Counter(r["id"] for r in records)
    shared = {qid for qid, n in counts.items() if n > 1}
    for r in records:
        if r["id"] in shared:
            if not r["question"]:
                raise ScoringError(
                    f"{path}:{r['_line']}: question_id {r['id']!r} is used more than once; "
                    "give each such record a 'question' to tell them apart"
                )
            r["key"] = (r["id"], question_text(r["question"]))
        else:
            r["key"] = r["id"]

    def answer_key(answer):
        qid = str(answer["question_id"])
        return (qid, question_text(answer.get("prompt") or "")) if qid in shared else qid

    return answer_key


def simple_key(path, load_official: Callable[[object, object], list[dict]]):
    """A generic key, or ``load_official(parsed JSON, path)`` -> records keyed by question id."""
    if is_generic_key(path):
        records = load_answer_key(path)
        return records, generic_matching(records, path)
    records = load_official(read_json(path), path)
    for r in records:
        r["key"] = r["id"]
    return records, lambda a: str(a["question_id"])
