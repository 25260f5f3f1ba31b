"""The six evaluation benches, each in its benchmark's question and answer-key format (see the
package docstring for what each one imitates).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ...eval.scorers.vqa import vqa_normalize
from .questions import (
    LETTERS,
    MC_TEMPLATES,
    QA,
    SHORT_ANSWER,
    YES_NO,
    _count_question,
    _least_used_letter,
    _options,
    _refs,
    _select,
    _side_question,
    _split_count,
    candidates,
    multiple_choice_text,
)
from .scenes import COLOR_NAMES, MAX_OBJECTS, NUMBER_WORDS, OBJECT_NAMES, OPPOSITE_SIDE, Scene, article

BENCHES = ("gqa", "vqav2", "pope", "mme", "mmbench", "seed")
DEFAULT_EVAL_QUESTIONS = {"gqa": 160, "vqav2": 150, "pope": 180, "mme": 160, "mmbench": 160, "seed": 150}
GQA_TEMPLATES = ("color", "shape", "size", "count", "exist", "where", "relation", "background")
VQAV2_TEMPLATES = {"color": "other", "count": "number", "exist": "yes/no", "shape": "other", "where": "other"}
MMBENCH_CATEGORIES = {
    "color": "attribute_recognition",
    "shape": "attribute_recognition",
    "count": "counting",  # MMBench has no counting leaf; named plainly
    "where": "object_localization",
    "relation": "spatial_relationship",
    "background": "image_scene",
}
SEED_CATEGORIES = {
    "background": "Scene Understanding",
    "shape": "Instance Identity",
    "color": "Instance Attributes",
    "where": "Instance Location",
    "count": "Instances Counting",
    "relation": "Spatial Relation",
}
POPE_CATEGORIES = ("random", "popular", "adversarial")
MME_SUBTASKS = ("existence", "count", "position", "color")

# ----------------------------------------------------------------------------------------------
# Evaluation benches
# ----------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One evaluation question: what goes into questions.jsonl and answer_key.jsonl."""

    image: str
    text: str
    answer: str
    category: str
    answers: list[str] | None = None
    group: int | None = None


class _Stats:
    """Training-scene statistics POPE's popular/adversarial negatives are drawn from."""

    def __init__(self, train_scenes: list[Scene]):
        self.frequency: Counter = Counter(o.name for s in train_scenes for o in s.objects)
        self.cooccurrence: Counter = Counter()
        for s in train_scenes:
            for a in s.objects:
                for b in s.objects:
                    if a is not b:
                        self.cooccurrence[a.name, b.name] += 1


def _bench_gqa(scenes, cands, n, rng) -> list[_Item]:
    items = []
    for template, n_t in zip(GQA_TEMPLATES, _split_count(n, len(GQA_TEMPLATES))):
        pool = [(s, qa) for s in scenes for qa in cands[s.id][template]]
        items += [_Item(s.image, qa.question + SHORT_ANSWER, qa.answer, template) for s, qa in _select(pool, n_t, rng)]
    rng.shuffle(items)
    return items


# Annotator answers for the vqav2 bench.
_NEIGHBOR_COLORS = {
    "red": ("orange", "purple"),
    "orange": ("red", "yellow"),
    "yellow": ("orange", "green"),
    "green": ("yellow", "blue"),
    "blue": ("purple", "green"),
    "purple": ("blue", "red"),
}
_SIMILAR_SHAPES = {
    "circle": ("oval", "square"),
    "square": ("rectangle", "circle"),
    "triangle": ("star", "arrow"),
    "star": ("cross", "triangle"),
    "cross": ("plus", "star"),
}


def _other_answer(answer: str, template: str, rng: random.Random) -> str:
    """A plausible annotator disagreement."""
    if template == "color":
        return rng.choice(_NEIGHBOR_COLORS[answer])
    if template == "shape":
        return rng.choice(_SIMILAR_SHAPES[answer])
    if template == "count":
        i = NUMBER_WORDS.index(answer)
        return str(rng.choice([j for j in (i - 1, i + 1) if 0 <= j < MAX_OBJECTS]) + 1)
    if template == "exist":
        return "no" if answer == "yes" else "yes"
    synonyms = answer.replace("top", "upper").replace("bottom", "lower").replace("center", "middle")
    return rng.choice((synonyms, answer.split()[0])) if synonyms != answer else "middle"


def _annotator_answers(qa: QA, rng: random.Random) -> list[str]:
    n_other = rng.choices((0, 1, 2, 3), weights=(50, 25, 15, 10))[0]
    answers = [_other_answer(qa.answer, qa.template, rng) for _ in range(n_other)]
    answers += [qa.answer] * (10 - n_other)
    rng.shuffle(answers)
    # Real VQAv2 annotations come normalised ("2", "top left") and the official evaluator does not
    # normalise them again (beyond punctuation when they disagree): written the same way here.
    return [vqa_normalize(a) for a in answers]


def _bench_vqav2(scenes, cands, n, rng) -> list[_Item]:
    items = []
    for (template, answer_type), n_t in zip(VQAV2_TEMPLATES.items(), _split_count(n, len(VQAV2_TEMPLATES))):
        pool = [(s, qa) for s in scenes for qa in cands[s.id][template]]
        for s, qa in _select(pool, n_t, rng):
            items.append(
                _Item(s.image, qa.question + SHORT_ANSWER, qa.answer, answer_type, answers=_annotator_answers(qa, rng))
            )
    rng.shuffle(items)
    return items


def _pope_negatives(category: str, scene: Scene, k: int, stats: _Stats, rng: random.Random) -> list[str]:
    present = [o.name for o in scene.objects]
    absent = [name for name in OBJECT_NAMES if name not in present]
    if category == "random":
        return rng.sample(absent, k)
    tie = {name: rng.random() for name in absent}
    if category == "popular":
        return sorted(absent, key=lambda a: (-stats.frequency[a], tie[a]))[:k]

    # adversarial: share a colour or a shape with as many present objects as possible
    def shared(a: str) -> int:
        color, shape = a.split()
        return sum(o.color == color or o.shape == shape for o in scene.objects)

    def cooc(a: str) -> int:
        return sum(stats.cooccurrence[p, a] for p in present)

    return sorted(absent, key=lambda a: (-shared(a), -cooc(a), tie[a]))[:k]


def _bench_pope(scenes, n, stats: _Stats, rng) -> list[_Item]:
    per_category = max(2, n // len(POPE_CATEGORIES))
    order = list(scenes)
    rng.shuffle(order)
    picks, total = [], 0  # (scene, positives); the same for every category, as in POPE
    for s in order:
        k = min(3, len(s.objects), (per_category - total) // 2)
        if k <= 0:
            break
        picks.append((s, rng.sample([o.name for o in s.objects], k)))
        total += 2 * k
    items = []
    for category in POPE_CATEGORIES:
        for s, positives in picks:
            negatives = _pope_negatives(category, s, len(positives), stats, rng)
            qs = [(p, "yes") for p in positives] + [(a, "no") for a in negatives]
            rng.shuffle(qs)
            for obj, answer in qs:
                text = f"Is there {article(obj)} {obj} in the image?" + SHORT_ANSWER
                items.append(_Item(s.image, text, answer, category))
    return items


def _mme_pair(subtask: str, scene: Scene, stats: _Stats, rng: random.Random) -> tuple[str, str] | None:
    """(question answered yes, question answered no) about one scene, or None if not askable."""
    objs = scene.objects
    if subtask == "existence":
        present = [o.name for o in objs]
        absent = [a for a in OBJECT_NAMES if a not in present]
        yes = rng.choice(present)
        no = rng.choices(absent, weights=[stats.frequency[a] + 1 for a in absent])[0]
        return (f"Is there {article(yes)} {yes} in this image?", f"Is there {article(no)} {no} in this image?")
    if subtask == "count":
        n = NUMBER_WORDS[len(objs) - 1]
        wrong = rng.choice([w for w in NUMBER_WORDS if w != n])
        return _count_question(n, "this image"), _count_question(wrong, "this image")
    if subtask == "position":
        options = [(o, ref) for o in objs if o.sides for ref in _refs(o, objs, ("shape", "color", "both"))]
        if not options:
            return None
        o, ref = rng.choice(options)
        side = rng.choice(o.sides)
        wrong = OPPOSITE_SIDE[rng.choice(o.sides)]
        return _side_question(ref, side), _side_question(ref, wrong)
    if subtask == "color":
        o = rng.choice(objs)
        ref = rng.choice(_refs(o, objs, ("shape", "position")))
        wrong = rng.choice([c for c in COLOR_NAMES if c != o.color])
        return f"Is {ref} {o.color}?", f"Is {ref} {wrong}?"
    raise ValueError(subtask)


def _bench_mme(scenes, n, stats: _Stats, rng) -> list[_Item]:
    items = []
    for subtask, n_sub in zip(MME_SUBTASKS, _split_count(n, len(MME_SUBTASKS))):
        order = list(scenes)
        rng.shuffle(order)
        images = 0
        for s in order:
            if images >= max(1, n_sub // 2):
                break
            pair = _mme_pair(subtask, s, stats, rng)
            if pair is None:
                continue
            images += 1
            qs = [(pair[0], "yes"), (pair[1], "no")]
            rng.shuffle(qs)
            items += [_Item(s.image, q + YES_NO + SHORT_ANSWER, a, subtask) for q, a in qs]
    return items


def _mc_pool(scenes, cands) -> dict[str, list[tuple[Scene, QA]]]:
    return {t: [(s, qa) for s in scenes for qa in cands[s.id][t]] for t in MC_TEMPLATES}


def _bench_mmbench(scenes, cands, n, rng) -> list[_Item]:
    pools, letters = _mc_pool(scenes, cands), Counter()
    groups = []
    for template, n_t in zip(MC_TEMPLATES, _split_count(max(1, n // len(LETTERS)), len(MC_TEMPLATES))):
        for s, qa in _select(pools[template], n_t, rng):
            index = _least_used_letter(letters, template, rng)
            groups.append((s, qa, _options(qa, index, rng), index))
    rng.shuffle(groups)
    items = []
    for group, (s, qa, options, index) in enumerate(groups):
        for shift in range(len(LETTERS)):  # circular evaluation: rotate the options
            rotated = options[shift:] + options[:shift]
            letter = LETTERS[(index - shift) % len(LETTERS)]
            text = multiple_choice_text(qa.question, rotated)
            items.append(_Item(s.image, text, letter, MMBENCH_CATEGORIES[qa.template], group=group))
    return items


def _bench_seed(scenes, cands, n, rng) -> list[_Item]:
    pools, letters = _mc_pool(scenes, cands), Counter()
    items = []
    for template, n_t in zip(MC_TEMPLATES, _split_count(n, len(MC_TEMPLATES))):
        for s, qa in _select(pools[template], n_t, rng):
            index = _least_used_letter(letters, template, rng)
            text = multiple_choice_text(qa.question, _options(qa, index, rng))
            items.append(_Item(s.image, text, LETTERS[index], SEED_CATEGORIES[template]))
    rng.shuffle(items)
    return items


def _bench_files(items: list[_Item]) -> tuple[str, str]:
    """(questions.jsonl, answer_key.jsonl) contents; question ids are 0..n-1 in file order."""
    questions, keys = [], []
    for qid, it in enumerate(items):
        questions.append({"question_id": qid, "image": it.image, "text": it.text, "category": it.category})
        key = {"question_id": qid, "answer": it.answer}
        if it.answers is not None:
            key["answers"] = it.answers
        key["category"] = it.category
        key["image"] = it.image
        if it.group is not None:
            key["group"] = it.group
        keys.append(key)
    return questions, keys


def _build_benches(eval_scenes, train_scenes, sizes: Mapping[str, int], seed: int) -> dict[str, list[_Item]]:
    cands = {s.id: candidates(s) for s in eval_scenes}
    stats = _Stats(train_scenes)
    benches = {}
    for bench in BENCHES:
        rng = random.Random(f"toyworld/{seed}/bench/{bench}")
        n = sizes[bench]
        if bench == "gqa":
            benches[bench] = _bench_gqa(eval_scenes, cands, n, rng)
        elif bench == "vqav2":
            benches[bench] = _bench_vqav2(eval_scenes, cands, n, rng)
        elif bench == "pope":
            benches[bench] = _bench_pope(eval_scenes, n, stats, rng)
        elif bench == "mme":
            benches[bench] = _bench_mme(eval_scenes, n, stats, rng)
        elif bench == "mmbench":
            benches[bench] = _bench_mmbench(eval_scenes, cands, n, rng)
        else:
            benches[bench] = _bench_seed(eval_scenes, cands, n, rng)
    return benches
