"""`voco demo --pretrain`: the toy world's pretrained vision tower and base model, made once and shipped.

A LLaVA user starts from a pretrained CLIP and Vicuna; the image demo starts from a tower and a base
trained here, on the world's fixed training split (stages.TRAIN_SEED), and shipped in the package
(`SHIPPED / <preset>`: the base's weights, tokenizer and image processor, a few MB) because on 2 cores
the base needs more steps than `make demo`'s 15 minutes hold (its curves show it). This command
reproduces them from scratch:

  1. world  the preset's world (training split of TRAIN_SEED; its eval split only scores the curves);
  2. tower  pretrained on the world's dense labels (stages.pretrain_tower), then probed (probe.py);
  3. base   projector and LLM on all vision tokens, causal, tower frozen, a checkpoint every
            `base_curve_every` steps, each scored on the questions about `curve_images` eval images;
  4. bundle DIR/pretrained: the final base, recipe.json (what it was made from: the preset's model,
            tower and base settings, the training split's fingerprint, the weights' sha256),
            log.json (tower and base losses), tower_probe.json, curves.json / curves.md / curves.png.

Ship it by copying DIR/pretrained to voco_llama/demo/pretrained/<preset>. `voco demo` checks the
shipped recipe against the preset and the world it generates (`check_shipped`) before it uses it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from ..core.errors import InputError
from ..core.files import check_folder_target, write_atomic, write_json_atomic
from ..core.presets import load_bundle
from .presets import DemoPreset, get_preset
from .probe import probe_line, run_tower_probe
from .scoring import curve_table, plot_curves, score_checkpoint, write_slice
from .stages import BASE, TRAIN_SEED, base_job, checkpoints, demo_world, folder, prepare
from .toyworld import train_fingerprint, world_config
from .training import train_stage

SHIPPED = Path(__file__).parent / "pretrained"
# what a bundle holds besides the weights' own files (the trainer's state and checkpoints stay behind)
_BUNDLE_EXCLUDE = ("checkpoint-*", "training_args.bin", "trainer_state.json")


def recipe(demo_preset: DemoPreset) -> dict:
    """What the shipped tower and base of `demo_preset` are made from: equal recipes, equal files."""
    p = demo_preset.image
    world = world_config(seed=TRAIN_SEED, train_seed=TRAIN_SEED, **p.world)
    train_keys = ("format_version", "train_seed", "num_train_images", "image_size", "text_only_fraction")
    train_keys += ("questions_per_image", "multiple_choice_fraction")
    return {
        "preset": demo_preset.name,
        "seed": TRAIN_SEED,
        "model": dict(p.model),
        "tower": {"steps": p.tower_steps, "lr": p.tower_lr, "batch_size": 64},
        "base": {"steps": p.base_steps, "lr": p.base_lr, "batch_size": p.batch_size},
        "train_split": {k: world[k] for k in train_keys},
        "train_fingerprint": train_fingerprint(world),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_bundle(demo_preset: DemoPreset) -> Path | None:
    """The shipped tower and base of this preset, if the package holds one."""
    bundle = SHIPPED / demo_preset.name
    return bundle if (bundle / "recipe.json").is_file() else None


def check_shipped(bundle: Path, demo_preset: DemoPreset) -> dict:
    """The bundle's recipe.json, refused in one line when it is not what the preset's recipe describes
    (a changed preset or world generator makes the shipped base stale) or its weights are not the
    recorded ones."""
    where = bundle / "recipe.json"
    have, want = json.loads(where.read_text()), recipe(demo_preset)
    for key, value in want.items():
        if have.get(key) != value:
            raise InputError(
                f"{where}: field {key!r} is {have.get(key)!r}, the preset {demo_preset.name!r} gives {value!r}; "
                f"rebuild it with `voco demo --pretrain --preset {demo_preset.name}` or run with --from-scratch"
            )
    weights = bundle / "model.safetensors"
    if not weights.is_file() or _sha256(weights) != have["sha256"]["model.safetensors"]:
        raise InputError(f"{weights}: missing or not the weights {where} records; restore the shipped files")
    return have


def install_shipped(bundle: Path, target: Path) -> Path:
    """Copy the shipped base to `target` (the run's models/base, which the other stages read)."""
    if (target / "config.json").is_file():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundle, tmp)
    tmp.replace(target)
    return target


def _shown(path: Path) -> str:
    """A shipped bundle's path as a reader of the repository finds it (voco_llama/demo/pretrained/...)."""
    root = Path(__file__).resolve().parents[2]
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def start_base(
    demo_preset: DemoPreset, out: Path, seed: int, from_scratch: bool = False, trained_dir=None, save_steps=None
):
    """Stages 1-2 of a demo run: the world, and the base every fine-tune starts from: the shipped one
    (checked, then copied to out/models/base) unless `from_scratch` or none is shipped for the preset,
    else the tower and base trained in this run (into `trained_dir`, by default out/models/base, with
    a checkpoint every `save_steps`). Returns (world, base, where the base came from)."""
    preset = demo_preset.image
    bundle = None if from_scratch else shipped_bundle(demo_preset)
    if bundle is not None:
        made = check_shipped(bundle, demo_preset)
        world = demo_world(preset, out, seed)
        base = install_shipped(bundle, out / "models" / folder(BASE))
        return world, base, {"shipped": _shown(bundle), "made": made}
    world, init = prepare(preset, out, seed)
    trained_dir = trained_dir or out / "models" / folder(BASE)
    base = train_stage(**base_job(preset, world, init, trained_dir, seed, save_steps=save_steps))
    return world, base, {"shipped": None}


def run_pretrain(args) -> int:
    demo_preset = get_preset(args.preset)
    preset = demo_preset.image
    out = Path(args.out or f"runs/pretrain-{demo_preset.name}")
    check_folder_target(out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    world, init = prepare(preset, out, TRAIN_SEED)
    model, _, image_processor = load_bundle(init)
    probe = run_tower_probe(model, image_processor, world)
    print(f"voco demo --pretrain: tower probes {probe_line(probe)}")

    base_dir = out / "models" / folder(BASE)
    base = train_stage(**base_job(preset, world, init, base_dir, TRAIN_SEED, save_steps=preset.base_curve_every))

    began = time.perf_counter()
    files = write_slice(world, out / "curves" / "slice", preset.curve_images)
    curve = {
        str(step): score_checkpoint(preset, path, "full", files, world, out / "curves" / "answers" / str(step))
        for step, path in checkpoints(base).items()
    }
    curve_seconds = time.perf_counter() - began

    bundle = out / "pretrained"
    tmp = out / "pretrained.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns(*_BUNDLE_EXCLUDE))
    state = json.loads((base / "trainer_state.json").read_text())
    tower_log = json.loads((init / "tower_log.json").read_text())
    # the training time each stage's own log records (a re-run reuses finished stages)
    seconds = {"tower": tower_log[-1]["train_runtime"], "base": state["log_history"][-1]["train_runtime"]}
    seconds["curves (this run)"] = round(curve_seconds, 1)
    write_json_atomic(tmp / "log.json", {"tower": tower_log, "base": state["log_history"]}, indent=1)
    write_json_atomic(tmp / "tower_probe.json", probe, indent=1)
    n = {b: len(q.read_text().splitlines()) for b, (q, _) in files.items()}
    write_json_atomic(tmp / "curves.json", {"questions": n, "images": preset.curve_images, "base": curve}, indent=1)
    title = f"preset {demo_preset.name}: the base on all vision tokens, {preset.curve_images} eval images"
    plot_curves(tmp / "curves.png", {"Base": curve}, 0, title)
    total = round(sum(seconds.values()), 1)
    made = {**recipe(demo_preset), "sha256": {"model.safetensors": _sha256(tmp / "model.safetensors")}}
    made["seconds"] = {**seconds, "total": total}
    write_json_atomic(tmp / "recipe.json", made, indent=1)
    write_atomic(tmp / "curves.md", curve_table(title, {"Base": curve}) + "\n")
    shutil.rmtree(bundle, ignore_errors=True)
    tmp.replace(bundle)
    print(
        f"voco demo --pretrain: {bundle} ({total / 60:.1f} min; per stage "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"); ship it: cp -r {bundle} {SHIPPED / demo_preset.name}"
    )
    return 0
