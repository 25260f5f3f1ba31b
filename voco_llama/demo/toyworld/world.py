"""The world on disk: its paths (`World`), its configuration, and `generate_world` / `ensure_world` /
`load_world`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ...core.files import write_atomic, write_json_atomic, write_jsonl_atomic
from .benches import BENCHES, DEFAULT_EVAL_QUESTIONS, _bench_files, _build_benches, _Stats
from .records import _train_records
from .scenes import (
    BACKGROUND_NAMES,
    COLORS,
    NUMBER_WORDS,
    OBJECT_NAMES,
    POSITIONS,
    SHAPES,
    SIZES,
    _sample_scenes,
    png_bytes,
    render,
)

FORMAT_VERSION = 2  # 2: VQAv2 annotator answers written normalised

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
    multiple_choice_fraction: float = 0.25,
    train_seed: int | None = None,
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
    if not 0 <= multiple_choice_fraction <= 1:
        raise ValueError(f"multiple_choice_fraction must be in [0, 1], got {multiple_choice_fraction}")
    return {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "num_train_images": int(num_train_images),
        "num_eval_images": int(num_eval_images),
        "image_size": int(image_size),
        "eval_questions": _resolve_eval_sizes(eval_questions),
        "text_only_fraction": float(text_only_fraction),
        "questions_per_image": [int(low), int(high)],
        "multiple_choice_fraction": float(multiple_choice_fraction),
        "train_seed": int(seed if train_seed is None else train_seed),
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
    multiple_choice_fraction: float = 0.25,
    train_seed: int | None = None,
    progress: bool | None = None,
) -> World:
    """Generate the world into `out_dir` (see the module docstring for the files) and return it.

    `eval_questions`: questions per bench, one int for all or a mapping overriding
    `DEFAULT_EVAL_QUESTIONS` per bench (rounded down: pope to an even number per category, mme to
    whole yes/no pairs, mmbench to whole groups of 4). `progress`: tqdm bar (default: on for >= 1000
    images). `multiple_choice_fraction`: the share of training questions of the multiple-choice
    templates asked as multiple choice (the rest as short answers). `train_seed` (default `seed`) draws the
    training scenes and records, `seed` the eval scenes and questions: a world with a fixed training
    split and a fresh eval split, for models pretrained once on that split. Same arguments -> byte-identical
    files (with the same Pillow/zlib for the PNGs). Files
    of a previous world in `out_dir` are overwritten and its extra images removed.
    """
    config = world_config(
        seed,
        num_train_images,
        num_eval_images,
        image_size,
        eval_questions,
        text_only_fraction,
        questions_per_image,
        multiple_choice_fraction,
        train_seed,
    )
    world = World(Path(out_dir))
    world.root.mkdir(parents=True, exist_ok=True)
    if world.meta_json.exists():
        world.meta_json.unlink()  # the world is incomplete until the new world.json is written

    train_scenes, records = train_split(config)
    seen = {s.signature() for s in train_scenes}
    eval_scenes = _sample_scenes(seed, "eval", num_eval_images, image_size, seen)
    all_scenes = train_scenes + eval_scenes

    world.images_dir.mkdir(exist_ok=True)
    show = progress if progress is not None else len(all_scenes) >= 1000
    for scene in tqdm(all_scenes, desc="toy world images", unit="img", disable=not show):
        write_atomic(world.images_dir / scene.image, png_bytes(render(scene, image_size)))
    keep = {s.image for s in all_scenes}
    for path in world.images_dir.glob("*.png"):
        if re.fullmatch(r"(train_\d{6}|eval_\d{5})\.png", path.name) and path.name not in keep:
            path.unlink()

    benches = _build_benches(eval_scenes, train_scenes, config["eval_questions"], seed)
    for bench, items in benches.items():
        questions, keys = _bench_files(items)
        write_jsonl_atomic(world.questions(bench), questions)
        write_jsonl_atomic(world.answer_key(bench), keys)

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


def train_split(config: dict) -> tuple[list, list[dict]]:
    """The training scenes and LLaVA records `generate_world` writes for `config` (a `world_config`),
    drawn without rendering an image: cheap enough to fingerprint a world's training split."""
    seen: set = set()
    scenes = _sample_scenes(config["train_seed"], "train", config["num_train_images"], config["image_size"], seen)
    records = _train_records(
        scenes,
        config["train_seed"],
        config["text_only_fraction"],
        tuple(config["questions_per_image"]),
        config["multiple_choice_fraction"],
    )
    return scenes, records


def train_fingerprint(config: dict) -> str:
    """sha256 of the training split `config` describes (its scenes and records as JSON): equal
    fingerprints, equal training data, whatever the eval split."""
    scenes, records = train_split(config)
    text = json.dumps({"scenes": [s.to_json() for s in scenes], "records": records}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
