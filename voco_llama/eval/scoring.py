"""Benchmark scoring as LLaVA-1.5's evaluation scripts do it, and the paper's compression retention.

Everything here is standard library only. The rules re-implement (they are not copies of) LLaVA's
``eval_pope.py``, the GQA ``rstrip('.').lower()`` exact match, ``m4c_evaluator.py``
(EvalAIAnswerProcessor + 10-annotator soft accuracy), ``eval_science_qa.py``, MME's
``calculation.py``, MMBench's heuristic letter matching with circular evaluation, and the SEED
exact-letter count.

Answer files
------------
LLaVA answer JSONL (``model_vqa_loader`` style), one object per line::

    {"question_id": ..., "prompt": "...", "text": "<model output>", "answer_id": ..., "model_id": ..., "metadata": {}}

Only ``question_id`` and ``text`` are required; ``prompt`` is read where LLaVA's scripts read it
(MME and TextVQA matching, repeated question ids) and ``round_id`` for MMBench ``--all-rounds``
output. Blank lines are skipped. An unparseable *final* line (a generator killed mid-write) is
ignored with a ``ScoringWarning``; any other bad line raises ``ScoringError`` (an ``InputError``)
naming the file and line. Outputs are ``strip()``-ed before parsing (LLaVA's generators already
strip theirs). Question ids are compared as strings, so ``1`` and ``"1"`` are the same question.

Answer keys (``annotation_path``; ``extra_file`` where noted)
-------------------------------------------------------------
Every bench accepts the **generic key**: JSONL, one object per line, recognised by its first line
having both ``question_id`` and ``answer``::

    {"question_id": "q1", "answer": "yes", "category": "random", "image": "img1.jpg",
     "group": "g1", "answers": ["..."] * 10, "question": "Is there a cat?"}

- ``question_id`` (required) and ``answer`` (required): the gold string -- a word/phrase (GQA, VQA),
  ``yes``/``no`` (POPE, MME, case-insensitive) or an option letter (ScienceQA, MMBench, SEED).
- ``answers``: the annotators' answers for VQAv2/TextVQA (normally 10); without it the gold is
  ``[answer] * 10`` (so a match scores 1, anything else 0).
- ``category``: POPE category (default ``"all"``), MME subtask (required; MME_PERCEPTION / MME_COGNITION),
  SEED question type, MMBench / GQA / VQA reporting category.
- ``image``: MME only, required -- the questions of one image within a subtask form its acc+ pair.
- ``group``: MMBench circular group (default: the question itself). A group counts as correct only
  if every copy in it is right.
- ``question``: needed only when a ``question_id`` is used by more than one record (as LLaVA's MME
  answers reuse ``"subtask/image.png"``); such records are told apart by comparing ``question``
  with the answer's ``prompt`` (case, whitespace, ``<image>`` and the standard instructions such as
  "Answer the question using a single word or phrase." / "Please answer yes or no." ignored).

The benchmarks' public formats are accepted as well:

- pope: a ``coco_pope_{adversarial,popular,random}.json`` label file (JSONL ``question_id, image,
  text, label``), or a directory of them (LLaVA's ``--annotation-dir``). The category is the
  record's ``category`` or the file name's part after ``_pope_``. The label files all number their
  questions from 1 while LLaVA's ``llava_pope_test.jsonl`` renumbers them (random from 10000001,
  ...), so with LLaVA answers pass that question file as ``extra_file``: answers are then matched
  through it by (category, image, question text). (LLaVA itself zips answers and labels by position.)
- mme: the ``MME_Benchmark_release_version`` directory (``<subtask>/questions_answers_YN/<image>.txt``
  or ``<subtask>/<image>.txt``, lines ``question<TAB>Yes|No``), matched like LLaVA's
  ``convert_answer_to_mme.py``: subtask and image from the answer's ``question_id``
  (``"artwork/images/10002.jpg"``), the question from its ``prompt``. Or a generic key.
- gqa: the questions JSON (``{question_id: {"answer": ...}}``, e.g. testdev_balanced_questions.json).
- vqav2: the annotation JSON (``{"annotations": [{"question_id", "answers": [{"answer"}...],
  "answer_type"}]}``); ``answer_type`` is the reporting category.
- textvqa: TextVQA_0.5.1_val.json (``{"data": [{"question_id", "image_id", "question", "answers"}]}``).
  Answers are matched by ``question_id``; failing that by (``image_id``, question from the
  ``prompt``) as LLaVA's ``eval_textvqa.py`` does (its question file uses the image id as id).
- sqa: ScienceQA ``problems.json``; the split (option ``split``, default ``"test"``) comes from
  ``pid_splits.json`` given as ``extra_file``, else next to problems.json, else each problem's
  ``split`` field. Gold letter = "ABCDE"[answer]. Image questions (``image`` set) make the score
  (with a generic key every question counts as an image question).
- mmbench: the MMBench TSV (columns ``index, question, A, B, C, D, answer, category, ...``).
  Assumed convention (the TSVs LLaVA evaluates, e.g. mmbench_dev_20230712.tsv): circular copies
  are separate rows whose ``index`` differ by multiples of 1,000,000, so ``index % 1e6`` is the
  group. Answers from LLaVA's ``--all-rounds`` (``round_id`` r, options rotated left r times) are
  scored against the correspondingly rotated gold and join the row's group.
- seed: SEED-Bench JSON (``{"questions": [{"question_id", "answer", "question_type_id",
  "data_type"}], "question_type": {name: id}}``); option ``data_type`` ("image"/"video") restricts
  the scored questions, default all (the LLaVA-1.5 paper's SEED column).

Parsing rules (per answer, after strip())
-----------------------------------------
- POPE: text before the first ".", commas dropped, split on " "; a word "No", "not" or "no" -> no,
  anything else -> yes (case-sensitive, so "Not really" -> yes, exactly as LLaVA).
- MME: lower-case; "yes"/"no", else "yes" or "no" within the first 4 characters, else "other" (wrong).
- GQA: ``text.rstrip('.').lower() == gold`` (no other normalisation).
- VQAv2/TextVQA: EvalAI normalisation of prediction and every annotator answer, then soft accuracy.
  (The VQAv2 server normalises annotator answers only when they disagree; on real data that differs
  only in corner cases.)
- ScienceQA: exactly a letter, or "X. ...", or exactly one "The answer is X<any char>"; the letter
  must be within the question's choices. "B." alone is wrong, as in LLaVA.
- MMBench: MMBench's rule-based matching -- ".()[],:;!*#{}" to spaces, and the single option letter
  standing as a word ("B", "B. blue", "The answer is B"). Its ChatGPT fallback is not reproduced.
- SEED: the stripped output must equal the gold letter ("B." is wrong), as LLaVA's script.

Missing answers, bad ids
------------------------
An answer whose question is not in the key raises ScoringError, so does a question answered twice.
A key question without an answer is counted in ``n_missing`` (with a warning) and scored as an
empty output through the official parser -- wrong everywhere, except POPE, whose parser turns
anything without a "no" word into "yes", as LLaVA's would. ``answered_only=True`` scores only the
answered questions instead.

Scores
------
``score()`` returns a JSON-able dict; ``"score"`` is the paper's headline number on the paper's
scale: POPE F1 (%) averaged over its categories; MME perception total (sum of acc + acc+ over the
10 perception subtasks, 0-2000); GQA / VQAv2 / TextVQA / ScienceQA-IMG / MMBench (circular) /
SEED accuracy in %. Details: ``metrics`` (overall), ``categories`` (per category/subtask/type),
counts. ``retention()`` implements the paper's (method - lower) / (upper - lower) per benchmark
and their mean; it is invariant to rescaling a benchmark, so MME's scale does not matter.

CLI (``register_cli``)
----------------------
``voco score BENCH --answers-file F --annotation-file A [--extra-file P] [--out S.json]`` and
``voco retention --upper U.json --lower L.json --method NAME=M.json [...] [--out R.json]``.
Handlers follow the package convention ``args.func(args) -> exit code``: 0 on success; on bad
input (missing/unreadable file, bad JSON, an answer not in the key, ...) they print one
``voco: error: ...`` line to stderr and exit 2 (cli.py). Output JSON is written atomically.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator

from ..core.errors import InputError
from ..core.files import write_json_atomic

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

_INSTRUCTIONS = (
    "Answer the question using a single word or phrase.",
    "Please answer yes or no.",
    "Answer with the option's letter from the given choices directly.",
)


class ScoringError(InputError):
    """Unusable input: a bad file, record or id. The CLI prints it and exits with 2."""


class ScoringWarning(UserWarning):
    """Something was tolerated (torn final line, unanswered questions)."""


def canonical_bench(name: str) -> str:
    """'MMB' -> 'mmbench', 'SQA-I' -> 'sqa', ...; unknown names are just lower-cased."""
    low = name.strip().lower()
    return _ALIASES.get(low, low)


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ScoringError(f"{path}: not valid JSON ({err})") from None


def _iter_jsonl(path, *, tolerate_torn_tail: bool) -> Iterator[tuple[int, dict]]:
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
    for lineno, rec in _iter_jsonl(path, tolerate_torn_tail=True):
        if "question_id" not in rec or not isinstance(rec.get("text"), str):
            raise ScoringError(f"{path}:{lineno}: an answer needs a 'question_id' and a string 'text'")
        answers.append({**rec, "_line": lineno})
    return answers


def _is_generic_key(path) -> bool:
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
    for lineno, obj in _iter_jsonl(path, tolerate_torn_tail=False):
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
                "_line": lineno,
            }
        )
    if not records:
        raise ScoringError(f"{path}: the answer key is empty")
    return records


def _question_text(text: str) -> str:
    """A question without <image>, the standard instructions, case and whitespace differences."""
    text = text.replace("<image>", " ")
    for phrase in _INSTRUCTIONS:
        text = text.replace(phrase, " ")
    return " ".join(text.split()).lower()


AnswerKey = Callable[[dict], Hashable]


def _key_loader(what: str):
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


def _generic_matching(records: list[dict], path) -> AnswerKey:
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
            r["key"] = (r["id"], _question_text(r["question"]))
        else:
            r["key"] = r["id"]

    def answer_key(answer):
        qid = str(answer["question_id"])
        return (qid, _question_text(answer.get("prompt") or "")) if qid in shared else qid

    return answer_key


def _pair(
    answers: list[dict],
    answers_path,
    records: list[dict],
    answer_key: AnswerKey,
    where: str,
    answered_only: bool,
    keep: Callable[[dict], bool] | None = None,
) -> tuple[list[tuple[dict, str]], dict]:
    """Match answers to key records. Returns [(record, stripped output)] in key order, and counts.

    Records failing ``keep`` may be answered but are neither scored nor counted.
    """
    index = {}
    for r in records:
        if r["key"] in index:
            raise ScoringError(f"{where}: question {r['id']!r} appears twice in the answer key")
        index[r["key"]] = r
    found: dict[Hashable, dict] = {}
    for a in answers:
        key = answer_key(a)
        if key is None or key not in index:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is not in the answer key ({where})"
            )
        if key in found:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is answered "
                f"twice (first on line {found[key]['_line']})"
            )
        found[key] = a
    records = [r for r in records if keep is None or keep(r)]
    pairs, missing = [], 0
    for r in records:
        if r["key"] in found:
            pairs.append((r, found[r["key"]]["text"].strip()))
        else:
            missing += 1
            if not answered_only:
                pairs.append((r, ""))
    if missing and not answered_only:
        warnings.warn(
            f"{answers_path}: {missing} of {len(records)} questions have no answer; they are scored as empty outputs",
            ScoringWarning,
            stacklevel=3,
        )
    if not pairs:
        raise ScoringError(f"{answers_path}: nothing to score (no answered question in {where})")
    counts = {
        "n_questions": len(records),
        "n_answered": len(records) - missing,
        "n_missing": missing,
        "n_scored": len(pairs),
        "answered_only": answered_only,
    }
    return pairs, counts


def _pct(num, den) -> float:
    return 100.0 * num / den if den else 0.0


def _summary(bench, score, score_name, counts, metrics, categories, **extra) -> dict:
    return {
        "bench": bench,
        "score": score,
        "score_name": score_name,
        **counts,
        "metrics": metrics,
        "categories": categories,
        **extra,
    }


def _accuracy_summary(bench, pairs, counts, score_fn, score_name="accuracy (%)", **extra) -> dict:
    """Mean of per-question scores (0..1) overall and per category, in percent."""
    total, by_category = 0.0, defaultdict(lambda: [0.0, 0])
    for r, text in pairs:
        s = float(score_fn(r, text))
        total += s
        if r.get("category") is not None:
            by_category[str(r["category"])][0] += s
            by_category[str(r["category"])][1] += 1
    accuracy = _pct(total, len(pairs))
    categories = {name: {"n": n, "accuracy": _pct(s, n)} for name, (s, n) in sorted(by_category.items())}
    return _summary(bench, accuracy, score_name, counts, {"accuracy": accuracy}, categories, **extra)


# ----------------------------------------------------------------------------------------------
# POPE (llava/eval/eval_pope.py)
# ----------------------------------------------------------------------------------------------


def pope_yes_no(text: str) -> str:
    """LLaVA's POPE parse: first sentence, commas dropped, split on spaces; No/not/no -> "no".

    Case-sensitive as in LLaVA: "Not really" has no such word ("Not" is not "not") -> "yes".
    """
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if {"No", "not", "no"} & set(words) else "yes"


def _yes_no_gold(value, where) -> str:
    gold = str(value).strip().lower()
    if gold not in ("yes", "no"):
        raise ScoringError(f"{where}: gold answer {value!r} is not yes/no")
    return gold


@_key_loader("POPE answer key")
def _pope_key(path, extra_file):
    if _is_generic_key(path):
        records = load_answer_key(path)
        for r in records:
            r["answer"] = _yes_no_gold(r["answer"], f"{path}:{r['_line']}")
            r["category"] = r["category"] or "all"
        return records, _generic_matching(records, path)

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
        for lineno, obj in _iter_jsonl(file, tolerate_torn_tail=False):
            if "question_id" not in obj or "label" not in obj:
                raise ScoringError(f"{file}:{lineno}: a POPE label needs 'question_id' and 'label'")
            records.append(
                {
                    "id": str(obj["question_id"]),
                    "answer": _yes_no_gold(obj["label"], f"{file}:{lineno}"),
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
        r["key"] = (r["category"], r["image"], _question_text(r["question"]))
    questions = {}
    for lineno, q in _iter_jsonl(extra_file, tolerate_torn_tail=False):
        if not {"question_id", "category", "image", "text"} <= q.keys():
            raise ScoringError(f"{extra_file}:{lineno}: a question needs question_id, category, image, text")
        questions[str(q["question_id"])] = (q["category"], q["image"], _question_text(q["text"]))
    return records, lambda a: questions.get(str(a["question_id"]))


def score_pope(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    records, answer_key = _pope_key(annotation_path, extra_file)
    where = f"{annotation_path}" + (f" via {extra_file}" if extra_file else "")
    pairs, counts = _pair(load_answers(answers_path), answers_path, records, answer_key, where, answered_only)
    by_category = defaultdict(Counter)
    for r, text in pairs:
        gold_yes, pred_yes = r["answer"] == "yes", pope_yes_no(text) == "yes"
        outcome = ("TP" if pred_yes else "FN") if gold_yes else ("FP" if pred_yes else "TN")
        by_category[r["category"]][outcome] += 1
    categories = {}
    for name in sorted(by_category):
        c = by_category[name]
        tp, fp, tn, fn = c["TP"], c["FP"], c["TN"], c["FN"]
        n = tp + fp + tn + fn
        precision, recall = _pct(tp, tp + fp), _pct(tp, tp + fn)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        categories[name] = {
            "n": n,
            "accuracy": _pct(tp + tn, n),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "yes_ratio": _pct(tp + fp, n),
            "TP": tp,
            "FP": fp,
            "TN": tn,
            "FN": fn,
        }
    metrics = {
        f"mean_{k}": sum(c[k] for c in categories.values()) / len(categories)
        for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")
    }
    return _summary("pope", metrics["mean_f1"], "F1 (%), mean over categories", counts, metrics, categories)


# ----------------------------------------------------------------------------------------------
# MME (LLaVA's convert_answer_to_mme.py + MME's eval_tool/calculation.py)
# ----------------------------------------------------------------------------------------------


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


@_key_loader("MME answer key")
def _mme_key(path):
    if _is_generic_key(path):
        records = load_answer_key(path)
        for r in records:
            where = f"{path}:{r['_line']}"
            r["answer"] = _yes_no_gold(r["answer"], where)
            if not r["category"] or not r["image"]:
                raise ScoringError(f"{where}: an MME key record needs 'category' (subtask) and 'image'")
            _mme_check_subtask(r["category"], where)
            r["image"] = (r["category"], str(r["image"]))
        return records, _generic_matching(records, path)

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
                            "answer": _yes_no_gold(gold, f"{file}:{lineno}"),
                            "category": subtask,
                            "image": (subtask, stem),
                            "key": (subtask, stem, _question_text(question)),
                        }
                    )
    if not records:
        raise ScoringError(f"{path}: no MME subtask directories with question files found")

    def answer_key(a):  # "artwork/images/10002.jpg" -> ("artwork", "10002", question)
        parts = str(a["question_id"]).split("/")
        return parts[0], parts[-1].split(".")[0], _question_text(a.get("prompt") or "")

    return records, answer_key


def score_mme(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    if extra_file is not None:
        raise ScoringError("mme takes no extra file")
    records, answer_key = _mme_key(annotation_path)
    pairs, counts = _pair(
        load_answers(answers_path), answers_path, records, answer_key, str(annotation_path), answered_only
    )
    questions = defaultdict(Counter)  # subtask -> n, correct, other
    images = defaultdict(dict)  # subtask -> image -> all questions right so far
    for r, text in pairs:
        pred, sub = mme_yes_no(text), r["category"]
        right = pred == r["answer"]
        questions[sub]["n"] += 1
        questions[sub]["correct"] += right
        questions[sub]["other"] += pred == "other"
        images[sub][r["image"]] = images[sub].get(r["image"], True) and right
    categories = {}
    for sub in [s for s in MME_PERCEPTION + MME_COGNITION if s in questions]:
        q, imgs = questions[sub], images[sub]
        acc, acc_plus = _pct(q["correct"], q["n"]), _pct(sum(imgs.values()), len(imgs))
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
    return _summary(
        "mme",
        perception,
        "perception score (sum of 10 subtasks' acc + acc+, 0-2000)",
        counts,
        metrics,
        categories,
        absent_subtasks=absent,
    )


# ----------------------------------------------------------------------------------------------
# GQA (LLaVA's convert_gqa_for_eval.py + GQA's eval.py exact match)
# ----------------------------------------------------------------------------------------------


def gqa_prediction(text: str) -> str:
    return text.rstrip(".").lower()


def _simple_key(path, load_official: Callable[[object, object], list[dict]]):
    """A generic key, or ``load_official(parsed JSON, path)`` -> records keyed by question id."""
    if _is_generic_key(path):
        records = load_answer_key(path)
        return records, _generic_matching(records, path)
    records = load_official(_read_json(path), path)
    for r in records:
        r["key"] = r["id"]
    return records, lambda a: str(a["question_id"])


def _gqa_records(data, path) -> list[dict]:
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "answer" in v for v in data.values()):
        raise ScoringError(f"{path}: expected GQA questions JSON ({{question_id: {{'answer': ...}}}})")
    return [
        {"id": str(qid), "answer": q["answer"], "category": (q.get("types") or {}).get("structural")}
        for qid, q in data.items()
    ]


@_key_loader("GQA answer key")
def _gqa_key(path):
    return _simple_key(path, _gqa_records)


def score_gqa(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    if extra_file is not None:
        raise ScoringError("gqa takes no extra file")
    records, answer_key = _gqa_key(annotation_path)
    pairs, counts = _pair(
        load_answers(answers_path), answers_path, records, answer_key, str(annotation_path), answered_only
    )
    # GQA golds are lower-case already; lower-casing them only matters for hand-made keys.
    return _accuracy_summary("gqa", pairs, counts, lambda r, text: gqa_prediction(text) == r["answer"].lower())


# ----------------------------------------------------------------------------------------------
# VQAv2 / TextVQA (m4c_evaluator.py: EvalAIAnswerProcessor + soft accuracy)
# ----------------------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
# The official pattern is r"(?!<=\d)(\.)(?!\d)": its "(?!<=\d)" is a look-ahead that always holds in
# front of a ".", so it removes every period not followed by a digit. It is called as
# sub("", text, re.UNICODE), which passes 32 as the *count*: at most 32 periods are removed.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_COUNT = 32


def _contraction_table() -> dict[str, str]:
    """EvalAI's contraction fixes: a form with one apostrophe missing -> the full contraction."""
    full = """ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
        haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've
        might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've
        shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll
        someone's something'd something'd've something'll that's there'd there'd've there're there's
        they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're
        what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're
        why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll
        you're you've""".split()
    table = {}
    for word in full:
        for i, ch in enumerate(word):
            if ch == "'":
                table[word[:i] + word[i + 1 :]] = word
    # Quirks of the official table: "somebodyd" is left alone and "somebody'd" maps *to* it; its
    # I'm/I've/I'd've entries are capitalised and never match the lower-cased text, so they are omitted.
    table["somebody'd"] = "somebodyd"
    return table


_CONTRACTIONS = _contraction_table()


@functools.lru_cache(maxsize=1 << 16)  # annotator answers repeat a lot ("yes", "2", ...)
def vqa_normalize(text: str) -> str:
    """EvalAI / VQA answer normalisation, step by step as m4c_evaluator.EvalAIAnswerProcessor."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    original, digit_comma = text, _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCTUATION:  # glued punctuation becomes a space, spaced punctuation disappears
        spaced = p + " " in original or " " + p in original
        text = text.replace(p, "" if spaced or digit_comma else " ")
    text = _PERIOD.sub("", text, count=_PERIOD_COUNT)
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_soft_accuracy(prediction: str, gold_answers: list[str]) -> float:
    """Mean over the leave-one-annotator-out subsets of min(1, matches / 3)."""
    pred = vqa_normalize(prediction)
    golds = [vqa_normalize(g) for g in gold_answers]
    per_subset = [min(1.0, sum(g == pred for j, g in enumerate(golds) if j != i) / 3) for i in range(len(golds))]
    return sum(per_subset) / len(per_subset)


def _vqav2_records(data, path) -> list[dict]:
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ScoringError(f"{path}: expected the VQAv2 annotation JSON ({{'annotations': [...]}})")
    return [
        {
            "id": str(a["question_id"]),
            "answers": [x["answer"] for x in a["answers"]],
            "answer": a.get("multiple_choice_answer"),
            "category": a.get("answer_type"),
        }
        for a in data["annotations"]
    ]


@_key_loader("VQAv2 answer key")
def _vqav2_key(path):
    return _simple_key(path, _vqav2_records)


def textvqa_question(prompt: str) -> str | None:
    """The question inside a LLaVA TextVQA prompt (as eval_textvqa.prompt_processor), lower-cased."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        question = match.group(1) if match else None
    elif "Reference OCR token: " in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith("Reference OCR token:") else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        question = None
    return question.lower() if question is not None else None


@_key_loader("TextVQA answer key")
def _textvqa_key(path):
    if _is_generic_key(path):
        records = load_answer_key(path)
        return records, _generic_matching(records, path)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ScoringError(f"{path}: expected TextVQA JSON ({{'data': [...]}})")
    records, by_image_question = [], {}
    for item in data["data"]:
        qid = str(item["question_id"])
        records.append({"id": qid, "key": qid, "answers": item["answers"], "answer": None})
        if "image_id" in item and "question" in item:
            by_image_question[(str(item["image_id"]), item["question"].lower())] = qid
    ids = {r["id"] for r in records}

    def answer_key(a):
        qid = str(a["question_id"])
        if qid in ids:
            return qid
        return by_image_question.get((qid, textvqa_question(a.get("prompt") or "")))

    return records, answer_key


def _score_vqa(bench, answers_path, annotation_path, extra_file, answered_only) -> dict:
    if extra_file is not None:
        raise ScoringError(f"{bench} takes no extra file")
    if bench == "vqav2":
        records, answer_key = _vqav2_key(annotation_path)
    else:
        records, answer_key = _textvqa_key(annotation_path)
    pairs, counts = _pair(
        load_answers(answers_path), answers_path, records, answer_key, str(annotation_path), answered_only
    )
    return _accuracy_summary(
        bench,
        pairs,
        counts,
        lambda r, text: vqa_soft_accuracy(text, r["answers"] or [r["answer"]] * 10),
        "VQA soft accuracy (%)",
    )


def score_vqav2(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    return _score_vqa("vqav2", answers_path, annotation_path, extra_file, answered_only)


def score_textvqa(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    return _score_vqa("textvqa", answers_path, annotation_path, extra_file, answered_only)


# ----------------------------------------------------------------------------------------------
# ScienceQA-IMG (llava/eval/eval_science_qa.py, LLaVA-1.5 version)
# ----------------------------------------------------------------------------------------------

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


@_key_loader("ScienceQA answer key")
def _sqa_key(path, extra_file, split):
    if _is_generic_key(path):
        records = load_answer_key(path)
        for r in records:
            r.update(n_choices=len(SQA_OPTIONS), has_image=True)
        return records, _generic_matching(records, path)
    problems = _read_json(path)
    if not isinstance(problems, dict) or not all(
        isinstance(p, dict) and "answer" in p and "choices" in p for p in problems.values()
    ):
        raise ScoringError(f"{path}: expected ScienceQA problems.json ({{pid: {{'choices', 'answer', ...}}}})")
    splits_file = extra_file or os.path.join(os.path.dirname(os.path.abspath(path)), "pid_splits.json")
    if extra_file or os.path.exists(splits_file):
        splits = _read_json(splits_file)
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


def score_sqa(answers_path, annotation_path, *, extra_file=None, answered_only=False, split="test") -> dict:
    records, answer_key = _sqa_key(annotation_path, extra_file, split)
    pairs, counts = _pair(
        load_answers(answers_path), answers_path, records, answer_key, str(annotation_path), answered_only
    )

    def right(r, text):
        return sqa_letter(text, r["n_choices"]) == r["answer"]

    image_pairs = [(r, text) for r, text in pairs if r["has_image"]]
    if not image_pairs:
        raise ScoringError(f"{annotation_path}: no image questions to score in split {split!r}")
    summary = _accuracy_summary("sqa", image_pairs, counts, right, "IMG accuracy (%)")
    summary["metrics"]["n_image_questions"] = len(image_pairs)
    summary["metrics"]["accuracy_all"] = _pct(sum(right(r, text) for r, text in pairs), len(pairs))
    return summary


# ----------------------------------------------------------------------------------------------
# MMBench (letter match + circular evaluation)
# ----------------------------------------------------------------------------------------------


def mmbench_letter(text: str, letters: str = "ABCD") -> str | None:
    """MMBench's rule-based match: punctuation to spaces, the one option letter standing as a word."""
    for ch in ".()[],:;!*#{}":
        text = text.replace(ch, " ")
    words = set(text.split())
    hits = [letter for letter in letters if letter in words]
    return hits[0] if len(hits) == 1 else None


def _is_none(value) -> bool:
    return value is None or str(value).strip().lower() in ("", "nan", "none")


@_key_loader("MMBench answer key")
def _mmbench_key(path, answers):
    if _is_generic_key(path):
        if any(int(a.get("round_id") or 0) for a in answers):
            raise ScoringError(f"{path}: answers with round_id > 0 (--all-rounds) need the MMBench TSV")
        records = load_answer_key(path)
        for r in records:  # options A-D, or up to the gold letter if that is later
            if len(r["answer"]) != 1 or r["answer"] not in "ABCDEFGH":
                raise ScoringError(f"{path}:{r['_line']}: gold {r['answer']!r} is not an option letter")
            r["letters"] = "ABCDEFGH"[: max(4, "ABCDEFGH".index(r["answer"]) + 1)]
            r["group"] = str(r["group"]) if r["group"] is not None else r["id"]
        return records, _generic_matching(records, path)

    old_limit = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # rows carry base64 images
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    finally:
        csv.field_size_limit(old_limit)
    if not rows or not {"index", "answer", "A", "B"} <= rows[0].keys():
        raise ScoringError(f"{path}: expected an MMBench TSV with columns index, A, B, ..., answer")
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
        for r in range(min(n_rounds, n_options)):  # round r shows the options rotated left r times
            records.append(
                {
                    "id": str(index),
                    "key": (str(index), r),
                    "letters": "ABCD"[:n_options],
                    "answer": "ABCD"[("ABCD".index(gold) - r) % n_options],
                    "group": str(index % 1_000_000),
                    "category": row.get("category"),
                }
            )
    return records, lambda a: (str(a["question_id"]), int(a.get("round_id") or 0))


def score_mmbench(answers_path, annotation_path, *, extra_file=None, answered_only=False) -> dict:
    if extra_file is not None:
        raise ScoringError("mmbench takes no extra file")
    answers = load_answers(answers_path)
    records, answer_key = _mmbench_key(annotation_path, answers)
    pairs, counts = _pair(answers, answers_path, records, answer_key, str(annotation_path), answered_only)
    groups: dict[str, list] = {}
    for r, text in pairs:
        right = mmbench_letter(text, r["letters"]) == r["answer"]
        entry = groups.setdefault(r["group"], [r.get("category"), True, 0])
        entry[1] = entry[1] and right
        entry[2] += right
    n_right_groups = sum(ok for _, ok, _ in groups.values())
    score = _pct(n_right_groups, len(groups))
    by_category = defaultdict(lambda: [0, 0])
    for category, ok, _ in groups.values():
        if category is not None:
            by_category[str(category)][0] += ok
            by_category[str(category)][1] += 1
    categories = {
        name: {"n_groups": n, "circular_accuracy": _pct(ok, n)} for name, (ok, n) in sorted(by_category.items())
    }
    metrics = {
        "circular_accuracy": score,
        "n_groups": len(groups),
        "single_copy_accuracy": _pct(sum(right for _, _, right in groups.values()), len(pairs)),
    }
    return _summary("mmbench", score, "circular accuracy (%)", counts, metrics, categories)


# ----------------------------------------------------------------------------------------------
# SEED-Bench (LLaVA's convert_seed_for_submission.py: exact letter match per question type)
# ----------------------------------------------------------------------------------------------


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


@_key_loader("SEED answer key")
def _seed_key(path):
    return _simple_key(path, _seed_records)


def score_seed(answers_path, annotation_path, *, extra_file=None, answered_only=False, data_type=None) -> dict:
    if extra_file is not None:
        raise ScoringError("seed takes no extra file")
    records, answer_key = _seed_key(annotation_path)
    if data_type is not None and not any(r.get("data_type") == data_type for r in records):
        raise ScoringError(f"{annotation_path}: no questions with data_type {data_type!r}")
    pairs, counts = _pair(
        load_answers(answers_path),
        answers_path,
        records,
        answer_key,
        str(annotation_path),
        answered_only,
        keep=None if data_type is None else lambda r: r.get("data_type") == data_type,
    )
    summary = _accuracy_summary(
        "seed",
        pairs,
        counts,
        lambda r, text: text == r["answer"],
        "accuracy (%)" + (f", {data_type} questions" if data_type else ""),
        data_type=data_type or "all",
    )
    for kind in ("image", "video"):
        subset = [text == r["answer"] for r, text in pairs if r.get("data_type") == kind]
        if subset:
            summary["metrics"][f"accuracy_{kind}"] = _pct(sum(subset), len(subset))
    return summary


# ----------------------------------------------------------------------------------------------
# Dispatch and table
# ----------------------------------------------------------------------------------------------

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


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def format_table(summary: dict) -> str:
    """A score() summary as plain text with a markdown table of the per-category metrics."""
    name = DISPLAY_NAMES.get(summary["bench"], summary["bench"])
    lines = [
        f"{name}: {summary['score_name']} = {summary['score']:.2f}",
        f"questions {summary['n_questions']}, answered {summary['n_answered']}, "
        f"missing {summary['n_missing']}" + (" (scored on answered only)" if summary.get("answered_only") else ""),
    ]
    if summary.get("metrics"):
        lines.append(", ".join(f"{k} {_fmt(v)}" for k, v in summary["metrics"].items()))
    if summary.get("absent_subtasks"):
        lines.append("absent subtasks: " + ", ".join(summary["absent_subtasks"]))
    categories = summary.get("categories") or {}
    if categories:
        columns = list(dict.fromkeys(k for row in categories.values() for k in row))
        lines.append("")
        lines += _markdown(
            ["category", *columns], [[cat, *(_fmt(row.get(c, "")) for c in columns)] for cat, row in categories.items()]
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Retention (paper: (method - lower) / (upper - lower), mean over benchmarks)
# ----------------------------------------------------------------------------------------------


def _bench_order(names) -> list[str]:
    return sorted(names, key=lambda b: (BENCHES.index(b) if b in BENCHES else len(BENCHES), b))


def _canonical_scores(scores: dict, where="scores") -> dict[str, float]:
    out = {}
    for bench, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ScoringError(f"{where}: score for {bench!r} is not a number: {value!r}")
        name = canonical_bench(bench)
        if name in out and out[name] != value:
            raise ScoringError(f"{where}: two different scores for {name!r}")
        out[name] = float(value)
    return out


def retention(upper: dict[str, float], method: dict[str, float], lower: dict[str, float]) -> dict:
    """Per-benchmark retention (fractions, 1.0 = the upper bound) and their mean over the
    benchmarks present in all three (those with upper == lower are undefined and left out)."""
    u, m, lo = _canonical_scores(upper, "upper"), _canonical_scores(method, "method"), _canonical_scores(lower, "lower")
    common = _bench_order(set(u) & set(m) & set(lo))
    per, undefined = {}, []
    for b in common:
        if u[b] == lo[b]:
            undefined.append(b)
        else:
            per[b] = (m[b] - lo[b]) / (u[b] - lo[b])
    return {
        "retention": per,
        "mean": sum(per.values()) / len(per) if per else None,
        "benchmarks": list(per),
        "undefined": undefined,
        "not_in_all_three": _bench_order((set(u) | set(m) | set(lo)) - set(common)),
    }


def scores_from_json(data, where="scores") -> dict[str, float]:
    """{bench: number}, a score() summary, {bench: summary} or a list of summaries -> {bench: score}."""
    if isinstance(data, list):
        merged: dict[str, float] = {}
        for item in data:
            for bench, value in scores_from_json(item, where).items():
                if bench in merged and merged[bench] != value:
                    raise ScoringError(f"{where}: two different scores for {bench!r}")
                merged[bench] = value
        return merged
    if not isinstance(data, dict):
        raise ScoringError(f"{where}: expected a JSON object or list")
    if "bench" in data and "score" in data:
        return _canonical_scores({data["bench"]: data["score"]}, where)
    return _canonical_scores(
        {b: v["score"] if isinstance(v, dict) and "score" in v else v for b, v in data.items()}, where
    )


def load_scores(*paths) -> dict[str, float]:
    """Merge the scores in one or more JSON files (any form scores_from_json accepts)."""
    merged: dict[str, float] = {}
    for path in paths:
        for bench, value in scores_from_json(_read_json(path), str(path)).items():
            if bench in merged and merged[bench] != value:
                raise ScoringError(f"{path}: a different score for {bench!r} was already loaded")
            merged[bench] = value
    return merged


def retention_report(upper: dict, lower: dict, methods: dict[str, dict]) -> dict:
    """Scores and retention for several methods against one pair of bounds."""
    return {
        "upper": _canonical_scores(upper, "upper"),
        "lower": _canonical_scores(lower, "lower"),
        "methods": {
            name: {"scores": _canonical_scores(s, name), **retention(upper, s, lower)} for name, s in methods.items()
        },
    }


def format_retention(report: dict) -> str:
    """A retention_report() as a markdown table: bounds, then each method's scores and retention."""
    benches = _bench_order(
        set(report["upper"]) | set(report["lower"]) | {b for m in report["methods"].values() for b in m["scores"]}
    )
    header = ["", *(DISPLAY_NAMES.get(b, b) for b in benches), "mean retention"]

    def score_row(label, scores):
        return [label, *(f"{scores[b]:g}" if b in scores else "-" for b in benches), ""]

    rows = [score_row("upper bound", report["upper"]), score_row("lower bound", report["lower"])]
    for name, m in report["methods"].items():
        rows.append(score_row(name, m["scores"]))
        mean = f"{100 * m['mean']:.1f}%" if m["mean"] is not None else "-"
        rows.append(
            [
                f"{name} retention",
                *(f"{100 * m['retention'][b]:.1f}%" if b in m["retention"] else "-" for b in benches),
                mean,
            ]
        )
    return "\n".join(_markdown(header, rows))


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _run_cli(work: Callable[[], None]) -> int:
    """Run a command body; print its warnings as single lines. Unreadable files become an
    InputError (ScoringError is one), which the `voco` command turns into one line and exit 2."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScoringWarning)
        try:
            work()
        except (OSError, UnicodeError) as err:
            raise InputError(str(err)) from None
        finally:
            for w in caught:
                print(f"voco: warning: {w.message}", file=sys.stderr)
    return 0


def _cmd_score(args) -> int:
    def work():
        options = {"extra_file": args.extra_file, "answered_only": args.answered_only}
        if canonical_bench(args.bench) == "sqa":
            options["split"] = args.sqa_split
        if canonical_bench(args.bench) == "seed":
            options["data_type"] = args.seed_data_type
        summary = score(args.bench, args.answers_file, args.annotation_file, **options)
        print(format_table(summary))
        if args.out:
            write_json_atomic(args.out, summary)

    return _run_cli(work)


def _parse_method(spec: str) -> tuple[str, list[str]]:
    name, sep, files = spec.partition("=")
    if not sep or not name or not files:
        raise ScoringError(f"--method {spec!r}: expected NAME=FILE[,FILE...]")
    return name, files.split(",")


def _cmd_retention(args) -> int:
    def work():
        methods = {}
        for spec in args.method:
            name, files = _parse_method(spec)
            methods[name] = load_scores(*files)
        report = retention_report(load_scores(*args.upper), load_scores(*args.lower), methods)
        print(format_retention(report))
        if args.out:
            write_json_atomic(args.out, report)

    return _run_cli(work)


def register_cli(subparsers) -> None:
    """Add `voco score` and `voco retention`; handlers are `args.func(args) -> exit code`."""
    p = subparsers.add_parser(
        "score",
        help="score a benchmark answer file as LLaVA-1.5's scripts do",
        description="Print a table and optionally write a JSON summary. Exit 0 on success, 2 on unusable input.",
    )
    p.add_argument("bench", help=f"one of {', '.join(SCORERS)}")
    p.add_argument("--answers-file", required=True, help="LLaVA answer JSONL")
    p.add_argument(
        "--annotation-file", required=True, help="answer key: generic JSONL or the benchmark's own file/directory"
    )
    p.add_argument("--extra-file", default=None, help="pope: LLaVA's llava_pope_test.jsonl; sqa: pid_splits.json")
    p.add_argument("--answered-only", action="store_true", help="score only answered questions")
    p.add_argument("--sqa-split", default="test", help="ScienceQA split (default test)")
    p.add_argument(
        "--seed-data-type",
        choices=("image", "video"),
        default=None,
        help="SEED: score only image or video questions (default all)",
    )
    p.add_argument("--out", default=None, help="write the JSON summary here (atomically)")
    p.set_defaults(func=_cmd_score)

    r = subparsers.add_parser(
        "retention",
        help="compression retention (method - lower) / (upper - lower)",
        description="Scores come from score() summaries or plain {bench: number} JSON.",
    )
    r.add_argument("--upper", nargs="+", required=True, help="upper-bound score JSON file(s)")
    r.add_argument("--lower", nargs="+", required=True, help="lower-bound score JSON file(s)")
    r.add_argument(
        "--method",
        action="append",
        required=True,
        metavar="NAME=FILE[,FILE...]",
        help="a method's score JSON file(s); repeat for several methods",
    )
    r.add_argument("--out", default=None, help="write the JSON report here (atomically)")
    r.set_defaults(func=_cmd_retention)
