"""A synthetic moving world: short clips whose questions no single frame can answer.

The video counterpart of `toyworld` (whose shapes, colours, backgrounds and drawing it reuses): each
clip is `num_frames` frames (8 to 32, default 16) of `image_size` square frames (64 px by default)
showing 2 to 4 objects of distinct shapes on a toyworld background. Each clip tells one story, and is
asked the question about it:

- direction: "Which way did the red circle move?" -> left / right / up / down. The mover runs along
  the middle row or column and is at the same place (the centre cell, same jitter) in the middle frame
  whatever its direction; the other objects sit in the corner cells. So the middle frame, alone, says
  nothing about the answer; the first and last frames differ in the stated direction.
- first_appeared: "Did the red circle appear before the blue square?" -> yes / no. Both are absent at
  the start and present from the middle frame on. (Format 1 asked "Which appeared first, A or B?";
  the toy LLM never learned to copy a name out of the question -- it answered other objects' names,
  0-20% where choosing either option gives 50% -- a text skill, not a visual one, so format 2 asks
  it as yes / no.)
- color_changes: "How many times did the square change color?" -> zero / one / two / three.
- final_color: "What color was the square at the end?" -> a colour. It changes colour 1 to 3 times,
  the last time after the middle frame, so neither the first nor the middle frame shows the answer.
- disappeared: "Did the red circle disappear?" -> yes / no (it vanishes after the middle frame).

Events are at least `num_frames // 4` frames apart, so each one stays visible in 8 uniformly sampled
frames (`video.read_video`, the dataset's default). Answers are balanced by construction: within a
split and question type the answers follow shuffled rounds of every possible answer (for
first_appeared too), so their counts differ by at most one and a model blind to
the frames is at chance. Everything is deterministic from the seed.

Files written by `generate_moving_world(out_dir)` (LLaVA / Video-ChatGPT formats)
---------------------------------------------------------------------------------
    videos/<clip id>/000.png ...        each clip a folder of PNG frames (`read_video` reads it)
    train.json                          LLaVA instruction JSON with `"video": "<clip id>"` (relative to
                                        videos/, pass it as the dataset's `video_folder`) and a
                                        `<video>` tag at the start or end of the first human turn
    clips.json                          ground truth: per clip its story (type, subject, answer) and per
                                        object its track, one `[x, y, colour]` (or null: absent) per frame
    eval/moving/questions.jsonl         LLaVA question file: question_id, video, text (+ SHORT_ANSWER),
                                        category (= question type)
    eval/moving/answer_key.jsonl        generic answer key (`scoring.py`): question_id, answer, category,
                                        video; GQA-style exact match (`bench gqa`)
    movingworld.json                    config and counts; written last, so it marks a complete world

API: `generate_moving_world(out_dir, seed, num_train_clips, num_eval_clips, num_frames, image_size,
contrast_questions) -> MovingWorld` (the paths); `moving_world_texts(world)` the texts a tokenizer
must handle; `moving_world_vocabulary()` such texts without a world (for the demos' one tokenizer).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.conversation import VIDEO_PLACEHOLDER
from ..core.files import write_atomic, write_json_atomic, write_jsonl_atomic
from ..core.processing import question_prompt
from .toyworld import (
    BACKGROUND_NAMES,
    CAPTION_PROMPTS,
    COLOR_NAMES,
    SHAPES,
    SHORT_ANSWER,
    SIZES,
    Obj,
    Scene,
    conversations,
    png_bytes,
    render,
    training_text,
)

FORMAT_VERSION = 2  # 2: first_appeared asked as yes / no
QUESTION_TYPES = ("direction", "first_appeared", "color_changes", "final_color", "disappeared")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
CHANGE_WORDS = ("zero", "one", "two", "three")
YES_NO = ("yes", "no")
# The answers each type's balancing cycles through.
ANSWER_CYCLES = {
    "direction": tuple(DIRECTIONS),
    "first_appeared": YES_NO,
    "color_changes": CHANGE_WORDS,
    "final_color": COLOR_NAMES,
    "disappeared": YES_NO,
}
CORNERS = (0, 2, 6, 8)
CENTER = 4
BENCH = "moving"


@dataclass(frozen=True)
class MovingWorld:
    """Paths of a generated moving world (everything lives under `root`)."""

    root: Path

    @property
    def videos_dir(self) -> Path:
        return self.root / "videos"

    @property
    def train_json(self) -> Path:
        return self.root / "train.json"

    @property
    def clips_json(self) -> Path:
        return self.root / "clips.json"

    @property
    def questions(self) -> Path:
        return self.root / "eval" / BENCH / "questions.jsonl"

    @property
    def answer_key(self) -> Path:
        return self.root / "eval" / BENCH / "answer_key.jsonl"

    @property
    def meta_json(self) -> Path:
        return self.root / "movingworld.json"

    def video_path(self, clip_id: str) -> Path:
        return self.videos_dir / clip_id

    def to_dict(self) -> dict[str, str]:
        names = ("videos_dir", "train_json", "clips_json", "questions", "answer_key", "meta_json")
        return {"root": str(self.root), **{n: str(getattr(self, n)) for n in names}}


# ----------------------------------------------------------------------------------------------
# Clips: objects with one state per frame
# ----------------------------------------------------------------------------------------------


@dataclass
class Track:
    shape: str
    size: str
    r: int
    states: list  # per frame: (x, y, colour) or None when absent

    @property
    def name(self) -> str:
        """Colour and shape, for an object whose colour never changes."""
        return f"{self.first_color} {self.shape}"

    @property
    def first_color(self) -> str:
        return next(s[2] for s in self.states if s is not None)


@dataclass
class Clip:
    id: str
    split: str
    background: str
    tracks: list[Track]
    kind: str  # a QUESTION_TYPES entry
    question: str
    answer: str
    caption: str
    # the same question about another object of the clip, or with its options swapped, and its answer:
    # same frames, a different answer, so only reading the frames tells them apart
    contrast: tuple[str, str] | None = None

    def frame(self, f: int, image_size: int):
        objects = []
        for t in self.tracks:
            if t.states[f] is not None:
                x, y, color = t.states[f]
                cell = min(2, y * 3 // image_size) * 3 + min(2, x * 3 // image_size)
                objects.append(Obj(shape=t.shape, color=color, size=t.size, cell=cell, x=x, y=y, r=t.r))
        return render(Scene(self.id, self.split, self.background, tuple(objects)), image_size)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "split": self.split,
            "background": self.background,
            "type": self.kind,
            "question": self.question,
            "answer": self.answer,
            "caption": self.caption,
            "objects": [
                {"shape": t.shape, "size": t.size, "radius": t.r, "track": [list(s) if s else None for s in t.states]}
                for t in self.tracks
            ],
        }


def _radius(size: str, image_size: int) -> int:
    return max(2, int(image_size / 3 * (0.40 if size == "large" else 0.25)))  # toyworld's sizes


def _in_cell(rng: random.Random, cell: int, r: int, image_size: int) -> tuple[int, int]:
    """A centre in `cell` (3x3 grid) with jitter that keeps the object inside the cell."""
    cell_px = image_size / 3
    slack = max(0, int(cell_px / 2 - r - 1))
    return (
        int((cell % 3 + 0.5) * cell_px) + rng.randint(-slack, slack),
        int((cell // 3 + 0.5) * cell_px) + rng.randint(-slack, slack),
    )


def _static(rng, shape: str, color: str, cell: int, image_size: int, n: int) -> Track:
    size = rng.choice(SIZES)
    r = _radius(size, image_size)
    x, y = _in_cell(rng, cell, r, image_size)
    return Track(shape, size, r, [(x, y, color)] * n)


def _change_frames(rng: random.Random, k: int, lo: int, hi: int, gap: int) -> list[int]:
    """k frames in [lo, hi], at least `gap` apart (the caller guarantees room)."""
    slack = hi - lo - (k - 1) * gap
    offsets = sorted(rng.randint(0, slack) for _ in range(k))
    return [lo + o + i * gap for i, o in enumerate(offsets)]


def _recolor(rng: random.Random, first: str, frames: list[int], n: int, last: str | None = None) -> list[str]:
    """Per-frame colours: `first`, then a different colour at each frame of `frames` (the last = `last`)."""
    colors, current = [], first
    for i, f in enumerate(frames):
        if i == len(frames) - 1 and last is not None:
            current = last
        else:
            current = rng.choice([c for c in COLOR_NAMES if c != current and (i < len(frames) - 2 or c != last)])
        colors.append((f, current))
    out, current = [], first
    for f in range(n):
        while colors and colors[0][0] == f:
            current = colors.pop(0)[1]
        out.append(current)
    return out


def _sample_clip(rng: random.Random, clip_id: str, split: str, kind: str, target, n: int, size: int) -> Clip:
    """One clip telling a story of `kind` whose answer is `target` (see ANSWER_CYCLES)."""
    m, gap = (n - 1) // 2, max(1, n // 4)  # middle frame; minimum distance between events
    background = rng.choice(BACKGROUND_NAMES)
    n_objects = rng.randint(2, 4) if kind != "first_appeared" else rng.randint(2, 3)
    shapes = rng.sample(SHAPES, n_objects)
    colors = rng.sample(COLOR_NAMES, n_objects)
    tracks: list[Track] = []
    contrast = None  # direction: the other objects never move, so no contrast question has an answer

    if kind == "direction":
        dx, dy = DIRECTIONS[target]
        r = _radius("small", size)
        mx, my = _in_cell(rng, CENTER, r, size)  # where it is in the middle frame, whatever the direction
        reach = min(mx, my, size - 1 - mx, size - 1 - my) - r - 1  # stays in the image
        step = rng.uniform(0.6, 1.0) * reach / max(m, n - 1 - m)
        states = [(round(mx + dx * step * (f - m)), round(my + dy * step * (f - m)), colors[0]) for f in range(n)]
        tracks.append(Track(shapes[0], "small", r, states))
        for shape, color, cell in zip(shapes[1:], colors[1:], rng.sample(CORNERS, n_objects - 1)):
            tracks.append(_static(rng, shape, color, cell, size, n))
        subject = tracks[0].name
        question, answer = f"Which way did the {subject} move?", target
        caption = f"The {subject} moves {'to the ' if dx else ''}{target}."
    else:
        cells = rng.sample(range(9), n_objects)
        tracks = [_static(rng, s, c, cell, size, n) for s, c, cell in zip(shapes, colors, cells)]
        subject = tracks[0]
        if kind == "first_appeared":
            first, second = tracks[0], tracks[1]
            t1 = rng.randint(1, m - gap)
            t2 = rng.randint(t1 + gap, m)
            for t, start in ((first, t1), (second, t2)):
                t.states = [None] * start + t.states[start:]
            named = (first.name, second.name) if target == "yes" else (second.name, first.name)
            question, answer = f"Did the {named[0]} appear before the {named[1]}?", target
            contrast = f"Did the {named[1]} appear before the {named[0]}?", YES_NO[1 - YES_NO.index(target)]
            caption = f"The {first.name} appears, then the {second.name} appears."
        elif kind in ("color_changes", "final_color"):
            if kind == "color_changes":
                k = CHANGE_WORDS.index(target)
                frames = _change_frames(rng, k, 1, n - 1, gap)
                last = None
            else:
                # the last change after the middle frame; any earlier ones before it, `gap` apart
                before = rng.randint(0, min(2, 1 + (m - gap - 1) // gap)) if m - gap >= 1 else 0
                frames = _change_frames(rng, before, 1, m - gap, gap) + [rng.randint(m + 1, n - 1)]
                k, last = len(frames), target
                if colors[0] == target:  # the first colour must not be the answer
                    colors[0] = rng.choice([c for c in COLOR_NAMES if c not in colors])
                    subject.states = [(x, y, colors[0]) for x, y, _ in subject.states]
            per_frame = _recolor(rng, colors[0], frames, n, last)
            subject.states = [(x, y, c) for (x, y, _), c in zip(subject.states, per_frame)]
            sequence = [per_frame[0]] + [per_frame[f] for f in frames]
            other = tracks[1]  # never changes colour
            if kind == "color_changes":
                question, answer = f"How many times did the {subject.shape} change color?", target
                contrast = f"How many times did the {other.shape} change color?", CHANGE_WORDS[0]
            else:
                question, answer = f"What color was the {subject.shape} at the end?", target
                contrast = f"What color was the {other.shape} at the end?", other.first_color
            if k == 0:
                caption = f"The {subject.shape} stays {sequence[0]}."
            else:
                times = "once" if k == 1 else f"{CHANGE_WORDS[k]} times"
                caption = f"The {subject.shape} changes color {times}: " + ", then ".join(sequence) + "."
        else:  # disappeared
            if target == "yes":
                gone = rng.randint(m + 1, n - 1)
                subject.states = subject.states[:gone] + [None] * (n - gone)
                caption = f"The {subject.name} disappears."
                contrast = f"Did the {tracks[1].name} disappear?", "no"
            else:
                caption = f"The {subject.name} stays where it is."
            question, answer = f"Did the {subject.name} disappear?", target
    rng.shuffle(tracks)  # drawing order says nothing about the story
    return Clip(clip_id, split, background, tracks, kind, question, answer, caption, contrast)


def _sample_clips(seed: int, split: str, count: int, num_frames: int, image_size: int) -> list[Clip]:
    """Types in turn; per type, answers in shuffled rounds of ANSWER_CYCLES (balanced to within one)."""
    digits = 6 if split == "train" else 5
    clips, seen = [], {kind: 0 for kind in QUESTION_TYPES}
    for i in range(count):
        kind = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        j = seen[kind]
        seen[kind] += 1
        cycle = list(ANSWER_CYCLES[kind])
        random.Random(f"movingworld/{seed}/{split}/{kind}/round/{j // len(cycle)}").shuffle(cycle)
        rng = random.Random(f"movingworld/{seed}/clip/{split}/{i}")
        clip_id = f"{split}_{i:0{digits}d}"
        clips.append(_sample_clip(rng, clip_id, split, kind, cycle[j % len(cycle)], num_frames, image_size))
    return clips


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _train_record(clip: Clip, rng: random.Random, contrast: bool) -> dict:
    turns = [(clip.question + SHORT_ANSWER, clip.answer)]
    if contrast and clip.contrast:
        turns.append((clip.contrast[0] + SHORT_ANSWER, clip.contrast[1]))
    if rng.random() < 0.5:
        turns.append((rng.choice(CAPTION_PROMPTS).replace("image", "video"), clip.caption))
    if rng.random() < 0.3:
        turns.reverse()
    first = turns[0][0]
    first = f"{first}\n{VIDEO_PLACEHOLDER}" if rng.random() < 0.15 else f"{VIDEO_PLACEHOLDER}\n{first}"
    turns[0] = (first, turns[0][1])
    return {"id": clip.id, "video": clip.id, "conversations": conversations(turns)}


def moving_world_config(
    seed: int = 0,
    num_train_clips: int = 500,
    num_eval_clips: int = 100,
    num_frames: int = 16,
    image_size: int = 64,
    contrast_questions: bool = False,
) -> dict:
    if not 8 <= num_frames <= 32:
        raise ValueError(f"num_frames must be in 8..32, got {num_frames}")
    if image_size < 24:
        raise ValueError(f"image_size must be >= 24 pixels, got {image_size}")
    if num_train_clips < 0 or num_eval_clips < 1:
        raise ValueError("need num_train_clips >= 0 and num_eval_clips >= 1")
    return {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "num_train_clips": int(num_train_clips),
        "num_eval_clips": int(num_eval_clips),
        "num_frames": int(num_frames),
        "image_size": int(image_size),
        "contrast_questions": bool(contrast_questions),
    }


def generate_moving_world(
    out_dir: str | Path,
    seed: int = 0,
    num_train_clips: int = 500,
    num_eval_clips: int = 100,
    num_frames: int = 16,
    image_size: int = 64,
    contrast_questions: bool = False,
) -> MovingWorld:
    """Generate the clips, training JSON, eval questions and answer key into `out_dir`; see the module
    docstring. Same arguments -> identical files; a previous world's extra clips are removed."""
    config = moving_world_config(seed, num_train_clips, num_eval_clips, num_frames, image_size, contrast_questions)
    world = MovingWorld(Path(out_dir))
    world.root.mkdir(parents=True, exist_ok=True)
    if world.meta_json.exists():
        world.meta_json.unlink()  # incomplete until the new movingworld.json is written

    train = _sample_clips(seed, "train", num_train_clips, num_frames, image_size)
    evals = _sample_clips(seed, "eval", num_eval_clips, num_frames, image_size)
    world.videos_dir.mkdir(exist_ok=True)
    keep = set()
    for clip in train + evals:
        folder = world.video_path(clip.id)
        for f in range(num_frames):
            write_atomic(folder / f"{f:03d}.png", png_bytes(clip.frame(f, image_size)))
        for extra in folder.glob("*.png"):
            if not re.fullmatch(r"\d{3}\.png", extra.name) or int(extra.stem) >= num_frames:
                extra.unlink()
        keep.add(clip.id)
    for folder in world.videos_dir.iterdir():
        if folder.is_dir() and re.fullmatch(r"train_\d{6}|eval_\d{5}", folder.name) and folder.name not in keep:
            shutil.rmtree(folder)

    rng = random.Random(f"movingworld/{seed}/train")
    records = [_train_record(clip, rng, contrast_questions) for clip in train]
    write_json_atomic(world.train_json, records, indent=1)
    questions = [
        {"question_id": qid, "video": c.id, "text": c.question + SHORT_ANSWER, "category": c.kind}
        for qid, c in enumerate(evals)
    ]
    keys = [{"question_id": qid, "answer": c.answer, "category": c.kind, "video": c.id} for qid, c in enumerate(evals)]
    write_jsonl_atomic(world.questions, questions)
    write_jsonl_atomic(world.answer_key, keys)
    write_json_atomic(
        world.clips_json,
        {"image_size": image_size, "num_frames": num_frames, "clips": [c.to_json() for c in train + evals]},
        indent=None,
    )
    meta = {
        "config": config,
        "question_types": list(QUESTION_TYPES),
        "counts": {"train_clips": len(train), "eval_clips": len(evals), "eval_questions": len(questions)},
    }
    write_json_atomic(world.meta_json, meta, indent=1)
    return world


def load_moving_world(out_dir: str | Path | MovingWorld) -> MovingWorld:
    """Open an already generated moving world (fails if generation never completed)."""
    world = out_dir if isinstance(out_dir, MovingWorld) else MovingWorld(Path(out_dir))
    if not world.meta_json.is_file():
        raise FileNotFoundError(f"{world.root} holds no complete moving world (no movingworld.json)")
    return world


def moving_world_vocabulary(seed: int = 0, num_clips: int = 500) -> Iterator[str]:
    """Texts of the kind a moving world holds (training conversations with contrast questions, eval
    prompts), from clips sampled but never drawn: what a tokenizer built before any moving world exists
    (the image demo's, which the video demo continues with) needs to make each of its words one token."""
    rng = random.Random(f"movingworld/{seed}/vocabulary")
    for clip in _sample_clips(seed, "train", num_clips, 16, 64):
        yield training_text(_train_record(clip, rng, contrast=True))
        yield question_prompt(clip.question + SHORT_ANSWER)


def moving_world_texts(world: str | Path | MovingWorld) -> Iterator[str]:
    """Every text a tokenizer for this world must handle: the training conversations and the eval
    prompts, rendered as training and `voco eval` render them (`<video>` as one `<image>`)."""
    world = load_moving_world(world)
    for record in json.loads(world.train_json.read_text()):
        yield training_text(record)
    with world.questions.open() as f:
        for line in f:
            yield question_prompt(json.loads(line)["text"])
