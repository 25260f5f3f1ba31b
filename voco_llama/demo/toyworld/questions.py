"""Questions: every unambiguous question a template can ask about a scene (`candidates`), LLaVA's
instruction strings, and the balanced selection both the training records and the benches use.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from .scenes import (
    BACKGROUND_NAMES,
    COLOR_NAMES,
    NUMBER_WORDS,
    OBJECT_NAMES,
    POSITIONS,
    SHAPES,
    SIDES,
    SIZES,
    Obj,
    Scene,
    article,
)

# ----------------------------------------------------------------------------------------------
# Instructions and conversation strings (LLaVA-1.5 / vicuna_v1)
# ----------------------------------------------------------------------------------------------

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
MULTIPLE_CHOICE = "\nAnswer with the option's letter from the given choices directly."
YES_NO = " Please answer yes or no."
LETTERS = ("A", "B", "C", "D")
CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Give a short and clear explanation of the image.",
    "Summarize the visual content of the image.",
)
# Templates: which appear where, how often in training, and their category names per bench.
TEMPLATES = (
    "color", "shape", "size", "count", "exist", "where", "relation", "background",
    "verify_color", "verify_count", "verify_position",
)  # fmt: skip
YES_NO_TEMPLATES = ("exist", "verify_color", "verify_count", "verify_position")
MC_TEMPLATES = ("color", "shape", "count", "where", "relation", "background")  # >= 4 possible answers

# ----------------------------------------------------------------------------------------------
# Questions: every unambiguous question a template can ask about a scene
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    template: str
    question: str  # without any instruction suffix
    answer: str
    key: str = ""  # answers are also balanced within a key (e.g. the object asked about)
    choices: tuple[str, ...] = ()  # the answer space, for multiple choice
    near: tuple[str, ...] = ()  # preferred wrong options (e.g. the other objects of the scene)


def _refs(o: Obj, objects: tuple[Obj, ...], kinds: tuple[str, ...]) -> list[str]:
    """Unambiguous referring expressions for `o`, of the allowed kinds."""
    return [ref for _, ref in _refs_by_kind(o, objects, kinds)]


def _refs_by_kind(o: Obj, objects: tuple[Obj, ...], kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    refs = []
    if "shape" in kinds and sum(p.shape == o.shape for p in objects) == 1:
        refs.append(("shape", f"the {o.shape}"))
    if "color" in kinds and sum(p.color == o.color for p in objects) == 1:
        refs.append(("color", f"the {o.color} object"))
    if "both" in kinds:
        refs.append(("both", f"the {o.name}"))
    if "position" in kinds:
        refs.append(("position", f"the object in the {o.position}"))
    return refs


def _side_question(ref: str, side: str) -> str:
    if side in ("left", "right"):
        return f"Is {ref} on the {side} side of the image?"
    return f"Is {ref} at the {side} of the image?"


def _count_question(word: str, where: str = "the image") -> str:
    if word == "one":
        return f"Is there exactly one object in {where}?"
    return f"Are there exactly {word} objects in {where}?"


RELATIONS = {
    "left": ("to the left of", lambda a, b: a.col < b.col),
    "right": ("to the right of", lambda a, b: a.col > b.col),
    "above": ("above", lambda a, b: a.row < b.row),
    "below": ("below", lambda a, b: a.row > b.row),
}


def candidates(scene: Scene) -> dict[str, list[QA]]:
    """template -> all unambiguous questions about `scene` (deterministic order)."""
    objs = scene.objects
    out: dict[str, list[QA]] = {t: [] for t in TEMPLATES}
    present_names = {o.name for o in objs}
    for o in objs:
        for ref in _refs(o, objs, ("shape", "position")):
            out["color"].append(QA("color", f"What color is {ref}?", o.color, o.shape, COLOR_NAMES))
            for c in COLOR_NAMES:
                out["verify_color"].append(QA("verify_color", f"Is {ref} {c}?", "yes" if c == o.color else "no", c))
        for ref in _refs(o, objs, ("color", "position")):
            out["shape"].append(QA("shape", f"What shape is {ref}?", o.shape, o.color, SHAPES))
        for ref in _refs(o, objs, ("shape", "both", "position")):
            out["size"].append(QA("size", f"Is {ref} small or large?", o.size, o.shape, SIZES))
        for ref in _refs(o, objs, ("shape", "color", "both")):
            out["where"].append(QA("where", f"Where is {ref}?", o.position, "", POSITIONS))
            for side in SIDES:
                answer = "yes" if side in o.sides else "no"
                out["verify_position"].append(QA("verify_position", _side_question(ref, side), answer, side))
        for direction, (phrase, holds) in RELATIONS.items():
            matches = [p for p in objs if p is not o and holds(p, o)]
            if len(matches) != 1:
                continue
            target = matches[0]
            near = tuple(p.name for p in objs if p is not o and p is not target)
            for kind, ref in _refs_by_kind(o, objs, ("shape", "color", "both")):
                # Wrong options must be as plausible as the answer: "the circle" is the only circle,
                # so no option may be a circle, or an image-blind model could rule it out.
                plausible = tuple(
                    name
                    for name in OBJECT_NAMES
                    if name != o.name
                    and not (kind == "shape" and name.endswith(" " + o.shape))
                    and not (kind == "color" and name.startswith(o.color + " "))
                )
                out["relation"].append(
                    QA("relation", f"Which object is {phrase} {ref}?", target.name, direction, plausible, near)
                )
    n = NUMBER_WORDS[len(objs) - 1]
    for q in ("How many objects are there in the image?", "How many objects are in the image?"):
        out["count"].append(QA("count", q, n, "", NUMBER_WORDS))
    for w in NUMBER_WORDS:
        out["verify_count"].append(QA("verify_count", _count_question(w), "yes" if w == n else "no", w))
    subjects = [(name, name in present_names) for name in OBJECT_NAMES]
    subjects += [(s, any(o.shape == s for o in objs)) for s in SHAPES]
    subjects += [(f"{c} object", any(o.color == c for o in objs)) for c in COLOR_NAMES]
    for subject, present in subjects:
        q = f"Is there {article(subject)} {subject} in the image?"
        out["exist"].append(QA("exist", q, "yes" if present else "no", subject))
    for q in ("What does the background look like?", "What kind of background does the image have?"):
        out["background"].append(QA("background", q, scene.background, "", BACKGROUND_NAMES))
    return out


# ----------------------------------------------------------------------------------------------
# Balanced selection
# ----------------------------------------------------------------------------------------------


class _Balancer:
    """Greedy balancing: prefer the candidate whose answer has been chosen least often for its
    template, then whose (key, answer) has, then whose image has been used least."""

    def __init__(self) -> None:
        self.answers: Counter = Counter()
        self.key_answers: Counter = Counter()
        self.images: Counter = Counter()

    def score(self, qa: QA, image: str, tie: float) -> tuple:
        return (
            self.answers[qa.template, qa.answer],
            self.key_answers[qa.template, qa.key, qa.answer],
            self.images[image],
            tie,
        )

    def take(self, qa: QA, image: str) -> None:
        self.answers[qa.template, qa.answer] += 1
        self.key_answers[qa.template, qa.key, qa.answer] += 1
        self.images[image] += 1


def _select(pool: list[tuple[Scene, QA]], n: int, rng: random.Random) -> list[tuple[Scene, QA]]:
    """Pick n distinct (scene, question) pairs from `pool` with balanced answers: the `_Balancer`
    order, computed per (template, answer) bucket so that large pools stay fast."""
    seen, buckets = set(), {}
    for scene, qa in pool:
        if (scene.id, qa.question) not in seen:
            seen.add((scene.id, qa.question))
            buckets.setdefault((qa.template, qa.answer), []).append((rng.random(), scene, qa))
    for bucket, items in buckets.items():  # a random subset per answer is plenty to choose from
        if len(items) > 16 * n:
            buckets[bucket] = rng.sample(items, 16 * n)
    bal, chosen = _Balancer(), []
    bucket_tie = {b: rng.random() for b in buckets}
    for _ in range(min(n, sum(len(items) for items in buckets.values()))):
        bucket = min((b for b in buckets if buckets[b]), key=lambda b: (bal.answers[b], bucket_tie[b]))
        items = buckets[bucket]
        i = min(range(len(items)), key=lambda j: bal.score(items[j][2], items[j][1].id, items[j][0]))
        _, scene, qa = items.pop(i)
        bal.take(qa, scene.id)
        chosen.append((scene, qa))
    return chosen


def _least_used_letter(counts: Counter, key: str, rng: random.Random) -> int:
    low = min(counts[key, i] for i in range(len(LETTERS)))
    i = rng.choice([i for i in range(len(LETTERS)) if counts[key, i] == low])
    counts[key, i] += 1
    return i


def _options(qa: QA, correct_index: int, rng: random.Random) -> list[str]:
    """Four options with the answer at `correct_index`; wrong options prefer `qa.near`."""
    near = [c for c in qa.near if c != qa.answer]
    rng.shuffle(near)
    rest = [c for c in qa.choices if c != qa.answer and c not in near]
    rng.shuffle(rest)
    wrong = (near[:2] + rest)[: len(LETTERS) - 1]
    rng.shuffle(wrong)
    return wrong[:correct_index] + [qa.answer] + wrong[correct_index:]


def multiple_choice_text(question: str, options: list[str]) -> str:
    lines = [question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + MULTIPLE_CHOICE


def _split_count(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
