"""`voco demo --curves`: learning curves for tuning the toy world and its budget.

The demo's stages with a checkpoint every `curve_every` steps, each scored on a held-out slice (every
question about the first `curve_images` eval images, so MME's pairs and MMBench's circular groups
stay whole): the base (all vision tokens, causal), then from the base's final weights the Upper
bound (causal) and VoCo K=1 fine-tunes, the Upper-bound checkpoints also answered under the VoCo
rule (the Lower bound). Written to DIR/curves: curves.json (per run, step and benchmark: the score
and its standard error, and the scorer's per-category numbers), curves.png (one panel per benchmark)
and curves.md. The world and the pretrained tower are the demo's own (DIR/world, DIR/models/init).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.files import pyplot, write_atomic, write_json_atomic, write_jsonl_atomic, write_png
from ..core.pipeline import VoCoPipeline
from ..eval.evaluate import run_eval
from ..eval.scorers import DISPLAY_NAMES, score
from .presets import get_preset
from .stages import BASE, METHODS, base_job, checkpoints, finetune_job, folder, open_run, prepare
from .stats import standard_error
from .toyworld import BENCHES
from .training import train_stage, train_stages

# curve name -> (the model trained for it, eval mode)
CURVES = {
    "Base": (BASE, "full"),
    "Upper bound": ("Upper bound", "full"),
    "Lower bound": ("Upper bound", "voco"),
    "VoCo K=1": ("VoCo K=1", "voco"),
}


def write_slice(world, root: Path, images: int) -> dict[str, tuple[Path, Path]]:
    """bench -> (questions, answer key) of the questions about the first `images` eval images."""
    keep = sorted({q["image"] for b in BENCHES for q in map(json.loads, world.questions(b).read_text().splitlines())})
    keep = set(keep[:images])
    files = {}
    for bench in BENCHES:
        questions = [q for q in map(json.loads, world.questions(bench).read_text().splitlines()) if q["image"] in keep]
        ids = {q["question_id"] for q in questions}
        key = [k for k in map(json.loads, world.answer_key(bench).read_text().splitlines()) if k["question_id"] in ids]
        files[bench] = (root / bench / "questions.jsonl", root / bench / "answer_key.jsonl")
        write_jsonl_atomic(files[bench][0], questions)
        write_jsonl_atomic(files[bench][1], key)
    return files


def _score_point(preset, model_dir: Path, mode: str, files: dict, world, answers: Path) -> dict:
    done = answers / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    pipe = VoCoPipeline.from_pretrained(model_dir)
    point = {}
    for bench, (questions, key) in files.items():
        out = answers / f"{bench}.jsonl"
        out.unlink(missing_ok=True)
        run_eval(
            pipe,
            questions,
            out,
            world.images_dir,
            route=mode,
            max_new_tokens=preset.max_new_tokens,
            batch_size=preset.eval_batch_size,
        )
        summary = score(bench, out, key)
        point[bench] = {
            "score": summary["score"],
            "se": standard_error(bench, summary),
            "categories": summary["categories"],
        }
    write_json_atomic(done, point)
    return point


def _plot(path: Path, curves: dict, base_steps: int, title: str) -> None:
    plt = pyplot()

    colors = {"Base": "#888", "Upper bound": "#222", "Lower bound": "#3a6", "VoCo K=1": "#c33"}
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, bench in zip(axes.flat, BENCHES):
        for name, points in curves.items():
            steps = [s + (base_steps if name != "Base" else 0) for s in map(int, points)]
            values = [p[bench]["score"] for p in points.values()]
            errors = [p[bench]["se"] for p in points.values()]
            ax.errorbar(steps, values, yerr=errors, marker="o", ms=3, capsize=2, label=name, color=colors[name])
        ax.axvline(base_steps, color="#bbb", linestyle=":")
        ax.set_title(DISPLAY_NAMES.get(bench, bench))
        ax.set_xlabel("training step (base, then fine-tune)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    write_png(path, fig, dpi=110)


def run_curves(args) -> int:
    demo_preset = get_preset(args.preset)
    preset = demo_preset.image
    out = open_run(args)
    root = out / "curves"
    start = time.perf_counter()
    seed = args.seed
    world, init = prepare(preset, out, seed)
    files = write_slice(world, root / "slice", preset.curve_images)
    models = root / "models"
    base = train_stage(**base_job(preset, world, init, models / folder(BASE), seed, save_steps=preset.curve_every))
    train_stages(
        [
            finetune_job(preset, world, base, models / folder(n), METHODS[n][0], seed, save_steps=preset.curve_every)
            for n in ("Upper bound", "VoCo K=1")
        ]
    )
    curves = {}
    for name, (trained, mode) in CURVES.items():
        points = checkpoints(models / folder(trained))
        if trained != BASE:
            points = {0: base, **points}
        curves[name] = {
            str(step): _score_point(preset, path, mode, files, world, root / "answers" / name / str(step))
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
    _plot(root / "curves.png", curves, preset.base_steps, title)
    lines = [f"# Learning curves ({title})", ""]
    for name, points in curves.items():
        lines += [f"## {name}", "", "| step | " + " | ".join(DISPLAY_NAMES[b] for b in BENCHES) + " |"]
        lines.append("|---" * (len(BENCHES) + 1) + "|")
        for step, point in points.items():
            cells = [f"{point[b]['score']:.1f} ± {point[b]['se']:.1f}" for b in BENCHES]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"{(time.perf_counter() - start) / 60:.1f} min for this run (finished stages are reused).")
    write_atomic(root / "curves.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
