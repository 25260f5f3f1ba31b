"""`voco bench-train`: what the VoCo rule costs in a training step, against stock LLaVA.

Three variants (peak memory: each (sequence length, variant) in a fresh process, so the peak is its
own; time: the three in one process, steps taken in turn, so a passing load hits them alike):
  "causal"   stock LLaVA: `LlavaForConditionalGeneration.forward`, transformers' own causal masking
             (sdpa is_causal, or FlashAttention-2 with --attn flash_attention_2);
  "streams"  our forward under the VoCo rule as exact causal streams (core/streams.py), same kernel;
  "mask"     our forward under the VoCo rule as the dense 4D mask, on sdpa (the reference).
Each row also gives the attention FLOPs of one forward (QK^T and PV, all layers): the pairs a
causal kernel computes for the stock step, the pairs inside the streams' causal sequences, and
every pair for a dense-masked kernel. The rule's own count (pairs it allows) is printed beside
them: the streams compute it plus the discarded VoCo rows of the main stream.
"""

from __future__ import annotations

import torch

from ..core.errors import InputError, positive_int

BENCH_VARIANTS = ("causal", "streams", "mask")
GOAL_FROM = 2048  # the goals hold at this sequence length and up
GOALS = {"time": 1.0, "memory": 1.05}  # streams vs stock causal


def _preset(name: str, hidden: int | None, layers: int | None, heads: int | None):
    from ..core.presets import PRESETS, Preset, llava15_geometry

    if name == "llava15-geometry":
        p = llava15_geometry(hidden or 512, layers or 4)
    else:
        p = PRESETS[name]
        p = Preset(**{**p.__dict__, **({"hidden": hidden} if hidden else {}), **({"layers": layers} if layers else {})})
    if heads:
        p = Preset(**{**p.__dict__, "heads": heads, "kv_heads": heads if p.kv_heads == p.heads else p.kv_heads})
    return p


def attention_flops(model, input_ids, attention_mask) -> dict[str, int]:
    """Forward attention FLOPs (QK^T and PV: 4 x head_dim x heads per query-key pair, all layers)."""
    from ..core.attention import voco_attention_mask
    from ..core.streams import plan_streams

    text = model.config.text_config
    per_pair = 4 * (getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    per_pair *= text.num_attention_heads * text.num_hidden_layers
    labels = model.labels_for(input_ids, attention_mask)
    length = int(labels.valid.sum())
    rule = model.config.attention_rule
    return {
        "causal": per_pair * length * (length + 1) // 2,
        "streams": per_pair * plan_streams(labels, labels, rule, "sdpa").pairs,
        "mask": per_pair * input_ids.shape[1] ** 2,
        "rule": per_pair * int(voco_attention_mask(labels, labels, rule).sum()),
    }


class _Step:
    """One variant's model, batch and optimizer at one sequence length; calling it runs a step."""

    def __init__(self, settings: dict, seq: int, variant: str):
        from transformers import LlavaForConditionalGeneration

        from ..core.presets import build_model

        s = settings
        preset = _preset(s["preset"], s["hidden"], s["layers"], s["heads"])
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(self.device):  # a 7B-wide random init takes minutes on the CPU, seconds here
            model, tokenizer, _ = build_model(preset, seed=s["seed"], num_voco=s["num_voco"])
        dtype = getattr(torch, s["dtype"])
        model.to(self.device, dtype).train()  # before the kernel is set: flash checks dtype and device
        model.set_attention_path("streams" if variant == "streams" else "mask")
        model.set_attn_implementation({"text_config": "sdpa" if variant == "mask" else s["attn"]})
        # as `voco train`: the tower frozen (--freeze_vision_tower, the default), no KV cache kept
        model.model.vision_tower.requires_grad_(False)
        model.config.use_cache = model.config.text_config.use_cache = False
        config, images = model.config, s["images"]
        group = [config.image_token_id] * config.num_vision_tokens + [config.voco_token_id] * config.num_voco
        gen = torch.Generator().manual_seed(s["seed"])
        text = torch.randint(10, len(tokenizer) - 10, (1, seq - images * len(group)), generator=gen)
        input_ids = torch.cat([torch.tensor([group * images]), text], dim=1)
        self.flops = attention_flops(model, input_ids, None)
        vision = config.vision_config
        batch = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            labels=torch.cat([torch.full((1, images * len(group)), -100), text], dim=1),
            pixel_values=torch.randn(images, 3, vision.image_size, vision.image_size, generator=gen).to(dtype),
        )
        self.batch = {key: value.to(self.device) for key, value in batch.items()}
        self.model, self.variant = model, variant
        # stock LLaVA: its own forward (with no labels of ours, transformers' causal masking)
        self.forward = (lambda **b: LlavaForConditionalGeneration.forward(model, **b)) if variant == "causal" else model
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        self.where = f"{self.device} {s['dtype']} {model.text_model.config._attn_implementation}"

    def __call__(self) -> float:
        import time

        start = time.perf_counter()
        self.forward(**self.batch).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def _memory_one(settings: dict, seq: int, variant: str, queue) -> None:
    """Peak allocated memory of one step, over what was allocated before it (the model, and the
    optimizer state a warm-up step made), in a fresh process so that the peak is this variant's own."""
    from .inference import peak_alloc_bytes

    step = _Step(settings, seq, variant)
    step()
    if step.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        # the profiler's allocation events, not RSS: the allocator's caching makes RSS swing by
        # more than the differences measured here. (__wrapped__: the inference bench's no_grad off)
        peak = peak_alloc_bytes.__wrapped__(step)
    queue.put((peak, step.where, step.flops))


def _time_all(settings: dict, seq: int, queue) -> None:
    """Seconds per step of every variant, median over `steps` rounds that run the variants in
    turn (one warm-up round first): a load that comes and goes hits them alike."""
    import statistics

    steps = {variant: _Step(settings, seq, variant) for variant in BENCH_VARIANTS}
    times = {variant: [] for variant in BENCH_VARIANTS}
    for round_ in range(settings["steps"] + 1):
        for variant, step in steps.items():
            seconds = step()
            if round_:
                times[variant].append(seconds)
    queue.put({variant: statistics.median(t) for variant, t in times.items()})


def _in_process(target, *args):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"bench-train: {target.__name__}{args[1:]} failed (exit {proc.exitcode})")
    return queue.get()


def bench_train(seqs=(512, 2048, 4096), **settings) -> dict:
    """{(seq, variant): (seconds per step, peak bytes, where, attention FLOPs)}."""
    s = dict(preset="tiny", hidden=None, layers=None, heads=None, num_voco=1, images=1, steps=5, seed=0)
    s.update(attn="sdpa", dtype="float32")
    s.update(settings)
    p = _preset(s["preset"], s["hidden"], s["layers"], s["heads"])
    group = (p.image_size // p.patch_size) ** 2 + s["num_voco"]
    for seq in seqs:
        if seq < s["images"] * group + 2:
            raise InputError(f"--seq {seq} is shorter than {s['images']} image group(s) of {group} tokens plus text")
    results = {}
    for seq in seqs:
        seconds = _in_process(_time_all, s, seq)
        for variant in BENCH_VARIANTS:
            results[seq, variant] = (seconds[variant], *_in_process(_memory_one, s, seq, variant))
    return results


def report(results: dict) -> list[str]:
    lines = []
    memory = "peak alloc MB"  # growth over the built model and optimizer state
    lines.append(
        f"{'seq':>6} {'variant':>8} {'ms/step':>9} {memory:>14} {'time/causal':>12} {'mem/causal':>11} "
        f"{'attn GFLOP':>11}  kernel"
    )
    for (seq, variant), (seconds, peak, where, flops) in results.items():
        base_s, base_m, _, _ = results[seq, "causal"]
        mem_ratio = f"{peak / base_m:.2f}x" if base_m > 0 else "n/a"
        lines.append(
            f"{seq:>6} {variant:>8} {seconds * 1e3:>9.1f} {peak / 2**20:>14.1f} {seconds / base_s:>11.2f}x "
            f"{mem_ratio:>11} {flops[variant] / 1e9:>11.3f}  {where}"
        )
        if variant == BENCH_VARIANTS[-1]:
            lines.append(f"{'':>6} {'(rule)':>8} {'':>9} {'':>14} {'':>12} {'':>11} {flops['rule'] / 1e9:>11.3f}")
    for seq in sorted({seq for seq, _ in results}):
        if seq < GOAL_FROM:
            continue
        (t, m, _, _), (bt, bm, _, _) = results[seq, "streams"], results[seq, "causal"]
        for goal, ratio in (("time", t / bt), ("memory", m / bm if bm > 0 else float("inf"))):
            verdict = "PASS" if ratio <= GOALS[goal] else "FAIL"
            lines.append(f"{verdict} seq {seq}: streams {goal} {ratio:.2f}x stock causal (goal <= {GOALS[goal]:.2f}x)")
    return lines


def _bench_command(args) -> int:
    results = bench_train(
        tuple(args.seq),
        preset=args.preset,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        num_voco=args.num_voco,
        images=args.images,
        steps=args.steps,
        attn=args.attn,
        dtype=args.dtype,
    )
    print(
        f"training step, preset {args.preset}, K={args.num_voco}, {args.images} image(s), batch 1; "
        f"median of {args.steps} steps; ratios measured in this run"
    )
    print("\n".join(report(results)))
    return 0


def register_cli(subparsers) -> None:
    from ..core.presets import PRESETS

    b = subparsers.add_parser(
        "bench-train", help="step time, peak memory, attention FLOPs of a training step: stock causal vs the VoCo rule"
    )
    b.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    b.add_argument("--hidden", type=positive_int, help="LM width (llava15-geometry: default 512)")
    b.add_argument("--layers", type=positive_int, help="LM depth (llava15-geometry: LM and vision, default 4)")
    b.add_argument("--heads", type=positive_int, help="attention heads (LLaMA-7B: 32 of 128)")
    b.add_argument("--seq", type=positive_int, nargs="+", default=[512, 2048, 4096], help="sequence lengths")
    b.add_argument("--steps", type=positive_int, default=5, help="timed steps per measurement (after one warm-up)")
    b.add_argument("--num-voco", type=positive_int, default=1)
    b.add_argument("--images", type=positive_int, default=1, help="images at the start of the row")
    b.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2"], help="kernel of causal/streams")
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    b.set_defaults(func=_bench_command)
