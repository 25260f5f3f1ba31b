"""`voco demo --video`: VoCo per video frame (the paper's Table 8 setting) at toy scale, continuing from the
image demo's models (`voco demo --preset P --out DIR`, run first if DIR/models/voco-k1 is missing).

Stages, each reused on a re-run when its output exists (`--fresh` redoes the video stages -- needed
after changing a preset for an existing DIR; the image demo's models are kept, `voco demo --fresh`
without --video redoes those):
  1. world     the moving world (movingworld.py) in DIR/video/world, frames the size the image
               models were trained on (read from their config), plus one-frame copies of every clip
               holding only its middle frame (DIR/video/middle/), for the middle-frame row;
  2. finetune  `voco train` on one JSON mixing the moving world's video records with some of the
               image world's records (so single-frame skills are kept), same data, steps and learning rate for
               every row, each continuing from its image-demo model with that model's own settings:
               VoCo K=1 (voco-k1), VoCo K=2 (voco-k2), Avg-pool (avg-pool) with F frames per clip,
               and the full-token model (base) given the middle frame only; two runs at a time, one
               thread each; VoCo K=1 keeps a checkpoint every `curve_every` steps;
  3. eval      `voco eval` on eval/moving: VoCo rows answer from per-frame caches, Avg-pool and the
               middle frame with one causal pass over their tokens, Text only is the VoCo K=1 video
               model given no frames; scored with the GQA exact-match scorer, overall and per
               question type, each with its binomial standard error; then VoCo K=1's checkpoints
               (its per-type learning curve) and VoCo K=1 on `accuracy_frames` frames per clip;
               and linear probes of what one frame's cache carries (probe.py);
  4. scaling   for 8..256 frames: positions used, frame K/V bytes and time to first token, VoCo K=1
               (compact layout, answering from the per-frame cache) vs full-token frames (base
               video model, one causal prefill over every frame's tokens);
  5. report    DIR/video/report.md + report.json, scaling.png, curve.png, frames.png; the tables are
               printed, with the goals checked.

Why the middle frame, and why a folder of its own: the moving world puts its mover at the same
place in the middle frame whatever its direction, so one frame cannot answer; `read_video(clip, 1)`
would give frame 0 (LLaVA-style linspace), hence the one-frame folders holding frame (n-1)//2.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path

from ..core.cache import kv_bytes
from ..core.files import pyplot, write_atomic, write_json_atomic, write_png
from ..core.pipeline import VoCoPipeline
from ..eval.evaluate import answered_ids, read_questions, run_eval
from ..eval.scorers import score
from .curves import checkpoints
from .image import run_demo, run_dir
from .movingworld import (
    ANSWER_CYCLES,
    BENCH,
    QUESTION_TYPES,
    generate_moving_world,
    load_moving_world,
    moving_world_config,
)
from .presets import VideoDemo, get_preset
from .probe import run_probe
from .stats import binomial_se
from .toyworld import load_world
from .training import train_stages

CONTEXT_WINDOW = 2048  # the goal: 256 frames at K=1 must fit a context of this many positions
PROBE_TARGETS = ("colour presence", "shape presence", "object count")
# accuracy points VoCo K=1 per frame must lead each baseline by (overall, on the temporal questions)
MARGINS = {"Middle frame (full tokens)": 15.0, "Text only": 15.0, "Avg-pool per frame": 5.0}


# Accuracy rows: name -> (image-demo model it continues from, trained/answered on the middle frame
# only, eval mode). Text only has no model of its own: it is the VoCo K=1 video model, no frames.
ROWS = {
    "VoCo K=1": ("voco-k1", False, "voco"),
    "VoCo K=2": ("voco-k2", False, "voco"),
    "Avg-pool per frame": ("avg-pool", False, "full"),
    "Middle frame (full tokens)": ("base", True, "full"),
}
TEXT_ONLY = "Text only"


def _slug(name: str) -> str:
    return name.lower().split(" (")[0].replace(" ", "-").replace("=", "")


def _model_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


# ----------------------------------------------------------------------------------------------
# 1. world
# ----------------------------------------------------------------------------------------------


def _ensure_moving_world(preset: VideoDemo, root: Path, image_size: int):
    """The moving world, regenerated only when its configuration differs."""
    want = dict(
        seed=0,
        num_train_clips=preset.train_clips,
        num_eval_clips=preset.eval_clips,
        num_frames=preset.clip_frames,
        image_size=image_size,
        contrast_questions=preset.contrast_questions,
    )
    meta = root / "movingworld.json"
    if meta.is_file() and json.loads(meta.read_text())["config"] == moving_world_config(**want):
        return load_moving_world(root)  # the same world, format version included
    print(f"voco demo --video: generating the moving world in {root}")
    return generate_moving_world(root, **want)


def _middle_frames(world, root: Path) -> Path:
    """Per clip a folder holding only its middle frame, (n-1)//2 as movingworld defines it. Remade
    when the world is not the one they were made from (`complete` holds that world's config)."""
    done, made_from = root / "complete", world.meta_json.read_text()
    if done.is_file() and done.read_text() == made_from:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for clip in sorted(p for p in world.videos_dir.iterdir() if p.is_dir()):
        frames = sorted(clip.glob("*.png"))
        middle = frames[(len(frames) - 1) // 2]
        target = root / clip.name / "000.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(middle, target)  # same bytes, no copy
        except OSError:
            shutil.copyfile(middle, target)
    done.write_text(made_from)
    return root


def _mixed_train_json(preset: VideoDemo, out: Path, world, image_world) -> Path:
    """Video records, then every k-th image-world record spread through them (one run, both kinds)."""
    videos = json.loads(world.train_json.read_text())
    images = [r for r in json.loads(image_world.train_json.read_text()) if "image" in r][: preset.image_records]
    mixed, every = [], max(1, len(videos) // max(1, len(images)))
    for i, record in enumerate(videos):
        mixed.append(record)
        if i % every == every - 1 and images:
            mixed.append(images.pop(0))
    mixed += images
    write_json_atomic(out, mixed)
    return out


# ----------------------------------------------------------------------------------------------
# 2. fine-tune
# ----------------------------------------------------------------------------------------------


def _finetune_job(
    preset: VideoDemo,
    start: Path,
    out: Path,
    data: Path,
    image_folder: Path,
    video_folder: Path,
    num_frames: int,
    save_steps: int | None = None,
) -> dict:
    """`voco train` from an image-demo model, keeping its compressor, K and attention rule (a
    `train_stage` job; `save_steps`: keep checkpoints for the learning curves)."""
    config = _model_config(start)
    model = dict(compressor=config["compressor"], attention_rule=config["attention_rule"])
    if config["compressor"] == "voco":
        model["num_voco"] = config["num_voco"]
    return dict(
        out=out,
        start=start,
        data=data,
        image_folder=image_folder,
        steps=preset.steps,
        batch_size=preset.batch_size,
        lr=preset.lr,
        model=model,
        data_extra=dict(video_folder=str(video_folder), num_frames=num_frames),
        model_max_length=2048,
        save_steps=save_steps,
    )


# ----------------------------------------------------------------------------------------------
# 3. eval
# ----------------------------------------------------------------------------------------------


def _evaluate(
    preset: VideoDemo,
    model_dir: Path,
    questions: Path,
    key: Path,
    folder: Path,
    answers: Path,
    mode: str,
    num_frames: int,
) -> dict:
    """Answer (skipped when the answer file is complete) and score; the summary has per-type accuracy."""
    if len(answered_ids(answers)) < len(read_questions(questions)):
        pipe = VoCoPipeline.from_pretrained(model_dir)
        run_eval(
            pipe,
            questions,
            answers,
            folder,
            mode=mode,
            max_new_tokens=preset.max_new_tokens,
            batch_size=preset.eval_batch_size,
            model_id=answers.parent.name,
            num_frames=num_frames,
        )
    summary = score("gqa", answers, key)
    write_json_atomic(answers.with_suffix(".score.json"), summary)
    categories = summary["categories"]
    return {
        "accuracy": summary["score"],
        "se": binomial_se(summary["score"], summary["n_questions"]),
        "categories": {c: v["accuracy"] for c, v in categories.items()},
        "category_se": {c: binomial_se(v["accuracy"], v["n"]) for c, v in categories.items()},
        "n": summary["n_questions"],
    }


# ----------------------------------------------------------------------------------------------
# 4. scaling
# ----------------------------------------------------------------------------------------------


def prompt_positions(pipe, question: str, frames: int, rule: str) -> tuple[int, int]:
    """(text tokens, positions used) of the prompt `ask` builds for `frames` frames, in the layout
    the model uses under `rule` (VoCo: compact; causal: natural)."""
    from ..core.attention import CONTEXT, layout_positions
    from ..core.processing import encode_prompts, question_prompt

    prompt = question_prompt(question, pipe.template, frames)
    batch = encode_prompts([prompt], pipe.tokenizer, pipe.model.config)
    labels = pipe.model.labels_for(batch["input_ids"], batch["attention_mask"])
    positions = layout_positions(labels, pipe.model.layout_for(rule))
    text = int(((labels.kind == CONTEXT) & labels.valid).sum())
    return text, int(positions.max()) + 1


def _timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scaling(preset: VideoDemo, voco_dir: Path, full_dir: Path, world) -> tuple[list[dict], float]:
    """Positions, frame K/V bytes and TTFT for F frames (an eval clip's frames repeated to length F),
    and the VoCo compression time per frame."""
    from ..core.video import read_video

    voco, full = VoCoPipeline.from_pretrained(voco_dir), VoCoPipeline.from_pretrained(full_dir)
    question = read_questions(world.questions)[0]
    clip = read_video(world.videos_dir / question["video"], None)
    # Each frame is compressed alone, so the cache of F repeated frames is the clip's groups repeated:
    # compress the clip once (timed) and index it, rather than compressing 256 frames for nothing.
    voco.compress(clip)  # warm-up
    start = time.perf_counter()
    clip_cache = voco.compress(clip)
    compress_per_frame = (time.perf_counter() - start) / len(clip)
    full_config, k = full.model.config, voco.model.config.num_voco
    n = full_config.num_vision_tokens
    rows, full_affordable = [], True
    for f in preset.sweep_frames:
        frames = [clip[i % len(clip)] for i in range(f)]
        cache = clip_cache[[i % len(clip) for i in range(f)]]
        text, voco_positions = prompt_positions(voco, question["text"], f, "voco")
        _, full_positions = prompt_positions(full, question["text"], f, "causal")
        row = {
            "frames": f,
            "text_tokens": text,
            "voco_k": k,
            "full_n": n,
            "voco_positions": voco_positions,
            "full_positions": full_positions,
            "voco_bytes": cache.nbytes,
            "full_bytes": kv_bytes(full_config, f * n, cache.keys[0].element_size()),
            "voco_fits_context": voco_positions + preset.max_new_tokens <= CONTEXT_WINDOW,
            "full_fits_context": full_positions + preset.max_new_tokens <= CONTEXT_WINDOW,
            "voco_ttft_s": _timed(
                lambda cache=cache: voco.ask(question["text"], cache=cache, max_new_tokens=1), preset.ttft_repeats
            ),
            "full_ttft_s": None,
        }
        # a prompt past the model's own context cannot be answered at all (the model refuses it)
        if full_affordable and full_positions < full_config.text_config.max_position_embeddings:
            row["full_ttft_s"] = _timed(
                lambda frames=frames: full.ask(question["text"], images=frames, route="full", max_new_tokens=1),
                preset.ttft_repeats,
            )
            full_affordable = row["full_ttft_s"] <= preset.full_ttft_budget
        print(
            f"voco demo --video: scaling F={f}: VoCo {voco_positions} positions {row['voco_ttft_s'] * 1e3:.1f} ms, "
            f"full {full_positions} positions "
            + ("not measured" if row["full_ttft_s"] is None else f"{row['full_ttft_s'] * 1e3:.1f} ms")
        )
        rows.append(row)
    return rows, compress_per_frame


def _plot(path: Path, rows: list[dict]) -> None:
    plt = pyplot()

    frames = [r["frames"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [
        ("positions used", "voco_positions", "full_positions"),
        ("frame K/V cache (bytes)", "voco_bytes", "full_bytes"),
        ("time to first token (s)", "voco_ttft_s", "full_ttft_s"),
    ]
    for ax, (label, voco_key, full_key) in zip(axes, panels):
        ax.plot(frames, [r[voco_key] for r in rows], marker="o", label="VoCo K=1 per frame")
        measured = [(r["frames"], r[full_key]) for r in rows if r[full_key] is not None]
        ax.plot(*zip(*measured), marker="s", label="full-token frames")
        if voco_key == "voco_positions":
            ax.axhline(CONTEXT_WINDOW, color="#c33", linestyle="--", label=f"{CONTEXT_WINDOW}-token context")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    write_png(path, fig, dpi=110)


def _plot_curve(path: Path, curve: dict, text_only: dict) -> None:
    """VoCo K=1's accuracy (± 1 SE) per question type against fine-tune steps; chance and text only."""
    plt = pyplot()

    steps = list(curve)
    fig, axes = plt.subplots(1, len(QUESTION_TYPES) + 1, figsize=(17, 3.4), sharey=True)
    panels = [("overall", None), *((t, t) for t in QUESTION_TYPES)]
    for ax, (title, kind) in zip(axes, panels):
        value = (lambda r: r["accuracy"]) if kind is None else (lambda r, kind=kind: r["categories"][kind])
        error = (lambda r: r["se"]) if kind is None else (lambda r, kind=kind: r["category_se"][kind])
        ax.errorbar(steps, [value(r) for r in curve.values()], yerr=[error(r) for r in curve.values()], marker="o")
        ax.axhline(value(text_only), color="#888", linestyle="--", label="text only")
        if kind is not None:
            ax.axhline(100 / len(ANSWER_CYCLES[kind]), color="#c33", linestyle=":", label="chance")
        ax.set_title(title)
        ax.set_xlabel("fine-tune step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("VoCo K=1 accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    write_png(path, fig, dpi=100)


def _plot_frames(path: Path, by_frames: dict, text_only: dict) -> None:
    """VoCo K=1's accuracy (± 1 SE) against the frames sampled per clip, text only as the floor."""
    plt = pyplot()

    frames = list(by_frames)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(
        frames,
        [r["accuracy"] for r in by_frames.values()],
        yerr=[r["se"] for r in by_frames.values()],
        marker="o",
        capsize=3,
        label="VoCo K=1 per frame",
    )
    ax.axhline(text_only["accuracy"], color="#888", linestyle="--", label="text only")
    ax.set_xscale("log", base=2)
    ax.set_xticks(frames, [str(f) for f in frames])
    ax.set_xlabel("frames sampled per clip")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("moving world, toy scale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_png(path, fig, dpi=110)


# ----------------------------------------------------------------------------------------------
# 5. report
# ----------------------------------------------------------------------------------------------


def _goals(accuracy: dict, scaling: list[dict], by_frames: dict) -> dict:
    """The video goals, judged on VoCo K=1 (the setting that fits 256 frames): its overall accuracy
    ahead of each baseline by that baseline's margin (MARGINS), K=2 not below K=1 beyond noise (two
    standard errors of their difference), 256 frames at K=1 inside a 2048-position context."""
    k1, k2 = accuracy["VoCo K=1"], accuracy["VoCo K=2"]
    margins = {b: k1["accuracy"] - accuracy[b]["accuracy"] for b in MARGINS}
    k2_noise = 2 * math.hypot(k1["se"], k2["se"])
    at_256 = [r for r in scaling if r["frames"] == 256]
    return {
        "voco_beats_baselines": all(margins[b] >= need for b, need in MARGINS.items()),
        "margins_points": margins,
        "required_margins_points": MARGINS,
        "k2_minus_k1_points": k2["accuracy"] - k1["accuracy"],
        "k2_noise_points": k2_noise,
        "k2_at_least_k1": k2["accuracy"] - k1["accuracy"] >= -k2_noise,
        "k1_256_frames_fit_2048": bool(at_256) and at_256[0]["voco_fits_context"],
        "k1_accuracy_by_frames_sampled": {f: r["accuracy"] for f, r in by_frames.items()},
    }


def _markdown(
    preset: VideoDemo,
    preset_name: str,
    accuracy: dict,
    scaling: list[dict],
    goals: dict,
    seconds: float,
    models: dict,
    steps_info: str,
    compress_per_frame: float,
    by_frames: dict,
    curve: dict,
    probe: dict,
) -> str:
    types = list(QUESTION_TYPES)
    lines = [
        "# VoCo-LLaMA per video frame at toy scale",
        "",
        f"Preset `{preset_name}`, {seconds / 60:.1f} min wall time for this run (stages reused when present). "
        f"{steps_info}",
        "",
        "## Accuracy on the moving world (exact match, %)",
        "",
        "| method | model | overall | " + " | ".join(types) + " |",
        "|---" * (len(types) + 3) + "|",
    ]
    for name, row in accuracy.items():
        cells = [f"{row['categories'][t]:.1f} ± {row['category_se'][t]:.1f}" for t in types]
        lines.append(
            f"| {name} | {models[name]} | {row['accuracy']:.1f} ± {row['se']:.1f} | " + " | ".join(cells) + " |"
        )
    n_per_type = accuracy["VoCo K=1"]["n"] // len(types)
    lines += [
        "",
        "Every question type needs more than one frame (movingworld.py); chance is 25-50% by type. ± is one "
        f"binomial standard error ({accuracy['VoCo K=1']['n']} questions, about {n_per_type} per type).",
        "",
        "## Scaling with the number of frames",
        "",
        "Positions: the prompt's positions (text + frames). Bytes: the frames' K/V over every layer "
        "(VoCo: the per-frame cache's `.nbytes`; full tokens: `kv_bytes` of F x N tokens). TTFT: answering one "
        "question (one new token) from the already built VoCo cache vs one causal prefill over every "
        "frame's N tokens from pixels; '-' = not measured (the previous size took longer than "
        f"{preset.full_ttft_budget:g} s, or the prompt is longer than the model's context). "
        f"Building the VoCo cache costs {compress_per_frame * 1e3:.1f} ms per "
        "frame, once per video however many questions follow (not in TTFT).",
        "",
        "| frames | text | VoCo K=1 positions | full positions | VoCo bytes | full bytes | VoCo TTFT (ms) | "
        "full TTFT (ms) | K=1 fits 2048 |",
        "|---" * 9 + "|",
    ]
    for r in scaling:
        full_ttft = "-" if r["full_ttft_s"] is None else f"{r['full_ttft_s'] * 1e3:.1f}"
        lines.append(
            f"| {r['frames']} | {r['text_tokens']} | {r['voco_positions']} | {r['full_positions']} | "
            f"{r['voco_bytes']:,} | {r['full_bytes']:,} | {r['voco_ttft_s'] * 1e3:.1f} | {full_ttft} | "
            f"{'yes' if r['voco_fits_context'] else 'no'} |"
        )
    margins = ", ".join(f"{m:+.1f} vs {name} (needs +{MARGINS[name]:g})" for name, m in goals["margins_points"].items())
    sweep = ", ".join(f"{f} frames {r['accuracy']:.1f} ± {r['se']:.1f}" for f, r in by_frames.items())
    lines += [
        "",
        "## What one frame's cache carries",
        "",
        f"Linear probes fitted on {probe['frames'] - probe['held_out']} training-clip frames, scored on "
        f"{probe['held_out']} others, of the VoCo K=1 video model (`demo/probe.py`): held-out accuracy (%) "
        "for colour and shape presence (per label) and object count; R^2 for the mover's x and y.",
        "",
        "| features | dims | colour presence | shape presence | object count | mover x (R^2) | mover y (R^2) |",
        "|---" * 7 + "|",
        "| none (training labels' majority) | 0 | "
        + " | ".join(f"{probe['features']['VoCo cache'][t][1]:.1f}" for t in PROBE_TARGETS)
        + " | 0 | 0 |",
        *(
            f"| {name} | {row['dims']} | "
            + " | ".join(f"{row[t][0]:.1f}" for t in PROBE_TARGETS)
            + " | "
            + (" | ".join(f"{v:.2f}" for v in row["mover x, y (R^2)"]) if row["mover x, y (R^2)"] else "- | -")
            + " |"
            for name, row in probe["features"].items()
        ),
        "",
        "## VoCo K=1's learning curve per question type",
        "",
        "| fine-tune step | overall | " + " | ".join(types) + " |",
        "|---" * (len(types) + 2) + "|",
        *(
            f"| {step} | {r['accuracy']:.1f} ± {r['se']:.1f} | "
            + " | ".join(f"{r['categories'][t]:.1f} ± {r['category_se'][t]:.1f}" for t in types)
            + " |"
            for step, r in curve.items()
        ),
        "",
        "![curve](curve.png)",
        "",
        "## VoCo K=1 by frames sampled per clip",
        "",
        f"The VoCo K=1 video model (trained on {preset.num_frames} frames per clip) answering from {sweep} "
        "per-frame caches (overall accuracy, %).",
        "",
        "![frames](frames.png)",
        "",
        "## Goals",
        "",
        f"- VoCo K=1 per frame beats one full frame and text only by 15 points and avg-pool per frame by 5: "
        f"{'MET' if goals['voco_beats_baselines'] else 'NOT MET'} ({margins}).",
        f"- VoCo K=2 at least K=1 within noise: {'MET' if goals['k2_at_least_k1'] else 'NOT MET'} "
        f"(K=2 - K=1 = {goals['k2_minus_k1_points']:+.1f} points; noise = 2 SE of the difference = "
        f"{goals['k2_noise_points']:.1f}).",
        f"- 256 frames at K=1 fit a {CONTEXT_WINDOW}-token context: "
        f"{'MET' if goals['k1_256_frames_fit_2048'] else 'NOT MET'}.",
        "",
        "![scaling](scaling.png)",
        "",
    ]
    return "\n".join(lines)


def run_video_demo(args) -> int:
    demo_preset = get_preset(args.preset)
    preset = demo_preset.video
    out = run_dir(args)
    video = out / "video"
    if not (out / "models" / "voco-k1" / "config.json").is_file():
        print(f"voco demo --video: no image demo in {out}; running `voco demo --preset {args.preset}` first")
        run_demo(args)
    if getattr(args, "fresh", False) and video.exists():
        shutil.rmtree(video)
    video.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # 1. world: frames as large as the image models' input
    image_models = out / "models"
    image_size = _model_config(image_models / "voco-k1")["vision_config"]["image_size"]
    world = _ensure_moving_world(preset, video / "world", image_size)
    middle = _middle_frames(world, video / "middle")
    image_world = load_world(out / "world")
    data = _mixed_train_json(preset, video / "train_mixed.json", world, image_world)

    # 2. fine-tune every row's model on the same records and steps, two runs at a time (one thread each)
    models, started_from, jobs = {}, {}, []
    for name, (source, middle_only, _) in ROWS.items():
        if source == "base" and not (image_models / "base" / "config.json").is_file():
            source = "upper-bound"  # the full-token model the image demo kept
        started_from[name] = f"models/{source}"
        models[name] = video / "models" / _slug(name)
        jobs.append(
            _finetune_job(
                preset,
                image_models / source,
                models[name],
                data,
                image_world.images_dir,
                middle if middle_only else world.videos_dir,
                1 if middle_only else preset.num_frames,
                save_steps=preset.curve_every if name == "VoCo K=1" else None,
            )
        )
    before = time.perf_counter()
    train_stages(jobs)
    train_seconds = round(time.perf_counter() - before, 1)
    models[TEXT_ONLY] = models["VoCo K=1"]

    # 3. eval
    accuracy = {}
    for name, (_, middle_only, mode) in [*ROWS.items(), (TEXT_ONLY, (None, False, "none"))]:
        print(f"voco demo --video: evaluating {name} ({mode})")
        accuracy[name] = _evaluate(
            preset,
            models[name],
            world.questions,
            world.answer_key,
            middle if middle_only else world.videos_dir,
            video / "answers" / _slug(name) / f"{BENCH}.jsonl",
            mode,
            1 if middle_only else preset.num_frames,
        )

    # what one frame's cache carries (linear probes), measured once per model
    probe_json = video / "probe.json"
    if not probe_json.is_file() or json.loads(probe_json.read_text()).get("model") != str(models["VoCo K=1"]):
        print("voco demo --video: probing what a frame's cache carries")
        write_json_atomic(probe_json, {"model": str(models["VoCo K=1"]), **run_probe(models["VoCo K=1"], world.root)})
    probe = json.loads(probe_json.read_text())

    # the VoCo K=1 video model's learning curve per question type: its checkpoints, scored as the final model
    curve = {}
    for step, path in checkpoints(models["VoCo K=1"]).items():
        if path == models["VoCo K=1"]:
            curve[step] = accuracy["VoCo K=1"]
            continue
        print(f"voco demo --video: evaluating VoCo K=1 at fine-tune step {step}")
        answers = video / "answers" / f"voco-k1-step{step}" / f"{BENCH}.jsonl"
        curve[step] = _evaluate(
            preset, path, world.questions, world.answer_key, world.videos_dir, answers, "voco", preset.num_frames
        )
    _plot_curve(video / "curve.png", curve, accuracy[TEXT_ONLY])

    # VoCo K=1 answering from more or fewer frames than it was trained on (the same answers at its own F)
    by_frames = {}
    for f in preset.accuracy_frames:
        if f == preset.num_frames:
            by_frames[f] = accuracy["VoCo K=1"]
            continue
        print(f"voco demo --video: evaluating VoCo K=1 on {f} frames per clip")
        by_frames[f] = _evaluate(
            preset,
            models["VoCo K=1"],
            world.questions,
            world.answer_key,
            world.videos_dir,
            video / "answers" / f"voco-k1-{f}-frames" / f"{BENCH}.jsonl",
            "voco",
            f,
        )
    _plot_frames(video / "frames.png", by_frames, accuracy[TEXT_ONLY])

    # 4. scaling: measured once (timings would differ on every run), then read back
    scaling_json = video / "scaling.json"
    if scaling_json.is_file() and json.loads(scaling_json.read_text())["frames"] == list(preset.sweep_frames):
        saved = json.loads(scaling_json.read_text())
        scaling, compress_per_frame = saved["rows"], saved["compress_s_per_frame"]
    else:
        scaling, compress_per_frame = _scaling(preset, models["VoCo K=1"], models["Middle frame (full tokens)"], world)
        write_json_atomic(
            scaling_json,
            {"frames": list(preset.sweep_frames), "rows": scaling, "compress_s_per_frame": compress_per_frame},
        )
    _plot(video / "scaling.png", scaling)

    # 5. report
    goals = _goals(accuracy, scaling, by_frames)
    seconds = time.perf_counter() - start
    sources = {name: str(path.relative_to(out)) for name, path in models.items()}
    steps_info = (
        f"Every row fine-tuned {preset.steps} steps x batch {preset.batch_size} from the image demo's "
        f"model on {preset.train_clips} clips ({preset.num_frames} of {preset.clip_frames} frames sampled) "
        f"mixed with {preset.image_records} image records."
    )
    report = {
        "preset": demo_preset.video_dict(),
        "seconds": round(seconds, 1),
        "train_seconds_this_run": train_seconds,  # all rows, two at a time
        "image_size": image_size,
        "models": sources,
        "started_from": started_from,
        "accuracy": accuracy,
        "accuracy_by_frames_sampled": by_frames,
        "voco_k1_curve": curve,
        "probe": probe,
        "scaling": scaling,
        "compress_s_per_frame": compress_per_frame,
        "goals": goals,
    }
    write_json_atomic(video / "report.json", report)
    markdown = _markdown(
        preset,
        demo_preset.name,
        accuracy,
        scaling,
        goals,
        seconds,
        sources,
        steps_info,
        compress_per_frame,
        by_frames,
        curve,
        probe,
    )
    write_atomic(video / "report.md", markdown)
    print("\n" + markdown)
    return 0
