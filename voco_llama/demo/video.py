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
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.cache import kv_bytes
from ..core.files import write_atomic, write_json_atomic
from ..core.pipeline import VoCoPipeline
from ..eval.evaluate import answered_ids, read_questions, run_eval
from ..eval.scorers import score
from .image import run_demo
from .movingworld import (
    BENCH,
    generate_moving_world,
    load_moving_world,
    moving_world_config,
)
from .presets import VideoDemo, get_preset
from .probe import run_probe
from .stages import BASE, checkpoints, folder, run_dir
from .stats import binomial_se
from .toyworld import load_world
from .training import train_stages
from .video_report import CONTEXT_WINDOW, goals, markdown, plot_curve, plot_frames, plot_scaling

# Accuracy rows: name -> (image-demo model it continues from, trained/answered on the middle frame
# only, eval mode). Text only has no model of its own: it is the VoCo K=1 video model, no frames.
ROWS = {
    "VoCo K=1": ("VoCo K=1", False, "voco"),
    "VoCo K=2": ("VoCo K=2", False, "voco"),
    "Avg-pool per frame": ("Avg-pool", False, "full"),
    "Middle frame (full tokens)": (BASE, True, "full"),
}
TEXT_ONLY = "Text only"


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
            route=mode,
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


# ----------------------------------------------------------------------------------------------
# The stages, in order
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """One video demo run: its preset, folders and worlds."""

    preset: VideoDemo
    out: Path  # the image demo's run folder
    video: Path  # out/video: everything this demo writes
    world: object  # the moving world
    middle: Path  # per clip a folder holding only its middle frame
    image_world: object

    def answer(self, model_dir: Path, answers: str, mode: str, frames: int, middle_only: bool = False) -> dict:
        """`_evaluate` of one model on the moving world's eval clips, into video/answers/ANSWERS."""
        return _evaluate(
            self.preset,
            model_dir,
            self.world.questions,
            self.world.answer_key,
            self.middle if middle_only else self.world.videos_dir,
            self.video / "answers" / answers / f"{BENCH}.jsonl",
            mode,
            frames,
        )


def _open(args, preset: VideoDemo) -> _Run:
    """Stage 1: the image demo (run first when missing), the moving world, its middle frames."""
    out = run_dir(args)
    video = out / "video"
    if not (out / "models" / folder("VoCo K=1") / "config.json").is_file():
        print(f"voco demo --video: no image demo in {out}; running `voco demo --preset {args.preset}` first")
        run_demo(args)
    if getattr(args, "fresh", False) and video.exists():
        shutil.rmtree(video)
    video.mkdir(parents=True, exist_ok=True)
    # frames as large as the image models' input
    world = _ensure_moving_world(preset, video / "world", _image_size(out))
    middle = _middle_frames(world, video / "middle")
    return _Run(preset, out, video, world, middle, load_world(out / "world"))


def _image_size(out: Path) -> int:
    return _model_config(out / "models" / folder("VoCo K=1"))["vision_config"]["image_size"]


def _train_rows(run: _Run) -> tuple[dict[str, Path], dict[str, str], float]:
    """Stage 2: every row's model fine-tuned on the same records and steps, two runs at a time (one
    thread each). Returns (row -> model folder, row -> the image-demo model it started from, seconds)."""
    preset, image_models = run.preset, run.out / "models"
    data = _mixed_train_json(preset, run.video / "train_mixed.json", run.world, run.image_world)
    models, started_from, jobs = {}, {}, []
    for name, (source, middle_only, _) in ROWS.items():
        if source == BASE and not (image_models / folder(BASE) / "config.json").is_file():
            source = "Upper bound"  # the full-token model the image demo kept
        started_from[name] = f"models/{folder(source)}"
        models[name] = run.video / "models" / folder(name)
        jobs.append(
            _finetune_job(
                preset,
                image_models / folder(source),
                models[name],
                data,
                run.image_world.images_dir,
                run.middle if middle_only else run.world.videos_dir,
                1 if middle_only else preset.num_frames,
                save_steps=preset.curve_every if name == "VoCo K=1" else None,
            )
        )
    before = time.perf_counter()
    train_stages(jobs)
    models[TEXT_ONLY] = models["VoCo K=1"]
    return models, started_from, round(time.perf_counter() - before, 1)


def _accuracies(run: _Run, models: dict[str, Path]) -> dict[str, dict]:
    """Stage 3: every row on the eval clips (Text only: the VoCo K=1 model given no frames)."""
    accuracy = {}
    for name, (_, middle_only, mode) in [*ROWS.items(), (TEXT_ONLY, (None, False, "none"))]:
        print(f"voco demo --video: evaluating {name} ({mode})")
        frames = 1 if middle_only else run.preset.num_frames
        accuracy[name] = run.answer(models[name], folder(name), mode, frames, middle_only)
    return accuracy


def _probe(run: _Run, model: Path) -> dict:
    """What one frame's cache carries (linear probes), measured once per model."""
    probe_json = run.video / "probe.json"
    if not probe_json.is_file() or json.loads(probe_json.read_text()).get("model") != str(model):
        print("voco demo --video: probing what a frame's cache carries")
        write_json_atomic(probe_json, {"model": str(model), **run_probe(model, run.world.root)})
    return json.loads(probe_json.read_text())


def _curve(run: _Run, model: Path, final: dict) -> dict[int, dict]:
    """The VoCo K=1 video model's learning curve per question type: its checkpoints, scored as the
    final model (`final`: the final model's accuracy)."""
    curve = {}
    for step, path in checkpoints(model).items():
        if path == model:
            curve[step] = final
            continue
        print(f"voco demo --video: evaluating VoCo K=1 at fine-tune step {step}")
        curve[step] = run.answer(path, f"voco-k1-step{step}", "voco", run.preset.num_frames)
    return curve


def _by_frames(run: _Run, model: Path, final: dict) -> dict[int, dict]:
    """VoCo K=1 answering from more or fewer frames than it was trained on (its own F: `final`)."""
    by_frames = {}
    for f in run.preset.accuracy_frames:
        if f == run.preset.num_frames:
            by_frames[f] = final
            continue
        print(f"voco demo --video: evaluating VoCo K=1 on {f} frames per clip")
        by_frames[f] = run.answer(model, f"voco-k1-{f}-frames", "voco", f)
    return by_frames


def _scaling_once(run: _Run, models: dict[str, Path]) -> tuple[list[dict], float]:
    """Stage 4: the scaling sweep, measured once (timings would differ on every run), then read back."""
    scaling_json = run.video / "scaling.json"
    if scaling_json.is_file() and json.loads(scaling_json.read_text())["frames"] == list(run.preset.sweep_frames):
        saved = json.loads(scaling_json.read_text())
        return saved["rows"], saved["compress_s_per_frame"]
    scaling, compress_per_frame = _scaling(
        run.preset, models["VoCo K=1"], models["Middle frame (full tokens)"], run.world
    )
    write_json_atomic(
        scaling_json,
        {"frames": list(run.preset.sweep_frames), "rows": scaling, "compress_s_per_frame": compress_per_frame},
    )
    return scaling, compress_per_frame


def run_video_demo(args) -> int:
    demo_preset = get_preset(args.preset)
    preset = demo_preset.video
    run = _open(args, preset)
    start = time.perf_counter()
    models, started_from, train_seconds = _train_rows(run)
    accuracy = _accuracies(run, models)
    probe = _probe(run, models["VoCo K=1"])
    curve = _curve(run, models["VoCo K=1"], accuracy["VoCo K=1"])
    plot_curve(run.video / "curve.png", curve, accuracy[TEXT_ONLY])
    by_frames = _by_frames(run, models["VoCo K=1"], accuracy["VoCo K=1"])
    plot_frames(run.video / "frames.png", by_frames, accuracy[TEXT_ONLY])
    scaling, compress_per_frame = _scaling_once(run, models)
    plot_scaling(run.video / "scaling.png", scaling)

    # 5. report
    found = goals(accuracy, scaling, by_frames)
    seconds = time.perf_counter() - start
    sources = {name: str(path.relative_to(run.out)) for name, path in models.items()}
    steps_info = (
        f"Every row fine-tuned {preset.steps} steps x batch {preset.batch_size} from the image demo's "
        f"model on {preset.train_clips} clips ({preset.num_frames} of {preset.clip_frames} frames sampled) "
        f"mixed with {preset.image_records} image records."
    )
    report = {
        "preset": demo_preset.video_dict(),
        "seconds": round(seconds, 1),
        "train_seconds_this_run": train_seconds,  # all rows, two at a time
        "image_size": _image_size(run.out),
        "models": sources,
        "started_from": started_from,
        "accuracy": accuracy,
        "accuracy_by_frames_sampled": by_frames,
        "voco_k1_curve": curve,
        "probe": probe,
        "scaling": scaling,
        "compress_s_per_frame": compress_per_frame,
        "goals": found,
    }
    write_json_atomic(run.video / "report.json", report)
    text = markdown(
        preset,
        demo_preset.name,
        accuracy,
        scaling,
        found,
        seconds,
        sources,
        steps_info,
        compress_per_frame,
        by_frames,
        curve,
        probe,
    )
    write_atomic(run.video / "report.md", text)
    print("\n" + text)
    return 0
