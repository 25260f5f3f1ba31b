"""lmms-eval task functions for the toy world's benches (see __init__.py). lmms-eval imports this
file by path, so it imports the package absolutely."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from PIL import Image

from voco_llama.core.errors import InputError
from voco_llama.eval.scorers import score

WORLD_ENV = "VOCO_TOY_WORLD"
DEFAULT_WORLD = Path("runs/demo/world")  # where `make demo` writes it
LETTERS = ("A", "B", "C", "D")


def world() -> Path:
    root = Path(os.environ.get(WORLD_ENV) or DEFAULT_WORLD)
    if not (root / "world.json").is_file():
        raise InputError(f"{root}: no toy world here; run `make demo` or set {WORLD_ENV} to a world's folder")
    return root


def _docs(bench: str):
    """The bench's questions, each with its answer-key record (kept as JSON text: the records of
    one bench differ in fields, which a datasets column would not take)."""
    import datasets

    root = world()
    keys = {}
    for line in (root / "eval" / bench / "answer_key.jsonl").read_text().splitlines():
        if line.strip():
            keys[json.loads(line)["question_id"]] = line
    rows = []
    for line in (root / "eval" / bench / "questions.jsonl").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            key = json.loads(keys[q["question_id"]])
            rows.append(
                {
                    "question_id": q["question_id"],
                    "image": q["image"],
                    "text": q["text"],
                    "answer": key["answer"],
                    "key": keys[q["question_id"]],
                }
            )
    return datasets.Dataset.from_list(rows)


def gqa_docs(dataset):
    return _docs("gqa")


def vqav2_docs(dataset):
    return _docs("vqav2")


def pope_docs(dataset):
    return _docs("pope")


def mme_docs(dataset):
    return _docs("mme")


def mmbench_docs(dataset):
    return _docs("mmbench")


def seed_docs(dataset):
    return _docs("seed")


def doc_to_visual(doc) -> list[Image.Image]:
    with Image.open(world() / "images" / doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None) -> str:
    return doc["text"]  # LLaVA's question text, its instruction included; the plugin places the image


def process_results(doc, results) -> dict:
    """One answer line, scored with the rest of the run in the bench's aggregation."""
    answer = {"question_id": doc["question_id"], "prompt": doc["text"], "text": results[0]}
    return {"voco_score": {"answer": answer, "key": doc["key"]}}


def _score(bench: str, items: list[dict]) -> float:
    """`voco score BENCH` over the questions this run answered (all, or the first --limit)."""
    with tempfile.TemporaryDirectory() as tmp:
        answers, key = Path(tmp) / "answers.jsonl", Path(tmp) / "answer_key.jsonl"
        answers.write_text("".join(json.dumps(item["answer"]) + "\n" for item in items))
        key.write_text("".join(item["key"] + "\n" for item in items))
        return score(bench, answers, key)["score"]


def gqa_score(items):
    return _score("gqa", items)


def vqav2_score(items):
    return _score("vqav2", items)


def pope_score(items):
    return _score("pope", items)


def mme_score(items):
    return _score("mme", items)


def mmbench_score(items):
    return _score("mmbench", items)


def seed_score(items):
    return _score("seed", items)


def doc_to_choice(doc) -> list[str]:
    return list(LETTERS)


def doc_to_target(doc) -> int:
    return LETTERS.index(doc["answer"])
