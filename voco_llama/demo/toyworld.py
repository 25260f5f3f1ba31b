"""A synthetic visual world in the LLaVA-1.5 file formats, generated deterministically from a seed.

No pretrained weights or datasets can be downloaded here, so the project proves the method on a small
world it draws itself and trains a tiny LLaVA-style model on. This module only *generates* the world;
training and evaluation read the files through the same code paths as real LLaVA data.

The world
---------
An image (RGB, `image_size` square, 64 px by default) holds 1 to 4 objects on a 3x3 grid, at most one
object per cell, so objects never overlap and every spatial word has a single meaning:

- shape: circle, square, triangle, star, cross (circles are the most frequent, crosses the rarest:
  the skew gives POPE's "popular" split something to be about);
- colour: red, green, blue, yellow, purple, orange (saturated; drawn without anti-aliasing, so the
  pixel at an object's centre is exactly its colour);
- size: small or large;
- position: the grid cell, named "top left", "top center", "top right", "middle left", "center",
  "middle right", "bottom left", "bottom center", "bottom right". "On the left side" means the left
  column, "at the top" the top row; "A is to the left of B" means A's column is left of B's (rows
  likewise for above/below);
- background: white, gray, black, striped or checkered; all background pixels are gray levels, so
  they never equal an object colour.

No two objects in a scene share both colour and shape, so "the red circle" always names one object;
"the circle" / "the red object" are only used when the scene has exactly one circle / red object.
Every image is distinct (no two scenes have the same objects in the same cells on the same background),
and train and eval images are different images.

Questions are generated from templates (`TEMPLATES`): color, shape, size, count ("one".."four"),
exist (yes/no), where (a cell name), relation ("Which object is to the left of the X?" asked only
when exactly one object qualifies), background, and the yes/no verifications MME asks
(verify_color, verify_count, verify_position). Answers are balanced by construction: selection is
greedy on answer counts, so for each template every answer is about equally frequent overall and,
within a subject (e.g. "Is there a red circle?"), yes and no are equally frequent; the letter of the
right multiple-choice option is balanced the same way. An image-blind model is therefore at chance,
while a model that sees the image can answer everything.

Files written by `generate_world(out_dir)`
-----------------------------------------
    images/train_000000.png ...        training images
    images/eval_00000.png ...          evaluation images (shared by the benches, like COCO val)
    train.json                         LLaVA instruction JSON (llava_v1_5_mix665k schema), multi-turn;
                                       `image` is relative to images/; ~5% text-only records
    scenes.json                        ground truth: per image the background, objects and caption
    eval/<bench>/questions.jsonl       LLaVA question file: question_id, image, text, category
    eval/<bench>/answer_key.jsonl      question_id, answer, category, image (the file name, as in
                                       questions.jsonl), + answers (vqav2), + group (mmbench)
    world.json                         config, vocabulary, object frequencies, counts; written last,
                                       so its presence marks a complete world
    tokenizer/                         only after `build_world_tokenizer(out_dir)`

The benches (`BENCHES`), each imitating one of the paper's benchmarks:

- gqa: short answers (exact match), category = template.
- vqav2: short answers with 10 annotator answers: mostly the canonical answer, some surface variants
  that the VQA normaliser maps back to it ("2" for "two", "Red", "top-left"), and some genuine
  disagreement (an off-by-one count, a neighbouring colour, "upper left"), so soft accuracy is
  meaningful; category = VQAv2 answer type ("yes/no", "number", "other").
- pope: "Is there a {object} in the image?" where an object is a colour+shape ("red circle"). As in
  POPE, the same images and the same positives (up to 3 present objects per image) are used for each
  category, with as many negatives: random = absent objects drawn uniformly; popular = the absent
  objects most frequent in the training scenes; adversarial = absent objects that share a colour or
  a shape with the most present objects (a "blue circle" next to a red circle and a blue square),
  ties broken by how often they co-occur with the present objects in training scenes. Sharing an
  attribute is this world's version of POPE's co-occurrence: in a world where objects are placed
  independently co-occurrence alone carries no signal, while a near-miss object tests whether the
  model binds colour to shape, which is exactly what a compressed image representation may lose.
- mme: per image and subtask (existence, count, position, color) exactly two yes/no questions, one
  true and one false: MME's "...? Please answer yes or no." followed by the short-answer instruction
  (LLaVA evaluates MME as a short-answer bench). acc+ needs both questions of an image right.
- mmbench: 4-option multiple choice; every question appears in 4 copies whose options are rotated
  circularly (the answer letter follows the rotation); the copies share `group`.
- seed: 4-option multiple choice, category = SEED-Bench-style question type.

API: `generate_world(out_dir, seed, ...) -> World` writes everything; `ensure_world` reuses a world
generated with the same arguments; `load_world` opens one; `world_texts` and `build_world_tokenizer`
give the tokenizer. `candidates(scene)` lists every question the templates can ask about a scene.

Instruction strings are LLaVA's: short answers end with `SHORT_ANSWER`, multiple choice with
`MULTIPLE_CHOICE`; the eval `text` already contains them, and the model's prompt is `<image>\\n{text}`.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..core.files import write_atomic, write_json_atomic, write_jsonl_atomic

FORMAT_VERSION = 1

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "star", "cross")
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
# Relative frequency of each shape in scenes (colours are uniform).
SHAPE_WEIGHTS = {"circle": 1.6, "square": 1.3, "triangle": 1.0, "star": 0.8, "cross": 0.6}
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 30),
    "purple": (140, 50, 190),
    "orange": (250, 135, 20),
}
COLOR_NAMES = tuple(COLORS)
SIZES = ("small", "large")
POSITIONS = (
    "top left", "top center", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom center", "bottom right",
)  # fmt: skip
# name -> (base colour, pattern colour); all gray levels.
BACKGROUNDS = {
    "white": ((255, 255, 255), None),
    "gray": ((128, 128, 128), None),
    "black": ((25, 25, 25), None),
    "striped": ((236, 236, 236), (196, 196, 196)),
    "checkered": ((228, 228, 228), (168, 168, 168)),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
NUMBER_WORDS = ("one", "two", "three", "four")
MAX_OBJECTS = len(NUMBER_WORDS)
OBJECT_NAMES = tuple(f"{c} {s}" for c in COLOR_NAMES for s in SHAPES)  # POPE's object vocabulary
SIDES = ("left", "right", "top", "bottom")
OPPOSITE_SIDE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

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
SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
USER_SEP, ASSISTANT_SEP, EOS = " USER: ", " ASSISTANT: ", "</s>"

# ----------------------------------------------------------------------------------------------
# Defaults
# ----------------------------------------------------------------------------------------------

BENCHES = ("gqa", "vqav2", "pope", "mme", "mmbench", "seed")
DEFAULT_EVAL_QUESTIONS = {"gqa": 160, "vqav2": 150, "pope": 180, "mme": 160, "mmbench": 160, "seed": 150}
DEFAULT_TOKENIZER_VOCAB = 1024

# Templates: which appear where, how often in training, and their category names per bench.
TEMPLATES = (
    "color", "shape", "size", "count", "exist", "where", "relation", "background",
    "verify_color", "verify_count", "verify_position",
)  # fmt: skip
TRAIN_TEMPLATE_WEIGHTS = {
    "color": 3, "shape": 2, "size": 1, "count": 2, "exist": 3, "where": 2, "relation": 2,
    "background": 1, "verify_color": 1, "verify_count": 1, "verify_position": 1,
}  # fmt: skip
YES_NO_TEMPLATES = ("exist", "verify_color", "verify_count", "verify_position")
GQA_TEMPLATES = ("color", "shape", "size", "count", "exist", "where", "relation", "background")
VQAV2_TEMPLATES = {"color": "other", "count": "number", "exist": "yes/no", "shape": "other", "where": "other"}
MC_TEMPLATES = ("color", "shape", "count", "where", "relation", "background")  # >= 4 possible answers
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
# The world on disk
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Paths of a generated world (everything lives under `root`)."""

    root: Path

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def train_json(self) -> Path:
        return self.root / "train.json"

    @property
    def scenes_json(self) -> Path:
        return self.root / "scenes.json"

    @property
    def meta_json(self) -> Path:
        return self.root / "world.json"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def benches(self) -> tuple[str, ...]:
        return BENCHES

    def questions(self, bench: str) -> Path:
        return self.eval_dir / bench / "questions.jsonl"

    def answer_key(self, bench: str) -> Path:
        return self.eval_dir / bench / "answer_key.jsonl"

    def image_path(self, image: str) -> Path:
        """Path of an image given its id ("eval_00003") or file name ("eval_00003.png")."""
        return self.images_dir / (image if image.endswith(".png") else f"{image}.png")

    def meta(self) -> dict:
        return json.loads(self.meta_json.read_text())

    def scenes(self) -> dict[str, dict]:
        """image id -> scene dict (background, objects, caption)."""
        return {s["id"]: s for s in json.loads(self.scenes_json.read_text())["scenes"]}

    def to_dict(self) -> dict[str, str]:
        paths = {
            "root": self.root,
            "images": self.images_dir,
            "train_json": self.train_json,
            "scenes_json": self.scenes_json,
            "world_json": self.meta_json,
            "tokenizer": self.tokenizer_dir,
        }
        for b in BENCHES:
            paths[f"{b}_questions"] = self.questions(b)
            paths[f"{b}_answer_key"] = self.answer_key(b)
        return {k: str(v) for k, v in paths.items()}


def load_world(out_dir: str | Path | World) -> World:
    """Open an already generated world (fails if generation never completed)."""
    world = out_dir if isinstance(out_dir, World) else World(Path(out_dir))
    if not world.meta_json.is_file():
        raise FileNotFoundError(f"{world.root} holds no complete toy world (no world.json); run generate_world")
    return world


# ----------------------------------------------------------------------------------------------
# Scenes: sampling, drawing, captions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    cell: int  # 0..8, row-major on the 3x3 grid
    x: int  # centre, pixels
    y: int
    r: int  # radius, pixels

    @property
    def row(self) -> int:
        return self.cell // 3

    @property
    def col(self) -> int:
        return self.cell % 3

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def sides(self) -> tuple[str, ...]:
        """The image sides the object is on ("left" = left column, "top" = top row)."""
        on = {"left": self.col == 0, "right": self.col == 2, "top": self.row == 0, "bottom": self.row == 2}
        return tuple(side for side in SIDES if on[side])


@dataclass(frozen=True)
class Scene:
    id: str
    split: str
    background: str
    objects: tuple[Obj, ...]  # in reading order (by cell)

    @property
    def image(self) -> str:
        return f"{self.id}.png"

    def signature(self) -> tuple:
        return self.background, tuple((o.cell, o.shape, o.color, o.size) for o in self.objects)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "image": self.image,
            "split": self.split,
            "background": self.background,
            "objects": [
                {
                    "shape": o.shape,
                    "color": o.color,
                    "size": o.size,
                    "position": o.position,
                    "cell": o.cell,
                    "row": o.row,
                    "col": o.col,
                    "center": [o.x, o.y],
                    "radius": o.r,
                }
                for o in self.objects
            ],
            "caption": caption(self),
        }


def _sample_scene(rng: random.Random, scene_id: str, split: str, image_size: int) -> Scene:
    n = rng.randint(1, MAX_OBJECTS)
    cells = sorted(rng.sample(range(9), n))
    # Distinct (colour, shape) pairs; shapes follow SHAPE_WEIGHTS, colours are uniform.
    pool = list(OBJECT_NAMES)
    weights = [SHAPE_WEIGHTS[name.split()[1]] for name in pool]
    names = []
    for _ in range(n):
        i = rng.choices(range(len(pool)), weights=weights)[0]
        names.append(pool.pop(i))
        weights.pop(i)
    cell_px = image_size / 3
    objects = []
    for cell, name in zip(cells, names):
        color, shape = name.split()
        size = rng.choice(SIZES)
        r = max(2, int(cell_px * (0.40 if size == "large" else 0.25)))
        slack = max(0, int(cell_px / 2 - r - 1))  # jitter that keeps the object inside its cell
        cx = (cell % 3 + 0.5) * cell_px
        cy = (cell // 3 + 0.5) * cell_px
        x = int(cx) + rng.randint(-slack, slack)
        y = int(cy) + rng.randint(-slack, slack)
        objects.append(Obj(shape=shape, color=color, size=size, cell=cell, x=x, y=y, r=r))
    return Scene(id=scene_id, split=split, background=rng.choice(BACKGROUND_NAMES), objects=tuple(objects))


def _sample_scenes(seed: int, split: str, count: int, image_size: int, seen: set) -> list[Scene]:
    """`count` scenes, each from its own seeded stream; a scene equal to an earlier one is redrawn."""
    digits = 6 if split == "train" else 5
    scenes = []
    for i in range(count):
        scene_id = f"{split}_{i:0{digits}d}"
        for attempt in range(1000):
            rng = random.Random(f"toyworld/{seed}/scene/{split}/{i}/{attempt}")
            scene = _sample_scene(rng, scene_id, split, image_size)
            if scene.signature() not in seen:
                break
        else:  # pragma: no cover - only for absurdly many images
            raise RuntimeError("could not draw a new distinct scene; the world is too small for this many images")
        seen.add(scene.signature())
        scenes.append(scene)
    return scenes


def render(scene: Scene, image_size: int) -> Image.Image:
    """Draw a scene (no anti-aliasing: every object pixel is exactly its colour)."""
    base, pattern = BACKGROUNDS[scene.background]
    img = Image.new("RGB", (image_size, image_size), base)
    draw = ImageDraw.Draw(img)
    if scene.background == "striped":
        step = max(2, image_size // 16)
        for y in range(step, image_size, 2 * step):
            draw.rectangle([0, y, image_size - 1, y + step - 1], fill=pattern)
    elif scene.background == "checkered":
        step = max(2, image_size // 8)
        for y in range(0, image_size, step):
            for x in range(0, image_size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=pattern)
    for o in scene.objects:
        _draw_object(draw, o)
    return img


def _draw_object(draw: ImageDraw.ImageDraw, o: Obj) -> None:
    fill, x, y, r = COLORS[o.color], o.x, o.y, o.r
    if o.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "square":
        a = max(1, round(r * 0.85))
        draw.rectangle([x - a, y - a, x + a, y + a], fill=fill)
    elif o.shape == "triangle":
        w, h = round(r * 0.95), round(r * 0.8)
        draw.polygon([(x, y - r), (x + w, y + h), (x - w, y + h)], fill=fill)
    elif o.shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((round(x + radius * math.cos(angle)), round(y + radius * math.sin(angle))))
        draw.polygon(points, fill=fill)
    elif o.shape == "cross":
        w = max(1, round(r * 0.32))
        draw.rectangle([x - r, y - w, x + r, y + w], fill=fill)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=fill)
    else:  # pragma: no cover
        raise ValueError(o.shape)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene) -> str:
    """E.g. "Two objects on a striped background: a large red circle in the top left and a small
    blue square in the center." (objects in reading order)."""
    n = len(scene.objects)
    things = [f"a {o.size} {o.color} {o.shape} in the {o.position}" for o in scene.objects]
    noun = "object" if n == 1 else "objects"
    return f"{NUMBER_WORDS[n - 1].capitalize()} {noun} on a {scene.background} background: {_join_and(things)}."


def article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


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
    scene: Scene, rng: random.Random, bal: _Balancer, letters: Counter, questions: tuple[int, int] = (2, 5)
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
        if template in MC_TEMPLATES and rng.random() < 0.25:
            index = _least_used_letter(letters, template, rng)
            turns.append((multiple_choice_text(qa.question, _options(qa, index, rng)), LETTERS[index]))
        elif template in YES_NO_TEMPLATES:
            turns.append((_yes_no_style(qa.question, rng) + SHORT_ANSWER, qa.answer))
        else:
            turns.append((qa.question + SHORT_ANSWER, qa.answer))
    first = turns[0][0]
    first = f"{first}\n<image>" if rng.random() < 0.15 else f"<image>\n{first}"
    turns[0] = (first, turns[0][1])
    return {"id": scene.id, "image": scene.image, "conversations": _conversations(turns)}


def _conversations(turns: list[tuple[str, str]]) -> list[dict]:
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
    return {"id": f"text_{index:05d}", "conversations": _conversations(turns)}


def _train_records(
    scenes: list[Scene], seed: int, text_only_fraction: float, questions: tuple[int, int] = (2, 5)
) -> list[dict]:
    rng = random.Random(f"toyworld/{seed}/train")
    bal, letters = _Balancer(), Counter()
    records = [_train_record(s, rng, bal, letters, questions) for s in scenes]
    n_text = round(len(scenes) * text_only_fraction / (1 - text_only_fraction)) if text_only_fraction > 0 else 0
    text_records = [_text_only_record(i, rng) for i in range(n_text)]
    # Spread the text-only records through the list, as in LLaVA's mix.
    for rec in text_records:
        records.insert(rng.randint(0, len(records)), rec)
    return records


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


def _same_answer_variant(answer: str, template: str, rng: random.Random) -> str:
    """A surface form VQA's answer normalisation maps back to `answer`."""
    if template == "count":
        return rng.choice((str(NUMBER_WORDS.index(answer) + 1), answer.capitalize()))
    if template == "where" and " " in answer:
        return rng.choice((answer.replace(" ", "-"), answer.capitalize(), answer + "."))
    if template == "shape":
        return rng.choice((f"{article(answer)} {answer}", answer.capitalize()))
    return rng.choice((answer.capitalize(), answer + "."))


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
    for _ in range(10 - n_other):
        answers.append(_same_answer_variant(qa.answer, qa.template, rng) if rng.random() < 0.2 else qa.answer)
    rng.shuffle(answers)
    return answers


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


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def _resolve_eval_sizes(eval_questions: int | Mapping[str, int] | None) -> dict[str, int]:
    sizes = dict(DEFAULT_EVAL_QUESTIONS)
    if isinstance(eval_questions, int):
        sizes = {b: eval_questions for b in BENCHES}
    elif eval_questions is not None:
        unknown = set(eval_questions) - set(BENCHES)
        if unknown:
            raise ValueError(f"unknown benches {sorted(unknown)}; expected some of {BENCHES}")
        sizes.update(eval_questions)
    for bench, n in sizes.items():
        if n < 8:
            raise ValueError(f"eval_questions for {bench} must be >= 8, got {n}")
    return sizes


def world_config(
    seed: int = 0,
    num_train_images: int = 3000,
    num_eval_images: int = 300,
    image_size: int = 64,
    eval_questions: int | Mapping[str, int] | None = None,
    text_only_fraction: float = 0.05,
    questions_per_image: tuple[int, int] = (2, 5),
) -> dict:
    """The full, validated configuration `generate_world` records in world.json."""
    low, high = questions_per_image
    if not 1 <= low <= high:
        raise ValueError(f"questions_per_image must be (low, high) with 1 <= low <= high, got {questions_per_image}")
    if num_train_images < 1 or num_eval_images < 8:
        raise ValueError("need num_train_images >= 1 and num_eval_images >= 8")
    if image_size < 24:
        raise ValueError(f"image_size must be >= 24 pixels, got {image_size}")
    if not 0 <= text_only_fraction < 1:
        raise ValueError(f"text_only_fraction must be in [0, 1), got {text_only_fraction}")
    return {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "num_train_images": int(num_train_images),
        "num_eval_images": int(num_eval_images),
        "image_size": int(image_size),
        "eval_questions": _resolve_eval_sizes(eval_questions),
        "text_only_fraction": float(text_only_fraction),
        "questions_per_image": [int(low), int(high)],
    }


def generate_world(
    out_dir: str | Path,
    seed: int = 0,
    num_train_images: int = 3000,
    num_eval_images: int = 300,
    image_size: int = 64,
    eval_questions: int | Mapping[str, int] | None = None,
    text_only_fraction: float = 0.05,
    questions_per_image: tuple[int, int] = (2, 5),
    progress: bool | None = None,
) -> World:
    """Generate the world into `out_dir` (see the module docstring for the files) and return it.

    `eval_questions`: questions per bench, one int for all or a mapping overriding
    `DEFAULT_EVAL_QUESTIONS` per bench (rounded down: pope to an even number per category, mme to
    whole yes/no pairs, mmbench to whole groups of 4). `progress`: tqdm bar (default: on for >= 1000
    images). Same arguments -> byte-identical files (with the same Pillow/zlib for the PNGs). Files
    of a previous world in `out_dir` are overwritten and its extra images removed.
    """
    config = world_config(
        seed, num_train_images, num_eval_images, image_size, eval_questions, text_only_fraction, questions_per_image
    )
    world = World(Path(out_dir))
    world.root.mkdir(parents=True, exist_ok=True)
    if world.meta_json.exists():
        world.meta_json.unlink()  # the world is incomplete until the new world.json is written

    seen: set = set()
    train_scenes = _sample_scenes(seed, "train", num_train_images, image_size, seen)
    eval_scenes = _sample_scenes(seed, "eval", num_eval_images, image_size, seen)
    all_scenes = train_scenes + eval_scenes

    world.images_dir.mkdir(exist_ok=True)
    show = progress if progress is not None else len(all_scenes) >= 1000
    for scene in tqdm(all_scenes, desc="toy world images", unit="img", disable=not show):
        write_atomic(world.images_dir / scene.image, _png_bytes(render(scene, image_size)))
    keep = {s.image for s in all_scenes}
    for path in world.images_dir.glob("*.png"):
        if re.fullmatch(r"(train_\d{6}|eval_\d{5})\.png", path.name) and path.name not in keep:
            path.unlink()

    benches = _build_benches(eval_scenes, train_scenes, config["eval_questions"], seed)
    for bench, items in benches.items():
        questions, keys = _bench_files(items)
        write_jsonl_atomic(world.questions(bench), questions)
        write_jsonl_atomic(world.answer_key(bench), keys)

    records = _train_records(train_scenes, seed, text_only_fraction, tuple(config["questions_per_image"]))
    write_json_atomic(world.train_json, records, indent=1)
    write_json_atomic(
        world.scenes_json, {"image_size": image_size, "scenes": [s.to_json() for s in all_scenes]}, indent=None
    )
    stats = _Stats(train_scenes)
    meta = {
        "config": config,
        "vocabulary": {
            "shapes": list(SHAPES),
            "colors": {k: list(v) for k, v in COLORS.items()},
            "sizes": list(SIZES),
            "positions": list(POSITIONS),
            "backgrounds": list(BACKGROUND_NAMES),
            "numbers": list(NUMBER_WORDS),
        },
        "counts": {
            "train_images": len(train_scenes),
            "eval_images": len(eval_scenes),
            "train_records": len(records),
            "text_only_records": sum("image" not in r for r in records),
            "train_qa_turns": sum(len(r["conversations"]) // 2 for r in records),
            "eval_questions": {b: len(items) for b, items in benches.items()},
        },
        "object_frequency": {name: stats.frequency[name] for name in OBJECT_NAMES},
        "files": {k: os.path.relpath(v, world.root) for k, v in world.to_dict().items() if k != "root"},
    }
    write_json_atomic(world.meta_json, meta, indent=1)
    return world


def ensure_world(out_dir: str | Path, **kwargs) -> World:
    """Return the world in `out_dir` if it was generated with these arguments, else generate it."""
    progress = kwargs.pop("progress", None)
    world = World(Path(out_dir))
    if world.meta_json.is_file():
        try:
            if world.meta()["config"] == world_config(**kwargs):
                return world
        except (ValueError, KeyError):
            pass
    return generate_world(out_dir, progress=progress, **kwargs)


# ----------------------------------------------------------------------------------------------
# Dense labels, for pretraining a vision tower on the world (our stand-in for CLIP's pretraining)
# ----------------------------------------------------------------------------------------------

PATCH_LABELS = (*SHAPES, *COLOR_NAMES, "small", "large")


def patch_labels(scene: dict, image_size: int, patch_size: int) -> list[list[int]]:
    """Per patch (row-major over the image's patch grid), 0/1 for each of `PATCH_LABELS`: the shape,
    colour and size of every object whose box (centre +- radius, which holds every drawn pixel)
    overlaps the patch."""
    grid = image_size // patch_size
    labels = [[0] * len(PATCH_LABELS) for _ in range(grid * grid)]
    for obj in scene["objects"]:
        (cx, cy), r = obj["center"], obj["radius"]
        on = (PATCH_LABELS.index(obj["shape"]), PATCH_LABELS.index(obj["color"]), PATCH_LABELS.index(obj["size"]))
        cols = range(max(0, (cx - r) // patch_size), min(grid - 1, (cx + r) // patch_size) + 1)
        rows = range(max(0, (cy - r) // patch_size), min(grid - 1, (cy + r) // patch_size) + 1)
        for row in rows:
            for col in cols:
                for i in on:
                    labels[row * grid + col][i] = 1
    return labels


# ----------------------------------------------------------------------------------------------
# Text for the tokenizer
# ----------------------------------------------------------------------------------------------


def render_vicuna(conversations: list[dict]) -> str:
    """A record as the vicuna_v1 template renders it (with `<image>` moved to the start, as LLaVA does)."""
    text = SYSTEM_PROMPT
    for i in range(0, len(conversations) - 1, 2):
        q, a = conversations[i]["value"], conversations[i + 1]["value"]
        if i == 0 and "<image>" in q:
            q = "<image>\n" + q.replace("<image>", "").strip()
        text += (USER_SEP if i == 0 else USER_SEP.lstrip()) + q + ASSISTANT_SEP + a + EOS
    return text


def world_texts(world: str | Path | World) -> Iterator[str]:
    """Every text a tokenizer for this world must handle: the training conversations (captions,
    questions, answers) and the evaluation prompts, rendered with the vicuna_v1 template."""
    world = load_world(world)
    for record in json.loads(world.train_json.read_text()):
        yield render_vicuna(record["conversations"])
    for bench in BENCHES:
        with world.questions(bench).open() as f:
            for line in f:
                text = json.loads(line)["text"]
                yield f"{SYSTEM_PROMPT}{USER_SEP}<image>\n{text}{ASSISTANT_SEP.rstrip()}"


def build_world_tokenizer(out_dir: str | Path | World, vocab_size: int = DEFAULT_TOKENIZER_VOCAB):
    """Train the project's byte-level BPE (`voco_llama.core.tokenizer.build_tokenizer`) on `world_texts`,
    save it to `out_dir/tokenizer/` (replacing any previous one) and return it.

    The world's text is so regular that BPE runs out of merges at about 660 entries, below the
    default cap of 1024, so every word of the world (as it occurs, e.g. after a space) is a single
    token; size an embedding with `len(tokenizer)`, not `vocab_size`."""
    from ..core.tokenizer import build_tokenizer

    world = load_world(out_dir)
    tokenizer = build_tokenizer(world_texts(world), vocab_size=vocab_size)
    tmp = Path(tempfile.mkdtemp(dir=world.root, prefix=".tokenizer."))
    os.chmod(tmp, 0o755)
    try:
        tokenizer.save_pretrained(tmp)
        old = world.root / f".tokenizer.old.{os.getpid()}"
        if world.tokenizer_dir.exists():
            os.replace(world.tokenizer_dir, old)
        os.replace(tmp, world.tokenizer_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
