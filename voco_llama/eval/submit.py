"""`voco submit BENCH`: the files the benchmark servers take, from a LLaVA answer file.

``voco submit BENCH --answers-file A.jsonl --questions Q --out OUT`` writes, as LLaVA's
``scripts/convert_*_for_submission.py`` do (every question of ``Q`` gets a line; an unanswered one
gets "" and is counted in a warning; an answer to a question not in ``Q``, a question answered
twice, or an answers file without one usable answer is an error):

- vqav2: ``Q`` = the test question file (LLaVA's ``llava_vqav2_mscoco_test2015.jsonl``, or the
  official ``v2_OpenEnded_mscoco_test2015_questions.json``); ``OUT`` = the EvalAI JSON
  ``[{"question_id", "answer"}]``, answers EvalAI-normalised (test-dev answers inside the full
  test list, as the server wants).
- gqa: ``Q`` = ``testdev_balanced_questions.json`` (or LLaVA's question JSONL); ``OUT`` =
  ``testdev_balanced_predictions.json``, ``[{"questionId", "prediction"}]``, predictions
  ``rstrip('.').lower()`` -- what GQA's ``eval.py`` reads.
- mmbench: ``Q`` = the MMBench TSV; ``OUT`` = ``.xlsx`` (openpyxl: ``pip install
  voco-llama[submit]``) or ``.tsv``: the TSV's columns less hint, category, source, image, comment,
  l2-category, with ``prediction`` (the raw output; the server matches it) as the 7th column. Only
  round 0 of ``--all-rounds`` answers is sent (the server rotates the options itself).
- seed: ``Q`` = ``SEED-Bench.json`` (or LLaVA's question JSONL); ``OUT`` = the upload JSONL
  ``{"question_id", "prediction"}``, the raw output, one line per question.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

from ..core.files import write_atomic, write_json_atomic, write_jsonl_atomic
from .answers import ScoringError, ScoringWarning, iter_jsonl, load_answers, read_json
from .score import run_cli
from .scorers import canonical_bench
from .scorers.gqa import gqa_prediction
from .scorers.mmbench import read_tsv
from .scorers.vqa import vqa_normalize

# LLaVA's convert_mmbench_for_submission.py drops these columns and puts the prediction 7th.
_MMBENCH_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")
_MMBENCH_PREDICTION_COLUMN = 6


def _question_ids(path, bench: str) -> list:
    """The question ids of a question file, as written there (LLaVA JSONL or the benchmark's JSON)."""
    if str(path).endswith(".jsonl"):
        ids = []
        for lineno, q in iter_jsonl(path, tolerate_torn_tail=False):
            if "question_id" not in q:
                raise ScoringError(f"{path}:{lineno}: a question needs a 'question_id'")
            ids.append(q["question_id"])
        return ids
    data = read_json(path)
    if bench == "gqa" and isinstance(data, dict) and "questions" not in data:
        return list(data)  # {question_id: {...}}
    if isinstance(data, dict) and isinstance(data.get("questions"), list):  # VQA questions JSON, SEED-Bench.json
        try:
            return [q["question_id"] for q in data["questions"]]
        except (KeyError, TypeError):
            pass
    raise ScoringError(f"{path}: not a {bench} question file (LLaVA JSONL, or the benchmark's questions JSON)")


def _answers_by_id(answers_path, ids: list, where, rounds: bool = False) -> dict[str, str]:
    """{question id as a string: stripped output}; refuses unknown and repeated ids, warns on missing."""
    known = {str(q) for q in ids}
    found: dict[str, dict] = {}
    for a in load_answers(answers_path):
        if rounds and int(a.get("round_id") or 0) != 0:
            continue
        qid = str(a["question_id"])
        if qid not in known:
            raise ScoringError(f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is not in {where}")
        if qid in found:
            raise ScoringError(
                f"{answers_path}:{a['_line']}: question_id {a['question_id']!r} is answered twice "
                f"(first on line {found[qid]['_line']})"
            )
        found[qid] = a
    if not found:  # e.g. a file whose one line is torn: an all-empty submission would only score 0
        raise ScoringError(f"{answers_path}: no answer to any question of {where}; nothing to submit")
    missing = len(known - set(found))
    if missing:
        warnings.warn(
            f'{answers_path}: {missing} of {len(known)} questions have no answer; they are sent as ""',
            ScoringWarning,
            stacklevel=3,
        )
    return {qid: a["text"].strip() for qid, a in found.items()}


def _vqav2(answers_path, questions, out) -> int:
    ids = _question_ids(questions, "vqav2")
    texts = _answers_by_id(answers_path, ids, questions)
    rows = [{"question_id": q, "answer": vqa_normalize(texts[str(q)]) if str(q) in texts else ""} for q in ids]
    write_json_atomic(out, rows, indent=None)
    return len(rows)


def _gqa(answers_path, questions, out) -> int:
    ids = _question_ids(questions, "gqa")
    texts = _answers_by_id(answers_path, ids, questions)
    rows = [{"questionId": q, "prediction": gqa_prediction(texts.get(str(q), ""))} for q in ids]
    write_json_atomic(out, rows, indent=None)
    return len(rows)


def _seed(answers_path, questions, out) -> int:
    ids = _question_ids(questions, "seed")
    texts = _answers_by_id(answers_path, ids, questions)
    rows = [{"question_id": q, "prediction": texts.get(str(q), "")} for q in ids]
    write_jsonl_atomic(out, rows)
    return len(rows)


def _mmbench(answers_path, questions, out) -> int:
    rows = read_tsv(questions)
    ids = [int(float(row["index"])) for row in rows]
    texts = _answers_by_id(answers_path, ids, questions, rounds=True)
    columns = [c for c in rows[0] if c not in _MMBENCH_DROPPED]
    columns.insert(_MMBENCH_PREDICTION_COLUMN, "prediction")
    table = [[texts.get(str(i), "") if c == "prediction" else row[c] for c in columns] for i, row in zip(ids, rows)]
    if str(out).endswith(".xlsx"):
        try:
            from openpyxl import Workbook
        except ImportError:
            raise ScoringError("an .xlsx submission needs openpyxl: pip install 'voco-llama[submit]'") from None
        book = Workbook()
        sheet = book.active
        for values in [columns, *table]:
            sheet.append(values)
        data = io.BytesIO()
        book.save(data)
        write_atomic(out, data.getvalue())
    elif str(out).endswith(".tsv"):
        text = io.StringIO()
        csv.writer(text, delimiter="\t", lineterminator="\n").writerows([columns, *table])
        write_atomic(out, text.getvalue())
    else:
        raise ScoringError(f"{out}: an MMBench submission is .xlsx or .tsv")
    return len(table)


WRITERS = {"vqav2": _vqav2, "gqa": _gqa, "mmbench": _mmbench, "seed": _seed}


def write_submission(bench: str, answers_path, questions, out) -> int:
    """Write the submission file of ``bench``; returns the number of questions in it."""
    name = canonical_bench(bench)
    if name not in WRITERS:
        raise ScoringError(f"no submission format for {bench!r} (one of {', '.join(WRITERS)})")
    return WRITERS[name](answers_path, questions, Path(out))


def _cmd_submit(args) -> int:
    def work():
        n = write_submission(args.bench, args.answers_file, args.questions, args.out)
        print(json.dumps({"bench": canonical_bench(args.bench), "questions": n, "out": str(args.out)}))

    return run_cli(work)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "submit",
        help="write a benchmark server's submission file from a LLaVA answer file",
        description="vqav2 (EvalAI JSON), gqa (testdev_balanced_predictions.json), mmbench (.xlsx or .tsv), "
        "seed (upload JSONL). Exit 0 on success, 2 on unusable input.",
    )
    p.add_argument("bench", help=f"one of {', '.join(WRITERS)}")
    p.add_argument("--answers-file", required=True, help="LLaVA answer JSONL")
    p.add_argument(
        "--questions",
        required=True,
        help="vqav2: the test question file; gqa: testdev_balanced_questions.json; mmbench: the TSV; "
        "seed: SEED-Bench.json (or LLaVA's question JSONL)",
    )
    p.add_argument("--out", required=True, help="the submission file (written atomically)")
    p.set_defaults(func=_cmd_submit)
