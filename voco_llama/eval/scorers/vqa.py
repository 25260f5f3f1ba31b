"""VQAv2 and TextVQA: the 10-annotator leave-one-out soft accuracy, mean over the subsets of
min(1, matches / 3), with each benchmark's own normalisation.

- TextVQA, as LLaVA's ``m4c_evaluator.TextVQAAccuracyEvaluator``: the prediction and every
  annotator answer go through EvalAI's normalisation (``vqa_normalize``).
- VQAv2, as LLaVA's ``convert_vqav2_for_submission.py`` followed by the official VQA evaluator
  (GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, ``VQAEval.evaluate``):
  the prediction is EvalAI-normalised (the converter) and every answer has its newlines, tabs and
  outer spaces removed; only when the annotators disagree do the evaluator's punctuation and
  digit/article steps run, on the annotator answers and on the prediction alike -- so ten
  annotators saying "two" do not match a prediction "2", seven "two" and three "2" all do. The
  evaluator's punctuation list is EvalAI's (one list here, ``_PUNCTUATION_MARKS``).

Keys: a generic key (``answers``: the annotator answers); for vqav2 the annotation JSON
(``{"annotations": [{"question_id", "answers": [{"answer"}...], "answer_type"}]}``; ``answer_type``
is the reporting category); for textvqa TextVQA_0.5.1_val.json (``{"data": [{"question_id",
"image_id", "question", "answers"}]}``), answers matched by ``question_id`` or, failing that, by
(``image_id``, question from the ``prompt``) as LLaVA's ``eval_textvqa.py`` does (its question file
uses the image id as id). Two annotations with the same (image, question) are one question there
(the later one's answers); here each still takes one answer, scored against those answers.
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
    read_json,
    simple_key,
)
from .base import accuracy_summary, missing_rule, pair, register_scorer

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
# Punctuation marks, in order, as both official sources list them: GT-Vision-Lab/VQA
# PythonEvaluationTools/vqaEvaluation/vqaEval.py (``self.punct``) and haotian-liu/LLaVA
# llava/eval/m4c_evaluator.py (``EvalAIAnswerProcessor.PUNCTUATIONS``). ":" and "'" are not marks.
_PUNCTUATION_MARKS = (
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
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
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


def _punctuation(text: str) -> str:
    """processPunctuation: glued marks become a space, spaced ones (or any, if the text has a
    digit-comma-digit) disappear; then the periods not followed by a digit."""
    out, drop = text, _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCTUATION_MARKS:
        out = out.replace(p, "" if drop or p + " " in text or " " + p in text else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def _digit_article(text: str) -> str:
    """processDigitArticle: lower-case, number words to digits, no articles, contractions fixed."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def _whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


@functools.lru_cache(maxsize=1 << 16)  # annotator answers repeat a lot ("yes", "2", ...)
def vqa_normalize(text: str) -> str:
    """EvalAI / VQA answer normalisation, step by step as m4c_evaluator.EvalAIAnswerProcessor."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return _digit_article(_punctuation(_whitespace(text)))


def _soft_accuracy(pred: str, golds: list[str]) -> float:
    per_subset = [min(1.0, sum(g == pred for j, g in enumerate(golds) if j != i) / 3) for i in range(len(golds))]
    return sum(per_subset) / len(per_subset)


def vqa_soft_accuracy(prediction: str, gold_answers: list[str]) -> float:
    """TextVQA's accuracy: prediction and annotator answers EvalAI-normalised."""
    return _soft_accuracy(vqa_normalize(prediction), [vqa_normalize(g) for g in gold_answers])


def vqav2_accuracy(prediction: str, gold_answers: list[str]) -> float:
    """VQAv2's accuracy: LLaVA's submission converter, then the official evaluator (module docstring)."""
    pred = _whitespace(vqa_normalize(prediction))
    golds = [_whitespace(g) for g in gold_answers]
    if len(set(golds)) > 1:  # vqaEval.py: `if len(set(gtAnswers)) > 1:` normalises both sides
        golds = [_digit_article(_punctuation(g)) for g in golds]
        pred = _digit_article(_punctuation(pred))
    return _soft_accuracy(pred, golds)


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
        record = {"id": str(item["question_id"]), "answers": item["answers"], "answer": None}
        if "image_id" in item and "question" in item:
            record["image_question"] = (str(item["image_id"]), item["question"].lower())
            by_image_question.setdefault(record["image_question"], []).append(record)
        records.append(record)
    by_id = {r["id"]: r for r in records}
    for r in records:
        same = by_image_question.get(r.get("image_question"), [r])
        # eval_textvqa.py keys its annotations by (image, question): duplicates are one question,
        # the later one's answers; LLaVA's file asks it once per annotation, so each takes an answer.
        r["key"] = r["image_question"] if len(same) > 1 else r["id"]
        r["answers"] = same[-1]["answers"]

    def answer_key(a):
        qid = str(a["question_id"])
        if qid in by_id:
            return by_id[qid]["key"]
        same = by_image_question.get((qid, textvqa_question(a.get("prompt") or "")))
        return same[0]["key"] if same else None

    return records, answer_key


def _score_vqa(bench, answers_path, annotation_path, missing) -> dict:
    if bench == "vqav2":
        records, answer_key = _vqav2_key(annotation_path)
        accuracy = vqav2_accuracy
        # the submission converter sends "" for an unanswered question: wrong
        missing = missing_rule(missing, official="wrong")
    else:
        records, answer_key = _textvqa_key(annotation_path)
        accuracy = vqa_soft_accuracy
        # eval_textvqa.py scores the answer lines it has
        missing = missing_rule(missing, official="skip")
    pairs, counts = pair(answers_path, annotation_path, records, answer_key, missing, repeated_keys=bench == "textvqa")
    return accuracy_summary(
        bench,
        pairs,
        counts,
        lambda r, text: accuracy(text, r["answers"] or [r["answer"]] * 10),
        "VQA soft accuracy (%)",
    )


@register_scorer("vqav2", "VQAv2", aliases=("vqa-v2", "vqa_v2"))
def score_vqav2(answers_path, annotation_path, *, missing="official") -> dict:
    return _score_vqa("vqav2", answers_path, annotation_path, missing)


@register_scorer("textvqa", "TextVQA", aliases=("text-vqa",))
def score_textvqa(answers_path, annotation_path, *, missing="official") -> dict:
    return _score_vqa("textvqa", answers_path, annotation_path, missing)
