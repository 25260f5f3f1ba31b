"""Scoring a training run's checkpoints on a held-out slice of the eval questions: the learning
curves of `voco demo --curves` (curves.py) and of the shipped base (`voco demo --pretrain`, pretrain.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.files import pyplot, write_json_atomic, write_jsonl_atomic, write_png
from ..core.pipeline import VoCoPipeline
from ..eval.evaluate import run_eval
from ..eval.scorers import DISPLAY_NAMES, score
from .stats import standard_error
from .toyworld import BENCHES


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


def score_checkpoint(preset, model_dir: Path, mode: str, files: dict, world, answers: Path) -> dict:
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


def plot_curves(path: Path, curves: dict, base_steps: int, title: str) -> None:
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


def curve_table(title: str, curves: dict) -> str:
    """curves.md: per curve, a table of every checkpoint's scores ± standard errors."""
    lines = [f"# Learning curves ({title})", ""]
    for name, points in curves.items():
        lines += [f"## {name}", "", "| step | " + " | ".join(DISPLAY_NAMES[b] for b in BENCHES) + " |"]
        lines.append("|---" * (len(BENCHES) + 1) + "|")
        for step, point in points.items():
            cells = [f"{point[b]['score']:.1f} ± {point[b]['se']:.1f}" for b in BENCHES]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
