"""Training records in the llava_v1_5_mix665k schema: multi-turn image QA, captions, and a share of
text-only records.
"""

from __future__ import annotations

import random
from collections import Counter

from .questions import (
    CAPTION_PROMPTS,
    LETTERS,
    MC_TEMPLATES,
    SHORT_ANSWER,
    TEMPLATES,
    YES_NO,
    YES_NO_TEMPLATES,
    _Balancer,
    _least_used_letter,
    _options,
    candidates,
    multiple_choice_text,
)
from .scenes import COLOR_NAMES, MAX_OBJECTS, NUMBER_WORDS, SHAPE_PLURALS, SHAPES, SIZES, Scene, caption

TRAIN_TEMPLATE_WEIGHTS = {
    "color": 3, "shape": 2, "size": 1, "count": 2, "exist": 3, "where": 2, "relation": 2,
    "background": 1, "verify_color": 1, "verify_count": 1, "verify_position": 1,
}  # fmt: skip

# ----------------------------------------------------------------------------------------------
# Training records (llava_v1_5_mix665k schema)
# ----------------------------------------------------------------------------------------------


def _yes_no_style(question: str, rng: random.Random) -> str:
    """Phrasing variety for yes/no questions, so MME's wording is in-distribution."""
    if rng.random() < 0.5:
        question = question.replace("in the image?", "in this image?")
    if rng.random() < 0.3:
        question += YES_NO
    return question


def _train_record(
    scene: Scene,
    rng: random.Random,
    bal: _Balancer,
    letters: Counter,
    questions: tuple[int, int] = (2, 5),
    multiple_choice: float = 0.25,
) -> dict:
    cands = candidates(scene)
    turns: list[tuple[str, str]] = []
    if rng.random() < 0.15:
        turns.append((rng.choice(CAPTION_PROMPTS), caption(scene)))
        n_questions = rng.choice((0, 0, 1, 2))
    else:
        n_questions = rng.randint(*questions)
    asked: set[str] = set()
    for _ in range(n_questions):
        open_templates = [t for t in TEMPLATES if any(qa.question not in asked for qa in cands[t])]
        if not open_templates:
            break
        template = rng.choices(open_templates, weights=[TRAIN_TEMPLATE_WEIGHTS[t] for t in open_templates])[0]
        pool = [qa for qa in cands[template] if qa.question not in asked]
        qa = min(pool, key=lambda c: bal.score(c, "", rng.random()))
        bal.take(qa, "")
        asked.add(qa.question)
        if template in MC_TEMPLATES and rng.random() < multiple_choice:
            index = _least_used_letter(letters, template, rng)
            turns.append((multiple_choice_text(qa.question, _options(qa, index, rng)), LETTERS[index]))
        elif template in YES_NO_TEMPLATES:
            turns.append((_yes_no_style(qa.question, rng) + SHORT_ANSWER, qa.answer))
        else:
            turns.append((qa.question + SHORT_ANSWER, qa.answer))
    first = turns[0][0]
    first = f"{first}\n<image>" if rng.random() < 0.15 else f"<image>\n{first}"
    turns[0] = (first, turns[0][1])
    return {"id": scene.id, "image": scene.image, "conversations": conversations(turns)}


def conversations(turns: list[tuple[str, str]]) -> list[dict]:
    conv = []
    for q, a in turns:
        conv.append({"from": "human", "value": q})
        conv.append({"from": "gpt", "value": a})
    return conv


def _text_only_record(index: int, rng: random.Random) -> dict:
    """A record needing no image (the ShareGPT share of LLaVA's mix), about the world's words."""
    words = list(COLOR_NAMES) + list(SHAPES) + list(SIZES) + list(NUMBER_WORDS)
    turns = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("copy", "category", "number", "plural"))
        if kind == "copy":
            picked = rng.sample(words, rng.randint(2, 4))
            turns.append((f"Repeat these words: {' '.join(picked)}", " ".join(picked)))
        elif kind == "category":
            group = rng.choice(("color", "shape"))
            word = rng.choice(COLOR_NAMES if group == "color" else SHAPES)
            turns.append((f"Is {word} a color or a shape?", group))
        elif kind == "number":
            d = rng.randint(1, MAX_OBJECTS)
            turns.append((f"Write the number {d} as a word.", NUMBER_WORDS[d - 1]))
        else:
            s = rng.choice(SHAPES)
            turns.append((f"What is the plural of {s}?", SHAPE_PLURALS[s]))
    return {"id": f"text_{index:05d}", "conversations": conversations(turns)}


def _train_records(
    scenes: list[Scene],
    seed: int,
    text_only_fraction: float,
    questions: tuple[int, int] = (2, 5),
    multiple_choice: float = 0.25,
) -> list[dict]:
    rng = random.Random(f"toyworld/{seed}/train")
    bal, letters = _Balancer(), Counter()
    records = [_train_record(s, rng, bal, letters, questions, multiple_choice) for s in scenes]
    n_text = round(len(scenes) * text_only_fraction / (1 - text_only_fraction)) if text_only_fraction > 0 else 0
    text_records = [_text_only_record(i, rng) for i in range(n_text)]
    # Spread the text-only records through the list, as in LLaVA's mix.
    for rec in text_records:
        records.insert(rng.randint(0, len(records)), rec)
    return records
