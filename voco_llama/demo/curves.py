"""`voco demo --curves`: learning curves for tuning the toy world and its budget.

The demo's stages with a checkpoint every `curve_every` steps, each scored on a held-out slice (every
question about the first `curve_images` eval images, so MME's pairs and MMBench's circular groups
stay whole): the base (all vision tokens, causal), then from the base's final weights the Upper
bound (causal) and VoCo K=1 fine-tunes, the Upper-bound checkpoints also answered under the VoCo
rule (the Lower bound). Written to DIR/curves: curves.json (per run, step and benchmark: the score
and its standard error, and the scorer's per-category numbers), curves.png (one panel per benchmark)
and curves.md. The world is the demo's own (DIR/world); with a shipped base (pretrain.py) the base's
own curve is the one in its bundle (curves.json there), else the tower and base train here.
"""

from __future__ import annotations

import time

from ..core.files import write_atomic, write_json_atomic
from ..eval.scorers import DISPLAY_NAMES
from .presets import get_preset
from .pretrain import start_base
from .scoring import curve_table, plot_curves, score_checkpoint, write_slice
from .stages import BASE, METHODS, checkpoints, finetune_job, folder, open_run
from .toyworld import BENCHES
from .training import train_stages

# curve name -> (the model trained for it, eval mode)
CURVES = {
    "Base": (BASE, "full"),
    "Upper bound": ("Upper bound", "full"),
    "Lower bound": ("Upper bound", "voco"),
    "VoCo K=1": ("VoCo K=1", "voco"),
}


def run_curves(args) -> int:
    demo_preset = get_preset(args.preset)
    preset = demo_preset.image
    out = open_run(args)
    root = out / "curves"
    start = time.perf_counter()
    seed = args.seed
    models = root / "models"
    world, base, source = start_base(
        demo_preset, out, seed, args.from_scratch, trained_dir=models / folder(BASE), save_steps=preset.curve_every
    )
    files = write_slice(world, root / "slice", preset.curve_images)
    train_stages(
        [
            finetune_job(preset, world, base, models / folder(n), METHODS[n][0], seed, save_steps=preset.curve_every)
            for n in ("Upper bound", "VoCo K=1")
        ]
    )
    curves = {}
    for name, (trained, mode) in CURVES.items():
        if trained == BASE and source["shipped"]:
            points = {}  # the shipped base's own curve is in its bundle (curves.json)
        elif trained == BASE:
            points = checkpoints(base)
        else:
            points = {0: base, **checkpoints(models / folder(trained))}
        curves[name] = {
            str(step): score_checkpoint(preset, path, mode, files, world, root / "answers" / name / str(step))
            for step, path in points.items()
        }
    n = {b: len(files[b][0].read_text().splitlines()) for b in BENCHES}
    write_json_atomic(
        root / "curves.json",
        {
            "preset": demo_preset.image_dict(),
            "seed": seed,
            "questions": n,
            "base_steps": preset.base_steps,
            "curves": curves,
        },
    )
    vision_tokens = (preset.model["image_size"] // preset.model["patch_size"]) ** 2
    title = (
        f"preset {demo_preset.name}, seed {seed}: {vision_tokens} vision tokens -> 1 VoCo token; held-out slice of "
        f"{preset.curve_images} eval images (" + ", ".join(f"{DISPLAY_NAMES[b]} {n[b]} q" for b in BENCHES) + ")"
    )
    plot_curves(root / "curves.png", curves, preset.base_steps, title)
    text = curve_table(title, curves)
    text += f"\n{(time.perf_counter() - start) / 60:.1f} min for this run (finished stages are reused)."
    write_atomic(root / "curves.md", text + "\n")
    print(text)
    return 0
