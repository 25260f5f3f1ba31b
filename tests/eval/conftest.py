"""Helpers for the eval tests: tiny hand-made answer files and keys (fixtures returning writers), and
the loss lmms-eval's llava model computes, for checking the plugin against it."""

import json

import pytest
import torch

from voco_llama.core.processing import encode_prompts, question_prompt


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _answers(path, pairs, **extra):
    """LLaVA-style answer file from [(question_id, text)] or [(question_id, text, prompt)]."""
    records = []
    for item in pairs:
        qid, text, prompt = (*item, "")[:3]
        records.append(
            {"question_id": qid, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}
            | extra
        )
    return _write_jsonl(path, records)


def _mmbench_tsv(path, rows):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    lines = ["\t".join(header)] + ["\t".join(str(row.get(h, "")) for h in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def write_json():
    return _write_json


@pytest.fixture
def answers():
    return _answers


@pytest.fixture
def mmbench_tsv():
    return _mmbench_tsv


def _reference_loss(pipe, question, image, answer):
    """What lmms-eval's llava model computes: the model's own (training) forward over the prompt with
    the answer turn, labels only on the answer and its closing </s>, HF's mean cross-entropy."""
    prompt = question_prompt(question, "vicuna_v1", 1)
    config = pipe.model.config
    context = encode_prompts([prompt], pipe.tokenizer, config)["input_ids"]
    batch = encode_prompts([prompt + " " + answer + "</s>"], pipe.tokenizer, config)
    labels = batch["input_ids"].clone()
    labels[:, : context.shape[1]] = -100
    with torch.no_grad():
        out = pipe.model(**batch, pixel_values=pipe.pixels([image]), labels=labels)
    return float(out.loss)


@pytest.fixture
def reference_loss():
    return _reference_loss
