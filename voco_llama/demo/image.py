"""The image demo (`voco demo`): the paper's protocol (Tables 1 and 2) at toy scale, on data and models
we make. Stages 1-2 and the training jobs are stages.py's; the tables and plots are report.py's.

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

import time
from dataclasses import dataclass
from pathlib import Path

from ..core.files import write_atomic, write_json_atomic
from ..core.pipeline import VoCoPipeline
from ..core.presets import load_bundle
from ..eval.evaluate import run_eval
from ..eval.scorers import DISPLAY_NAMES, score
from .presets import ImageDemo, get_preset
from .pretrain import start_base
from .probe import TOWER_GOAL, probe_line, run_tower_probe
from .report import (
    MIXTURE,
    TABLE1,
    example,
    example_text,
    gqa_categories,
    k_only_name,
    markdown,
    mixture_name,
    plots,
    read_row,
    tables,
)
from .stages import METHODS, finetune_job, folder, open_run
from .toyworld import BENCHES
from .training import train_stages


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


def _evaluate(preset: ImageDemo, pipe, world, row_dir: Path, mode: str, num_voco: int | None = None) -> None:
    for bench in BENCHES:
        answers = row_dir / f"{bench}.jsonl"
        run_eval(
            pipe,
            world.questions(bench),
            answers,
            world.images_dir,
            route=mode,
            num_voco=num_voco,
            max_new_tokens=preset.max_new_tokens,
            batch_size=preset.eval_batch_size,
            model_id=row_dir.name,
        )
        summary = score(bench, answers, world.answer_key(bench))
        write_json_atomic(row_dir / f"{bench}.score.json", summary)


def _base_text(preset: ImageDemo, source: dict) -> str:
    steps = f"{preset.base_steps} steps x {preset.batch_size}"
    if source["shipped"] is None:
        return f"Tower {preset.tower_steps} steps and base {steps}, trained in this run"
    minutes = source["made"]["seconds"]["total"] / 60
    return (
        f"Tower ({preset.tower_steps} steps) and base ({steps}) shipped in {source['shipped']} "
        f"(`voco demo --pretrain`: {minutes:.0f} min on this project's 2-core machine)"
    )


def tower_gate(base: Path, world) -> dict:
    """Stage 2's check: held-out linear probes of the frozen tower (probe.py), and one line when a target
    is below TOWER_GOAL, said before the fine-tunes spend the rest of the budget."""
    model, _, image_processor = load_bundle(base)
    probe = run_tower_probe(model, image_processor, world)
    shown = probe_line(probe)
    low = [t for t in probe["targets"] if probe[t]["accuracy"] < TOWER_GOAL]
    if low:
        print(
            f"voco demo: the tower is below the {TOWER_GOAL:.0f}% probe goal on {', '.join(low)} ({shown}): "
            "no method can answer what the tower does not see; the tables below are bounded by it"
        )
    else:
        print(f"voco demo: tower probes {shown} (goal >= {TOWER_GOAL:.0f}% each)")
    return probe


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
    world, base, source = start_base(demo_preset, out, seed, args.from_scratch)
    stage("world, tower and base" if source["shipped"] is None else "world (shipped tower and base)", began)
    models_dir = out / "models"
    began = time.perf_counter()
    tower = tower_gate(base, world)
    stage("tower probe", began)
    variants = {name: model for name, (model, _) in METHODS.items()}
    variants.update({f"VoCo K={k}": dict(num_voco=k, attention_rule="voco") for k in preset.ks if k != 1})
    variants[MIXTURE] = mixture_job(preset)  # the same data, steps and rate as each per-K model
    models = {name: models_dir / folder(name) for name in variants}
    began = time.perf_counter()
    train_stages([finetune_job(preset, world, base, models[name], model, seed) for name, model in variants.items()])
    stage("fine-tunes", began)

    began = time.perf_counter()
    rows = eval_rows(preset, models)
    for row in rows:
        print(f"voco demo: evaluating {row.name} ({row.mode})")
        _evaluate(preset, row.pipeline(), world, out / "answers" / folder(row.name), row.mode, row.num_voco)
    stage("eval", began)

    summaries = {row.name: read_row(out / "answers" / folder(row.name)) for row in rows}
    answers = {row.name: {b: out / "answers" / folder(row.name) / f"{b}.jsonl" for b in BENCHES} for row in rows}
    result = tables(summaries, answers, {b: world.answer_key(b) for b in BENCHES}, preset.ks)
    categories = gqa_categories({n: summaries[n] for n in TABLE1}, world.answer_key("gqa"))
    vision_tokens = (preset.model["image_size"] // preset.model["patch_size"]) ** 2
    ex = example(out, world, models["VoCo K=1"], preset.max_new_tokens)
    total = time.perf_counter() - start
    counts = world.meta()["counts"]
    info = (
        f"World: {counts['train_images']} training images ({counts['train_qa_turns']} QA turns), "
        f"{counts['eval_images']} eval images; questions per benchmark: "
        + ", ".join(f"{DISPLAY_NAMES.get(b, b)} {n}" for b, n in counts["eval_questions"].items())
        + f". {_base_text(preset, source)}; every fine-tune {preset.finetune_steps} steps x "
        f"{preset.finetune_batch_size} from the same base. {total / 60:.1f} min wall time for this run (finished "
        "stages are reused; per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")."
    )
    report = {
        "preset": demo_preset.image_dict(),
        "seed": seed,
        "seconds": round(total, 1),
        "stage_seconds": seconds,
        "vision_tokens": vision_tokens,
        "base": {"shipped": source["shipped"], "seconds": source["made"]["seconds"] if source["shipped"] else None},
        "tower_probe": tower,
        "learned_benchmarks": result["learned"],
        "scales": result["scales"],
        "table1": result["table1"],
        "table2": {str(k): v for k, v in result["table2"].items()},
        "table2_mixture": {str(k): v for k, v in result["table2_mixture"].items()},
        "differences": result["differences"],
        "bootstrap": {"resamples": result["resamples"], "images": result["n_images"]},
        "k_only_at_1": result["k_only_at_1"],
        "gqa_categories": categories,
        "goals": result["goals"],
        "example": ex,
    }
    write_json_atomic(out / "report.json", report)
    text = markdown(demo_preset.name, seed, result, info, vision_tokens, tower, categories) + "\n" + example_text(ex)
    write_atomic(out / "report.md", text)
    plots(out, result, vision_tokens)
    print("\n" + text)
    return 0
