"""The stages every demo shares: run folders, the names of model and answer folders, the world and
its tokenizer, the vision tower's pretraining, the training jobs of the base and of each fine-tune,
and a run's checkpoints. `voco demo` (image.py), `voco demo --curves` (curves.py) and `voco demo
--video` (video.py) are built from these.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from ..core.files import check_folder_target, write_json_atomic
from ..core.presets import build_model, save_bundle
from ..core.processing import load_image, process_images
from .movingworld import moving_world_vocabulary
from .presets import ImageDemo
from .toyworld import BACKGROUND_NAMES, PATCH_LABELS, build_world_tokenizer, ensure_world, patch_labels

# Table 1's methods: name -> (fine-tune ModelArguments, eval mode). The Lower bound reuses the Upper-bound model.
METHODS = {
    "Upper bound": (dict(num_voco=1, attention_rule="causal"), "full"),
    "VoCo K=1": (dict(num_voco=1, attention_rule="voco"), "voco"),
    "Avg-pool": (dict(compressor="avgpool"), "full"),
    "Q-Former": (dict(compressor="qformer"), "full"),
}
BASE = "Base"  # the base model every fine-tune starts from (all vision tokens, causal)
# Every demo world draws its training split from this seed and its eval split from `--seed`: the tower
# and base are trained once on that split (pretrain.py), as LLaVA starts from one CLIP and one Vicuna,
# and a seed varies what is asked and how each row is fine-tuned.
TRAIN_SEED = 0


def folder(name: str) -> str:
    """The folder of a model or a table row, the one naming rule of every demo: "VoCo K=1" -> voco-k1,
    "Upper bound" -> upper-bound, "Base" -> base, "Middle frame (full tokens)" -> middle-frame."""
    return name.lower().split(" (")[0].replace(" ", "-").replace("=", "")


def run_dir(args) -> Path:
    return Path(args.out or ("runs/demo" if args.seed == 0 else f"runs/demo-seed{args.seed}"))


def open_run(args) -> Path:
    """The run directory (`--out`, by default runs/demo, runs/demo-seed1, ...), emptied by `--fresh`.
    Finished stages are reused, so a directory holds one preset and seed (out/run.json says which);
    another one is refused rather than mixed in."""
    out = run_dir(args)
    check_folder_target(out)  # a file, or a path under one: one line before any work
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


def pretrain_tower(preset: ImageDemo, out: Path, world, model, image_processor, seed: int) -> list[dict]:
    """Train the tower on the world's training images; returns the Trainer's log (loss per logging step)."""
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
    trainer = Trainer(model=_TowerProbe(model), args=args, train_dataset=data)
    trainer.train()
    shutil.rmtree(out / "tower-run", ignore_errors=True)
    return trainer.state.log_history


def build_demo_tokenizer(world):
    """The demos' one tokenizer: the toy world's texts and the moving world's. The video demo continues
    from the image demo's models, so its words (left, down, appear, disappear, ...) must be whole
    tokens too; a tokenizer of the image world alone split them into letters the image stages never
    trained, and the video models then could not even tell a direction question from a yes / no one."""
    return build_world_tokenizer(world, extra_texts=moving_world_vocabulary())


def demo_world(preset: ImageDemo, out: Path, seed: int):
    """Stage 1: the world in out/world: the training split of TRAIN_SEED, the eval split of `seed`."""
    return ensure_world(out / "world", seed=seed, train_seed=TRAIN_SEED, **preset.world)


def prepare(preset: ImageDemo, out: Path, seed: int):
    """Stages 1 and 2a: the world (and its tokenizer) in out/world, the model with its pretrained tower
    in out/models/init (its training log in init/tower_log.json). Returns (world, init directory)."""
    world = demo_world(preset, out, seed)
    tokenizer = build_demo_tokenizer(world) if not (world.tokenizer_dir / "tokenizer.json").is_file() else None
    init = out / "models" / "init"
    if not (init / "config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = tokenizer or AutoTokenizer.from_pretrained(world.tokenizer_dir)
        model, tokenizer, image_processor = build_model(
            "tiny", tokenizer=tokenizer, seed=seed, num_voco=0, attention_rule="causal", **preset.model
        )
        print("voco demo: pretraining the vision tower on the world's dense labels")
        log = pretrain_tower(preset, out / "models", world, model, image_processor, seed)
        save_bundle(init, model, tokenizer, image_processor)
        write_json_atomic(init / "tower_log.json", log)
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


def checkpoints(run: Path) -> dict[int, Path]:
    """step -> weights, the final model included."""
    found = {int(p.name.split("-")[1]): p for p in run.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)}
    state = json.loads((run / "trainer_state.json").read_text())
    found[state["global_step"]] = run
    return dict(sorted(found.items()))
