"""VQAv2 and TextVQA: one normalisation and one soft accuracy, as the official ``m4c_evaluator.py``
(EvalAIAnswerProcessor + the 10-annotator leave-one-out accuracy).

The prediction and every annotator answer go through the EvalAI normalisation, then
accuracy = mean over the leave-one-annotator-out subsets of min(1, matches / 3).

Keys: a generic key; for vqav2 the annotation JSON (``{"annotations": [{"question_id", "answers":
[{"answer"}...], "answer_type"}]}``; ``answer_type`` is the reporting category); for textvqa
TextVQA_0.5.1_val.json (``{"data": [{"question_id", "image_id", "question", "answers"}]}``),
answers matched by ``question_id`` or, failing that, by (``image_id``, question from the
``prompt``) as LLaVA's ``eval_textvqa.py`` does (its question file uses the image id as id).
"""

from __future__ import annotations

import functools
import re

from ..answers import (
    ScoringError,
    generic_matching,
    is_generic_key,
    key_loader,
    load_answer_key,
    load_answers,
    read_json,
    simple_key,
)
from .base import accuracy_summary, pair

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


@key_loader("VQAv2 answer key")
def _vqav2_key(path):
    return simple_key(path, _vqav2_records)


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


@key_loader("TextVQA answer key")
def _textvqa_key(path):
    if is_generic_key(path):
        records = load_answer_key(path)
        return records, generic_matching(records, path)
    data = read_json(path)
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
    pairs, counts = pair(
        load_answers(answers_path), answers_path, records, answer_key, str(annotation_path), answered_only
    )
    return accuracy_summary(
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
