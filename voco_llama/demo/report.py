"""The image demo's report: Table 1 and Table 2 from the scored answer files, with standard errors,
the issue's goals checked on them, the plots, and the closing example.

Retention (the paper's rate) per benchmark is (method - lower) / (upper - lower). It is only shown
where the benchmark is learned -- the upper bound beats the lower bound by at least `LEARNED_GAP` of
the benchmark's scale; elsewhere both bounds answer from the text prior and the rate is noise over
noise: the cell shows "-" and the mean leaves it out. A rate above 100% is kept, marked "*" when it
is within two standard errors of 100% and "!" when it is not.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.cache import kv_bytes
from ..core.files import pyplot, write_png
from ..core.pipeline import VoCoPipeline
from ..eval.scorers import DISPLAY_NAMES
from .paired import paired_bootstrap
from .toyworld import BENCHES

LEARNED_GAP = 0.15  # of the benchmark's scale (100 points; MME 200 per subtask)
TABLE1 = ("Upper bound", "VoCo K=1", "Avg-pool", "Q-Former", "Lower bound")
BASELINES = ("Avg-pool", "Q-Former")
BASELINE_MARGIN = 0.10  # retention points VoCo K=1 must keep over each baseline
RETENTION_GOAL = 0.85
K_RISE = 0.03  # Table 2: K=16 at least K=1 + this
MIXTURE = "VoCo mixture"  # the one model fine-tuned with each record's K drawn from Table 2's ks
MIXTURE_MARGIN = 0.03  # retention points the mixture may fall below the model trained at each K


def mixture_name(k: int) -> str:
    """The row of the mixture model answering at K."""
    return f"Mixture K={k}"


def k_only_name(ks: tuple[int, ...]) -> str:
    """The row of the largest-K model run at K=1 (the paper's failure case)."""
    return f"VoCo K={max(ks)}-only at K=1"


def scales(mme_summary: dict) -> dict[str, float]:
    """Full scale of each benchmark's score: 100, and for MME 200 (acc + acc+) per subtask present."""
    return {b: 200.0 * len(mme_summary["categories"]) if b == "mme" else 100.0 for b in BENCHES}


def learning_score(bench: str, summary: dict) -> float:
    """What "learned" is judged on: the score, except POPE's accuracy instead of its F1, because F1 puts
    the two image-blind answers far apart (always "yes" 66.7, always "no" 0) and a gap between them
    says nothing about the image."""
    return summary["metrics"]["mean_accuracy"] if bench == "pope" else summary["score"]


def learned_benchmarks(upper: dict[str, float], lower: dict[str, float], scale: dict[str, float]) -> list[str]:
    """Benchmarks whose upper bound beats the lower bound by LEARNED_GAP of the scale (learning scores)."""
    return [b for b in BENCHES if upper[b] - lower[b] >= LEARNED_GAP * scale[b]]


def read_row(row_dir: Path) -> dict[str, dict]:
    """bench -> scorer summary, from the row's .score.json files."""
    return {b: json.loads((row_dir / f"{b}.score.json").read_text()) for b in BENCHES}


PAIRED_SE_GOAL = 0.03  # a paired difference of mean retentions: its standard error at most this
RETENTION_SE_GOAL = 0.04  # VoCo K=1's mean retention: its standard error at most this
MIXTURE_SE_GOAL = 0.015  # a mixture-minus-per-K difference: small enough to tell a 3-point shortfall


def comparisons(ks: tuple[int, ...], names) -> list[tuple[str, str]]:
    """The paired differences the goals read: VoCo K=1 minus each baseline, the largest K minus K=1,
    and the mixture at each K minus the model trained at that K."""
    pairs = [("VoCo K=1", b) for b in BASELINES]
    if len(ks) > 1:
        pairs.append((f"VoCo K={max(ks)}", f"VoCo K={min(ks)}"))
    pairs += [(mixture_name(k), f"VoCo K={k}") for k in ks if mixture_name(k) in names]
    return pairs


def tables(rows: dict[str, dict[str, dict]], answers: dict, keys: dict, ks: tuple[int, ...]) -> dict:
    """Table 1, Table 2 and the goals. `rows`: row name -> bench -> scorer summary; `answers`: row name ->
    bench -> answers file and `keys`: bench -> answer key, from which paired.py's bootstrap over eval
    images gives every standard error (every row answers the same questions)."""
    score = {n: {b: s[b]["score"] for b in BENCHES} for n, s in rows.items()}
    scale = scales(rows["Upper bound"]["mme"])
    judged = {n: {b: learning_score(b, rows[n][b]) for b in BENCHES} for n in ("Upper bound", "Lower bound")}
    learned = learned_benchmarks(judged["Upper bound"], judged["Lower bound"], scale)
    boot = paired_bootstrap(answers, keys, learned=learned, comparisons=comparisons(ks, rows))
    differences = {(c["a"], c["b"]): c for c in boot["comparisons"]}

    def retained(name: str) -> dict:
        r = boot["rows"][name]
        return {k: r[k] for k in ("retention", "retention_se", "mean_retention", "mean_retention_se")}

    table1 = {n: {"scores": score[n], "se": boot["rows"][n]["se"], **retained(n)} for n in TABLE1}
    table2 = {k: retained(f"VoCo K={k}") for k in ks}
    table2_mixture = {k: retained(mixture_name(k)) for k in ks if mixture_name(k) in rows}
    k_only = retained(k_only_name(ks)) if k_only_name(ks) in rows else None
    found = goals(table1, table2, learned, judged["Upper bound"], judged["Lower bound"], scale, differences)
    if table2_mixture:
        found["mixture"] = mixture_goal(table2_mixture, k_only, differences)
    return {
        "learned": learned,
        "scales": scale,
        "table1": table1,
        "table2": table2,
        "table2_mixture": table2_mixture,
        "k_only_at_1": k_only,
        "differences": boot["comparisons"],
        "resamples": boot["resamples"],
        "n_images": boot["n_images"],
        "goals": found,
    }


def _difference_of(differences: dict, a: str, b: str) -> dict:
    c = differences.get((a, b))
    return {"difference": c["difference"], "se": c["se"]} if c else {"difference": None, "se": None}


def mixture_goal(mixture: dict, k_only: dict | None, differences: dict) -> dict:
    """Issue 18's goal: the one model within MIXTURE_MARGIN of the model trained at each K (the paired
    difference, and whether its error is small enough to tell), and at K=1 above the largest-K model
    run at K=1."""
    per_k = {}
    for k in mixture:
        d = _difference_of(differences, mixture_name(k), f"VoCo K={k}")
        per_k[k] = {
            **d,
            "met": d["difference"] is not None and d["difference"] >= -MIXTURE_MARGIN,
            "resolved": d["se"] is not None and d["se"] <= MIXTURE_SE_GOAL,
        }
    at_1 = mixture[1]["mean_retention"] if 1 in mixture else None
    failure = k_only["mean_retention"] if k_only else None
    above = at_1 is not None and failure is not None and at_1 > failure
    return {
        "met": all(v["met"] for v in per_k.values()) and above,
        "per_k": per_k,
        "margin": MIXTURE_MARGIN,
        "se_goal": MIXTURE_SE_GOAL,
        "above_k_only_at_1": {"met": above, "mixture": at_1, "k_only": failure},
    }


def goals(
    table1: dict, table2: dict, learned: list[str], upper: dict, lower: dict, scale: dict, differences: dict
) -> dict:
    """The issue's goals, judged on these numbers and the paired differences' standard errors."""
    voco = table1["VoCo K=1"]["mean_retention"]
    voco_se = table1["VoCo K=1"]["mean_retention_se"]
    all_learned = len(learned) == len(BENCHES)
    margins = {b: _difference_of(differences, "VoCo K=1", b) for b in BASELINES}
    ks = sorted(table2)
    rise = _difference_of(differences, f"VoCo K={ks[-1]}", f"VoCo K={ks[0]}") if len(ks) > 1 else None
    paired = [c["se"] for c in differences.values() if c["se"] is not None and not c["a"].startswith("Mixture")]
    return {
        "all_learned": {
            "met": all_learned,
            "gaps": {b: upper[b] - lower[b] for b in BENCHES},
            "needed": {b: LEARNED_GAP * scale[b] for b in BENCHES},
        },
        "voco_retention": {
            "met": all_learned and voco is not None and voco >= RETENTION_GOAL,
            "value": voco,
            "goal": RETENTION_GOAL,
        },
        "baselines_below": {
            "met": all(
                m["difference"] is not None and m["difference"] >= BASELINE_MARGIN and m["difference"] > 2 * m["se"]
                for m in margins.values()
            ),
            "margins": margins,
            "goal": BASELINE_MARGIN,
        },
        "table2_rises": {
            "met": rise is not None and rise["difference"] is not None and rise["difference"] >= K_RISE,
            "k1": table2[ks[0]]["mean_retention"],
            "k_max": table2[ks[-1]]["mean_retention"],
            "rise": rise,
        },
        "resolution": {
            "met": voco_se is not None
            and voco_se <= RETENTION_SE_GOAL
            and bool(paired)
            and max(paired) <= PAIRED_SE_GOAL,
            "retention_se": voco_se,
            "largest_paired_se": max(paired) if paired else None,
            "goals": {"retention_se": RETENTION_SE_GOAL, "paired_se": PAIRED_SE_GOAL},
        },
    }


def _cell(value: float | None, se: float | None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.1f}% ± {100 * se:.1f}" if se is not None else f"{100 * value:.1f}%"
    if value > 1:
        text += " *" if se is not None and value - 1 <= 2 * se else " !"
    return text


CATEGORY_MARGIN = 20.0  # points above its chance every GQA category must reach for the upper bound


def gqa_categories(rows: dict[str, dict[str, dict]], key: Path) -> dict:
    """GQA per question category: each row's accuracy, the category's chance (the share of its most
    frequent answer in the key: what an image-blind model that knows the answer distribution gets)
    and the goal that the upper bound beats every chance by CATEGORY_MARGIN points."""
    answers: dict[str, dict[str, int]] = {}
    for k in map(json.loads, key.read_text().splitlines()):
        counts = answers.setdefault(k["category"], {})
        counts[k["answer"]] = counts.get(k["answer"], 0) + 1
    chance = {c: 100.0 * max(n.values()) / sum(n.values()) for c, n in sorted(answers.items())}
    accuracy = {
        name: {c: summary["gqa"]["categories"].get(c, {}).get("accuracy") for c in chance}
        for name, summary in rows.items()
    }
    upper = accuracy["Upper bound"]
    short = {c: upper[c] - chance[c] for c in chance if upper[c] is None or upper[c] - chance[c] < CATEGORY_MARGIN}
    return {
        "chance": chance,
        "n": {c: sum(n.values()) for c, n in answers.items()},
        "accuracy": accuracy,
        "goal": {"met": not short, "margin": CATEGORY_MARGIN, "short": short},
    }


def category_text(categories: dict, names: tuple[str, ...]) -> list[str]:
    cats = list(categories["chance"])
    lines = [
        "## GQA by question category",
        "",
        f"Accuracy % per category (questions in brackets); chance = the share of the category's most frequent "
        f"answer. Goal: the upper bound >= chance + {CATEGORY_MARGIN:.0f} in every category.",
        "",
        "| row | " + " | ".join(f"{c} ({categories['n'][c]})" for c in cats) + " |",
        "|---" * (len(cats) + 1) + "|",
        "| chance | " + " | ".join(f"{categories['chance'][c]:.1f}" for c in cats) + " |",
    ]
    for name in names:
        acc = categories["accuracy"][name]
        lines.append(f"| {name} | " + " | ".join("-" if acc[c] is None else f"{acc[c]:.1f}" for c in cats) + " |")
    return lines + [""]


def tower_text(probe: dict) -> list[str]:
    """The tower's probes as the report's lines."""
    from .probe import TOWER_GOAL

    cells = " | ".join(f"{probe[t]['accuracy']:.1f} ({probe[t]['majority']:.1f})" for t in probe["targets"])
    return [
        "## The vision tower",
        "",
        f"Held-out linear probes of the frozen tower (layer {probe['layer']}): the token under each object's centre, "
        f"fitted on {probe['train_objects']} training-image objects, scored on {probe['held_out_objects']} eval-image "
        f"objects; accuracy % (majority class in brackets), goal >= {TOWER_GOAL:.0f} each.",
        "",
        "| " + " | ".join(probe["targets"]) + " |",
        "|---" * len(probe["targets"]) + "|",
        f"| {cells} |",
        "",
    ]


def markdown(
    name: str,
    seed: int,
    result: dict,
    info: str,
    vision_tokens: int,
    probe: dict | None = None,
    categories: dict | None = None,
) -> str:
    learned = result["learned"]
    names = lambda bs: ", ".join(DISPLAY_NAMES.get(b, b) for b in bs) or "none"
    unlearned = [b for b in BENCHES if b not in learned]
    heads = " | ".join(DISPLAY_NAMES.get(b, b) for b in BENCHES)
    lines = [
        f"# VoCo-LLaMA at toy scale: {vision_tokens} vision tokens -> K VoCo tokens",
        "",
        f"Preset `{name}`, seed {seed}. {info}",
        "",
        *(tower_text(probe) if probe else []),
        "## Table 1: methods (K = 1)",
        "",
        f"Scores ± one standard error: a paired bootstrap over the {result['n_images']} eval images "
        f"({result['resamples']} resamples of the images, every row and benchmark rescored on each; "
        "`demo/paired.py`), the image being the unit because questions about one image are not independent. "
        "MME is the sum of acc + acc+ over its "
        f"{int(result['scales']['mme'] // 200)} subtasks (scale {result['scales']['mme']:.0f}); POPE is F1.",
        "",
        "| method | " + heads + " |",
        "|---" * (len(BENCHES) + 1) + "|",
    ]
    for row_name, row in result["table1"].items():
        cells = [f"{row['scores'][b]:.1f} ± {row['se'][b]:.1f}" for b in BENCHES]
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Retention, (method - lower) / (upper - lower). Learned benchmarks (upper above lower by >= "
        f"{LEARNED_GAP:.0%} of the scale; POPE judged on accuracy, as F1 puts the blind answers 'always yes' "
        f"and 'always no' 67 points apart): {names(learned)}"
        + (f"; not learned, shown as - and left out of the mean: {names(unlearned)}." if unlearned else "."),
        "'*': above 100% within two standard errors; '!': above 100% beyond them.",
        "",
        "| method | " + heads + " | mean retention |",
        "|---" * (len(BENCHES) + 2) + "|",
    ]
    for row_name, row in result["table1"].items():
        cells = [_cell(row["retention"].get(b), row["retention_se"].get(b)) for b in BENCHES]
        lines.append(
            f"| {row_name} | "
            + " | ".join(cells)
            + f" | **{_cell(row['mean_retention'], row['mean_retention_se'])}** |"
        )
    if categories:
        lines += ["", *category_text(categories, TABLE1)]
    ks = sorted(result["table2"])
    lines += [
        "",
        f"## Table 2: VoCo tokens K ({vision_tokens} vision tokens -> K), mean retention over the learned benchmarks",
        "",
        "| K | " + " | ".join(str(k) for k in ks) + " |",
        "|---" * (len(ks) + 1) + "|",
        "| one model per K | "
        + " | ".join(_cell(result["table2"][k]["mean_retention"], result["table2"][k]["mean_retention_se"]) for k in ks)
        + " |",
    ]
    mixture = result.get("table2_mixture") or {}
    if mixture:
        diffs = result["goals"]["mixture"]["per_k"]
        lines += [
            f"| one model for every K (K drawn from {{{', '.join(map(str, sorted(mixture)))}}}) | "
            + " | ".join(_cell(mixture[k]["mean_retention"], mixture[k]["mean_retention_se"]) for k in ks)
            + " |",
            "| mixture minus per-K model (points) | " + " | ".join(_difference(diffs[k]) for k in ks) + " |",
        ]
    k_only = result.get("k_only_at_1")
    if k_only:
        lines += [
            "",
            f"The K={ks[-1]}-only model run at K=1 (the paper's failure case: a K it was never trained at): "
            f"{_cell(k_only['mean_retention'], k_only['mean_retention_se'])}.",
        ]
    lines += [
        "",
        "## Paired differences",
        "",
        "Mean retention of the first row minus the second's, in points, ± the paired bootstrap's standard error "
        "(the same questions, the same image resamples).",
        "",
        "| difference | points |",
        "|---|---|",
        *(f"| {c['a']} minus {c['b']} | {_difference(c)} |" for c in result["differences"]),
        "",
        "## Goals",
        "",
    ]
    g = result["goals"]
    mark = lambda ok: "MET" if ok else "NOT MET"
    gaps = ", ".join(
        f"{DISPLAY_NAMES.get(b, b)} {g['all_learned']['gaps'][b]:+.1f} (needs {g['all_learned']['needed'][b]:.0f})"
        for b in BENCHES
    )
    if probe:
        from .probe import TOWER_GOAL, probe_line

        met = all(probe[t]["accuracy"] >= TOWER_GOAL for t in probe["targets"])
        lines.append(f"- The tower's probes >= {TOWER_GOAL:.0f}% each: {mark(met)} ({probe_line(probe)}).")
    lines.append(f"- Every benchmark learned (upper - lower): {mark(g['all_learned']['met'])}: {gaps}.")
    if categories:
        short = categories["goal"]["short"]
        detail = ", ".join(f"{c} {'-' if v is None else f'{v:+.1f}'}" for c, v in short.items()) or "every category"
        lines.append(
            f"- Every GQA category >= chance + {CATEGORY_MARGIN:.0f} for the upper bound: "
            f"{mark(categories['goal']['met'])} ({'short: ' if short else ''}{detail})."
        )
    v = g["voco_retention"]["value"]
    lines.append(
        f"- VoCo K=1 mean retention over all six >= {RETENTION_GOAL:.0%}: {mark(g['voco_retention']['met'])} "
        f"({_cell(v, result['table1']['VoCo K=1']['mean_retention_se'])} over {len(learned)} learned benchmark(s))."
    )
    margins = ", ".join(f"{b} {_difference(m)}" for b, m in g["baselines_below"]["margins"].items())
    lines.append(
        f"- Avg-pool and Q-Former >= {100 * BASELINE_MARGIN:.0f} points below VoCo K=1, beyond two paired standard "
        f"errors: {mark(g['baselines_below']['met'])} (VoCo minus {margins} points)."
    )
    t2 = g["table2_rises"]
    rise = _difference(t2["rise"]) if t2["rise"] else "-"
    lines.append(
        f"- Table 2 rises with K (K={ks[-1]} >= K={ks[0]} + {100 * K_RISE:.0f} points): {mark(t2['met'])} "
        f"(K={ks[-1]} minus K={ks[0]}: {rise} points, paired)."
    )
    if mixture:
        m = g["mixture"]
        above = m["above_k_only_at_1"]
        unresolved = [f"K={k}" for k, v in m["per_k"].items() if not v["resolved"]]
        lines.append(
            f"- One model for every K within {100 * MIXTURE_MARGIN:.0f} points of the model trained at each K, and "
            f"at K=1 above the K={ks[-1]}-only model run at K=1: {mark(m['met'])} (within: "
            + ", ".join(f"K={k} {'yes' if v['met'] else 'no'}" for k, v in m["per_k"].items())
            + f"; at K=1 {_cell(above['mixture'], None)} vs {_cell(above['k_only'], None)}: "
            f"{'yes' if above['met'] else 'no'}). "
            + (
                f"Paired standard errors of the differences <= {100 * MIXTURE_SE_GOAL:.1f} points at every K."
                if not unresolved
                else f"The run cannot tell a {100 * MIXTURE_MARGIN:.0f}-point shortfall at {', '.join(unresolved)}: "
                f"the paired standard error there is above {100 * MIXTURE_SE_GOAL:.1f} points."
            )
        )
    r = g["resolution"]
    lines.append(
        f"- Resolution: VoCo K=1's mean retention SE <= {100 * RETENTION_SE_GOAL:.0f} points and every paired "
        f"difference's SE <= {100 * PAIRED_SE_GOAL:.0f} points: {mark(r['met'])} ("
        + ("-" if r["retention_se"] is None else f"{100 * r['retention_se']:.1f}")
        + "; largest paired "
        + ("-" if r["largest_paired_se"] is None else f"{100 * r['largest_paired_se']:.1f}")
        + ")."
    )
    lines += ["", "![Table 1](table1_methods.png) ![Table 2](table2_retention_vs_k.png)", ""]
    return "\n".join(lines)


def _difference(entry: dict) -> str:
    if entry["difference"] is None:
        return "-"
    se = f" ± {100 * entry['se']:.1f}" if entry["se"] is not None else ""
    return f"{100 * entry['difference']:+.1f}{se}"


def plots(out: Path, result: dict, vision_tokens: int) -> None:
    plt = pyplot()

    table1, table2 = result["table1"], result["table2"]
    learned = ", ".join(DISPLAY_NAMES.get(b, b) for b in result["learned"]) or "none"
    names = list(table1)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    values = [100 * (table1[n]["mean_retention"] or 0) for n in names]
    errors = [100 * (table1[n]["mean_retention_se"] or 0) for n in names]
    ax.bar(names, values, yerr=errors, capsize=4, color=["#888", "#c33", "#38c", "#3a6", "#444"][: len(names)])
    ax.set_ylabel("mean retention (%)")
    ax.set_title(
        f"{vision_tokens} vision tokens -> 1 at toy scale (Table 1)\nlearned benchmarks: {learned}", fontsize=10
    )
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    fig.tight_layout()
    write_png(out / "table1_methods.png", fig, dpi=120)

    ks = sorted(table2)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    series = [("one model per K", table2, "o")]
    if result.get("table2_mixture"):
        series.append(("one model for every K", result["table2_mixture"], "s"))
    for label, rows, marker in series:
        shown = sorted(rows)
        ax.errorbar(
            shown,
            [100 * (rows[k]["mean_retention"] or 0) for k in shown],
            yerr=[100 * (rows[k]["mean_retention_se"] or 0) for k in shown],
            marker=marker,
            capsize=3,
            label=label,
        )
    k_only = result.get("k_only_at_1")
    if k_only:
        ax.errorbar(
            [1],
            [100 * (k_only["mean_retention"] or 0)],
            yerr=[100 * (k_only["mean_retention_se"] or 0)],
            marker="x",
            color="#c33",
            capsize=3,
            linestyle="none",
            label=f"K={ks[-1]}-only model at K=1",
        )
    if len(series) > 1 or k_only:
        ax.legend(fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("VoCo tokens K")
    ax.set_ylabel("mean retention (%)")
    ax.set_title(f"{vision_tokens} vision tokens -> K VoCo tokens (Table 2)", fontsize=10)
    fig.tight_layout()
    write_png(out / "table2_retention_vs_k.png", fig, dpi=120)


def _normal(text: str) -> str:
    return text.strip().lower().rstrip(".")


def example(out: Path, world, model_dir: Path, max_new_tokens: int, most: int = 8) -> dict:
    """Every question the benches ask about one eval image (the first image asked about in at least
    three benches, so the choice does not depend on the answers), answered from that image's one
    compressed cache. Right = the answer equals the key's (case and a final period aside)."""
    questions = {}
    for bench in BENCHES:
        keys = {k["question_id"]: k for k in map(json.loads, world.answer_key(bench).read_text().splitlines())}
        for q in map(json.loads, world.questions(bench).read_text().splitlines()):
            questions.setdefault(q["image"], []).append((bench, q, keys[q["question_id"]]["answer"]))
    image = next((i for i in sorted(questions) if len({b for b, _, _ in questions[i]}) >= 3), sorted(questions)[0])
    asked, stems = [], set()
    for item in sorted(questions[image], key=lambda t: (BENCHES.index(t[0]), t[1]["question_id"])):
        stem = item[1]["text"].split("\n")[0]  # MMBench's circular copies and repeats across benches: once
        if stem not in stems:
            stems.add(stem)
            asked.append(item)
    # one question per bench first, then the rest, so the example spans the formats
    firsts = [t for i, t in enumerate(asked) if all(t[0] != u[0] for u in asked[:i])]
    asked = (firsts + [t for t in asked if t not in firsts])[:most]
    pipe = VoCoPipeline.from_pretrained(model_dir)
    cache = pipe.compress([world.images_dir / image])
    cache_file = cache.save(out / "example.voco")
    config = pipe.model.config
    full = kv_bytes(config, config.num_vision_tokens + cache.num_voco, cache.keys[0].element_size())
    # the one cache, shared by every question of the batch
    answers = pipe.ask([q["text"] for _, q, _ in asked], cache=cache[[0] * len(asked)], max_new_tokens=max_new_tokens)
    items = [
        {
            "bench": b,
            "question": q["text"],
            "answer": a.text,
            "expected": want,
            "right": _normal(a.text) == _normal(want),
        }
        for (b, q, want), a in zip(asked, answers)
    ]
    return {
        "image": image,
        "cache_bytes": cache.nbytes,
        "cache_file_bytes": cache_file.stat().st_size,
        "full_kv_bytes": full,
        "vision_tokens": config.num_vision_tokens,
        "num_voco": cache.num_voco,
        "questions": items,
        "right": sum(i["right"] for i in items),
    }


def example_text(ex: dict) -> str:
    lines = [
        f"## Example: {len(ex['questions'])} questions about {ex['image']}, answered from its one "
        f"VoCo K={ex['num_voco']} cache",
        "",
        f"Cache: {ex['cache_bytes']:,} bytes ({ex['cache_file_bytes']:,} on disk) vs {ex['full_kv_bytes']:,} bytes of "
        f"full-token K/V ({ex['vision_tokens']} vision + {ex['num_voco']} VoCo tokens): "
        f"{ex['cache_bytes'] / ex['full_kv_bytes']:.1%}. Right: {ex['right']} of {len(ex['questions'])} "
        "(exact match, case aside).",
        "",
        "| bench | question | answer (from the cache) | expected | right |",
        "|---|---|---|---|---|",
    ]
    for i in ex["questions"]:
        question = i["question"].split("\n")
        shown = " / ".join(question[:-1]) if len(question) > 1 else question[0]
        lines.append(
            f"| {DISPLAY_NAMES.get(i['bench'], i['bench'])} | {shown} | {i['answer']!r} | {i['expected']!r} | "
            f"{'yes' if i['right'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"
