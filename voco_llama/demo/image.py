"""`voco demo`: the paper's protocol (Tables 1 and 2) at toy scale, on data and models we make.

Stages, each reused on a re-run when its output exists (`--fresh` redoes everything):
  1. world     the synthetic visual world (toyworld.py) in LLaVA's formats, and its tokenizer;
  2. tower     the vision tower pretrained from scratch on the world's dense labels (per patch: the
               shape, colour and size of the objects on it; per image: the background), our stand-in
               for the CLIP pretraining a real LLaVA starts from;
     base      projector and LLM trained from scratch on all vision tokens with plain causal
               attention, the tower frozen as in LLaVA, through `voco train`;
  3. variants  fine-tuned from the base with the same data and steps: Upper bound (K=1 VoCo
               tokens present, causal mask), VoCo K=1, Avg-pool, Q-Former, VoCo K in 2..16, and
               one model for every K (`--num_voco_choices` = the preset's ks: each record's K
               drawn uniformly from them);
  4. eval      `voco eval` over every toy benchmark; VoCo rows answer from the two-stage compressed
               cache, Upper bound / Avg-pool / Q-Former with their one causal pass, and the Lower
               bound is the Upper-bound model answering from the cache (its VoCo tokens never
               learned to carry the image); the mixture model at every K of its set, and the
               largest-K model run at K=1 (the paper's failure case: loaded told its K is 1, a K
               it was never trained at); scored with `voco score`'s scorers;
  5. report    Table 1 (scores, retention, mean retention), Table 2 (retention vs K: per-K models,
               the mixture model, the failure case) in report.md / report.json, PNG plots, then
               one example answered from a cache.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from ..core.files import write_atomic, write_json_atomic
from ..core.pipeline import VoCoPipeline
from ..core.presets import build_model, load_bundle, save_bundle
from ..core.processing import load_image, process_images
from ..eval.evaluate import run_eval
from ..eval.scorers import DISPLAY_NAMES, score
from .movingworld import moving_world_vocabulary
from .presets import PRESETS, ImageDemo, get_preset
from .report import MIXTURE, example, example_text, k_only_name, markdown, mixture_name, plots, read_row, tables
from .toyworld import (
    BACKGROUND_NAMES,
    BENCHES,
    PATCH_LABELS,
    build_world_tokenizer,
    ensure_world,
    patch_labels,
)
from .training import train_stage, train_stages

# Table 1 rows: (name, fine-tune ModelArguments, eval mode). The Lower bound reuses the Upper-bound model.
METHODS = {
    "Upper bound": (dict(num_voco=1, attention_rule="causal"), "full"),
    "VoCo K=1": (dict(num_voco=1, attention_rule="voco"), "voco"),
    "Avg-pool": (dict(compressor="avgpool"), "full"),
    "Q-Former": (dict(compressor="qformer"), "full"),
}


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-").replace("=", "")


@dataclass(frozen=True)
class EvalRow:
    """One row of the tables: a model answering every benchmark one way."""

    name: str
    model: Path
    mode: str  # voco eval --mode
    num_voco: int | None = None  # `voco eval --num-voco`: a K of the model's trained set (None: its default)
    told_num_voco: int | None = None  # load the model told its K is this one, a K it never trained at

    def pipeline(self) -> VoCoPipeline:
        told = {"num_voco": self.told_num_voco} if self.told_num_voco is not None else {}
        return VoCoPipeline(*load_bundle(self.model, **told))


def mixture_job(preset: ImageDemo) -> dict:
    """ModelArguments of the one model for every K: K drawn uniformly per record from the preset's ks."""
    return dict(num_voco=min(preset.ks), num_voco_choices=",".join(map(str, preset.ks)), attention_rule="voco")


def eval_rows(preset: ImageDemo, models: dict[str, Path]) -> list[EvalRow]:
    """Table 1's rows, Table 2's per-K models, the mixture model at every K, the largest-K model at K=1."""
    rows = [EvalRow(name, models[name], mode) for name, (_, mode) in METHODS.items()]
    rows.append(EvalRow("Lower bound", models["Upper bound"], "voco"))
    rows += [EvalRow(f"VoCo K={k}", models[f"VoCo K={k}"], "voco") for k in preset.ks if k != 1]
    rows += [EvalRow(mixture_name(k), models[MIXTURE], "voco", num_voco=k) for k in preset.ks]
    if len(preset.ks) > 1:
        largest = max(preset.ks)
        rows.append(EvalRow(k_only_name(preset.ks), models[f"VoCo K={largest}"], "voco", told_num_voco=1))
    return rows


class _TowerProbe(torch.nn.Module):
    """The vision tower with linear read-outs of the world's dense labels, for pretraining it."""

    def __init__(self, model):
        super().__init__()
        self.tower, self.layer = model.model.vision_tower, model.config.vision_feature_layer
        hidden = model.config.vision_config.hidden_size
        self.patch_head = torch.nn.Linear(hidden, len(PATCH_LABELS))
        self.background_head = torch.nn.Linear(hidden, len(BACKGROUND_NAMES))

    def forward(self, pixel_values, patch_labels, background):
        # the features LLaVA hands the projector: the selected layer, without CLIP's class token
        features = self.tower(pixel_values, output_hidden_states=True).hidden_states[self.layer]
        features = features[:, -patch_labels.shape[1] :]
        loss = F.binary_cross_entropy_with_logits(self.patch_head(features), patch_labels)
        loss = loss + F.cross_entropy(self.background_head(features.mean(1)), background)
        return {"loss": loss}


def _pretrain_tower(preset: ImageDemo, out: Path, world, model, image_processor, seed: int) -> None:
    from transformers import Trainer, TrainingArguments

    vision = model.config.vision_config
    scenes = [s for s in world.scenes().values() if s["split"] == "train"]
    pixels = process_images([load_image(world.images_dir / s["image"]) for s in scenes], image_processor)
    data = [
        {
            "pixel_values": px,
            "patch_labels": torch.tensor(patch_labels(s, vision.image_size, vision.patch_size), dtype=torch.float),
            "background": torch.tensor(BACKGROUND_NAMES.index(s["background"])),
        }
        for s, px in zip(scenes, pixels)
    ]
    args = TrainingArguments(
        output_dir=str(out / "tower-run"),
        max_steps=preset.tower_steps,
        per_device_train_batch_size=64,
        learning_rate=preset.tower_lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        weight_decay=0.0,
        logging_steps=max(1, preset.tower_steps // 6),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=seed,
    )
    Trainer(model=_TowerProbe(model), args=args, train_dataset=data).train()
    shutil.rmtree(out / "tower-run", ignore_errors=True)


def build_demo_tokenizer(world):
    """The demos' one tokenizer: the toy world's texts and the moving world's. The video demo continues
    from the image demo's models, so its words (left, down, appear, disappear, ...) must be whole
    tokens too; a tokenizer of the image world alone split them into letters the image stages never
    trained, and the video models then could not even tell a direction question from a yes / no one."""
    return build_world_tokenizer(world, extra_texts=moving_world_vocabulary())


def prepare(preset: ImageDemo, out: Path, seed: int):
    """Stages 1 and 2a: the world (and its tokenizer) in out/world, the model with its pretrained tower
    in out/models/init. Returns (world, init directory)."""
    world = ensure_world(out / "world", seed=seed, **preset.world)
    tokenizer = build_demo_tokenizer(world) if not (world.tokenizer_dir / "tokenizer.json").is_file() else None
    init = out / "models" / "init"
    if not (init / "config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = tokenizer or AutoTokenizer.from_pretrained(world.tokenizer_dir)
        model, tokenizer, image_processor = build_model(
            "tiny", tokenizer=tokenizer, seed=seed, num_voco=0, attention_rule="causal", **preset.model
        )
        print("voco demo: pretraining the vision tower on the world's dense labels")
        _pretrain_tower(preset, out / "models", world, model, image_processor, seed)
        save_bundle(init, model, tokenizer, image_processor)
    return world, init


def base_job(preset: ImageDemo, world, init: Path, out: Path, seed: int, save_steps: int | None = None) -> dict:
    """Stage 2b: projector and LLM from scratch on all vision tokens, causal attention, tower frozen."""
    return dict(
        out=out,
        start=init,
        data=world.train_json,
        image_folder=world.images_dir,
        steps=preset.base_steps,
        batch_size=preset.batch_size,
        lr=preset.base_lr,
        model=dict(num_voco=0, attention_rule="causal", freeze_vision_tower=True),
        seed=seed,
        group_by_modality_length=True,
        save_steps=save_steps,
    )


def finetune_job(
    preset: ImageDemo, world, base: Path, out: Path, model: dict, seed: int, save_steps: int | None = None
) -> dict:
    """Stage 3: one variant fine-tuned from the base; every variant gets the same data, steps and rate."""
    return dict(
        out=out,
        start=base,
        data=world.train_json,
        image_folder=world.images_dir,
        steps=preset.finetune_steps,
        batch_size=preset.finetune_batch_size,
        lr=preset.finetune_lr,
        model=model,
        seed=seed,
        group_by_modality_length=True,
        save_steps=save_steps,
    )


def _evaluate(preset: ImageDemo, pipe, world, row_dir: Path, mode: str, num_voco: int | None = None) -> None:
    for bench in BENCHES:
        answers = row_dir / f"{bench}.jsonl"
        run_eval(
            pipe,
            world.questions(bench),
            answers,
            world.images_dir,
            mode=mode,
            num_voco=num_voco,
            max_new_tokens=preset.max_new_tokens,
            batch_size=preset.eval_batch_size,
            model_id=row_dir.name,
        )
        summary = score(bench, answers, world.answer_key(bench))
        write_json_atomic(row_dir / f"{bench}.score.json", summary)


def run_dir(args) -> Path:
    return Path(args.out or ("runs/demo" if args.seed == 0 else f"runs/demo-seed{args.seed}"))


def open_run(args) -> Path:
    """The run directory (`--out`, by default runs/demo, runs/demo-seed1, ...), emptied by `--fresh`.
    Finished stages are reused, so a directory holds one preset and seed (out/run.json says which);
    another one is refused rather than mixed in."""
    out = run_dir(args)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    stamp, want = out / "run.json", {"preset": args.preset, "seed": args.seed}
    if stamp.is_file() and (have := json.loads(stamp.read_text())) != want:
        raise InputError(
            f"{out} holds the demo run of preset {have['preset']!r} seed {have['seed']}, not preset "
            f"{args.preset!r} seed {args.seed}; pass another --out, or --fresh to start it again"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, want)
    return out


def run_demo(args) -> int:
    demo_preset = get_preset(args.preset)
    preset = demo_preset.image
    out = open_run(args)
    start = time.perf_counter()
    seconds = {}

    def stage(name: str, began: float) -> None:
        seconds[name] = round(time.perf_counter() - began, 1)

    seed = args.seed
    began = time.perf_counter()
    world, init = prepare(preset, out, seed)
    stage("world and tower", began)
    models_dir = out / "models"
    began = time.perf_counter()
    base = train_stage(**base_job(preset, world, init, models_dir / "base", seed))
    stage("base", began)
    variants = {name: model for name, (model, _) in METHODS.items()}
    variants.update({f"VoCo K={k}": dict(num_voco=k, attention_rule="voco") for k in preset.ks if k != 1})
    variants[MIXTURE] = mixture_job(preset)  # the same data, steps and rate as each per-K model
    models = {name: models_dir / _slug(name) for name in variants}
    began = time.perf_counter()
    train_stages([finetune_job(preset, world, base, models[name], model, seed) for name, model in variants.items()])
    stage("fine-tunes", began)

    began = time.perf_counter()
    rows = eval_rows(preset, models)
    for row in rows:
        print(f"voco demo: evaluating {row.name} ({row.mode})")
        _evaluate(preset, row.pipeline(), world, out / "answers" / _slug(row.name), row.mode, row.num_voco)
    stage("eval", began)

    result = tables({row.name: read_row(out / "answers" / _slug(row.name)) for row in rows}, preset.ks)
    vision_tokens = (preset.model["image_size"] // preset.model["patch_size"]) ** 2
    ex = example(out, world, models["VoCo K=1"], preset.max_new_tokens)
    total = time.perf_counter() - start
    counts = world.meta()["counts"]
    info = (
        f"World: {counts['train_images']} training images ({counts['train_qa_turns']} QA turns), "
        f"{counts['eval_images']} eval images; questions per benchmark: "
        + ", ".join(f"{DISPLAY_NAMES.get(b, b)} {n}" for b, n in counts["eval_questions"].items())
        + f". Base {preset.base_steps} steps x {preset.batch_size}; every fine-tune {preset.finetune_steps} steps x "
        f"{preset.finetune_batch_size} from the same base. {total / 60:.1f} min wall time for this run (finished "
        "stages are reused; per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")."
    )
    report = {
        "preset": demo_preset.image_dict(),
        "seed": seed,
        "seconds": round(total, 1),
        "stage_seconds": seconds,
        "vision_tokens": vision_tokens,
        "learned_benchmarks": result["learned"],
        "scales": result["scales"],
        "table1": result["table1"],
        "table2": {str(k): v for k, v in result["table2"].items()},
        "table2_mixture": {str(k): v for k, v in result["table2_mixture"].items()},
        "k_only_at_1": result["k_only_at_1"],
        "goals": result["goals"],
        "example": ex,
    }
    write_json_atomic(out / "report.json", report)
    text = markdown(demo_preset.name, seed, result, info, vision_tokens) + "\n" + example_text(ex)
    write_atomic(out / "report.md", text)
    plots(out, result, vision_tokens)
    print("\n" + text)
    return 0


def _demo_command(args) -> int:
    if args.video and args.curves:
        raise InputError("--video and --curves: give one of them")
    if args.video:
        from .video import run_video_demo

        return run_video_demo(args)
    if args.curves:
        from .curves import run_curves

        return run_curves(args)
    return run_demo(args)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the project's main job: the paper's Tables 1 and 2 at toy scale")
    p.add_argument("--preset", default="demo", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--out", default=None, help="run directory (default runs/demo; runs/demo-seedN for --seed N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of every training run")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    p.add_argument("--video", action="store_true", help="the video demo (per-frame VoCo), after the image demo")
    p.add_argument(
        "--curves",
        action="store_true",
        help="learning curves instead: per-benchmark accuracy on a held-out slice every few steps (DIR/curves)",
    )
    p.set_defaults(func=_demo_command)
