"""`voco bench-train`: what the VoCo rule costs in a training step, against stock LLaVA.

Each (sequence length, variant) runs in a fresh process so that its peak memory is its own.
Variants: "voco" (our rule), "causal" (our forward with the causal rule, as a 4D mask), "plain"
(stock LLaVA's forward: transformers' own causal masking)."""

from __future__ import annotations

import os

import torch

from ..core.errors import InputError, positive_int
from ..core.presets import PRESETS

BENCH_VARIANTS = ("voco", "causal", "plain")  # our rule; our forward with the causal rule; stock LLaVA forward


class _RssSampler:
    """Peak resident memory of this process, sampled every millisecond from /proc/self/statm
    (torch ops release the GIL, so the thread samples during them)."""

    def __init__(self):
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.current()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self.done.wait(0.001):
            self.peak = max(self.peak, self.current())

    def start(self):
        self.thread.start()

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return max(self.peak, self.current())


def _bench_one(preset: str, seq: int, variant: str, steps: int, num_voco: int, seed: int, queue) -> None:
    """One (shape, variant) in a fresh process, so its peak memory is its own: seconds per step
    (median over `steps` after one warm-up step) and peak memory growth over the built model."""
    import statistics
    import time

    from transformers import LlavaForConditionalGeneration

    from ..core.presets import build_model

    torch.manual_seed(seed)
    model, tokenizer, _ = build_model(preset, seed=seed, num_voco=num_voco)
    model.train()
    config = model.config
    n, k = config.num_vision_tokens, config.num_voco
    if seq < n + k + 2:
        raise InputError(f"--seq {seq} is shorter than one image group ({n} + {k}) plus text")
    vision = config.vision_config
    text = torch.randint(10, len(tokenizer) - 10, (1, seq - n - k), generator=torch.Generator().manual_seed(seed))
    input_ids = torch.cat([torch.tensor([[config.image_token_id] * n + [config.voco_token_id] * k]), text], dim=1)
    labels = torch.cat([torch.full((1, n + k), -100), text], dim=1)
    batch = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=labels,
        pixel_values=torch.randn(1, 3, vision.image_size, vision.image_size),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    batch = {key: value.to(device) for key, value in batch.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        if variant == "plain":
            # with input_ids unset, our forward passes straight to LLaVA's: stock causal masking
            out = LlavaForConditionalGeneration.forward(model, **batch)
        else:
            out = model(**batch, attention_rule=variant)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        sampler = _RssSampler()  # ru_maxrss is a lifetime high-water mark: it may predate the step
        base = sampler.current()
        sampler.start()
    step()  # warm-up (allocates the optimizer state too)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = sampler.stop() - base
    queue.put((statistics.median(times), peak, device))


def bench_train(preset: str = "tiny", seqs=(None, 2048), steps: int = 5, num_voco: int = 1, seed: int = 0):
    """{(seq, variant): (seconds per step, peak bytes, device)}; seq None = the toy shape (one image
    group plus 32 text tokens)."""
    import multiprocessing as mp

    p = PRESETS[preset]
    toy = (p.image_size // p.patch_size) ** 2 + num_voco + 32
    ctx = mp.get_context("spawn")
    results = {}
    for seq in seqs:
        seq = seq or toy
        for variant in BENCH_VARIANTS:
            queue = ctx.Queue()
            proc = ctx.Process(target=_bench_one, args=(preset, seq, variant, steps, num_voco, seed, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"bench-train: {variant} at sequence {seq} failed (exit {proc.exitcode})")
            results[seq, variant] = queue.get()
    return results


def _bench_command(args) -> int:
    results = bench_train(args.preset, tuple(args.seq), args.steps, args.num_voco)
    device = next(iter(results.values()))[2]
    memory = "peak allocated" if device == "cuda" else "peak RSS growth"  # over the built model
    print(f"training step, preset {args.preset}, K={args.num_voco}, batch 1, {device}; median of {args.steps} steps")
    print(f"{'seq':>6} {'rule':>7} {'ms/step':>9} {memory + ' MB':>22} {'time vs plain':>14} {'memory vs plain':>16}")
    for (seq, variant), (seconds, peak, _) in results.items():
        plain_s, plain_m, _ = results[seq, "plain"]
        mem_ratio = f"{peak / plain_m:.2f}x" if plain_m > 0 else "n/a"
        print(
            f"{seq:>6} {variant:>7} {seconds * 1e3:>9.2f} {peak / 2**20:>22.1f} {seconds / plain_s:>13.2f}x "
            f"{mem_ratio:>16}"
        )
    return 0


def register_cli(subparsers) -> None:
    b = subparsers.add_parser("bench-train", help="step time and peak memory of a training step: VoCo rule vs causal")
    b.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset")
    b.add_argument("--seq", type=int, nargs="+", default=[0, 2048], help="sequence lengths (0 = the toy shape)")
    b.add_argument("--steps", type=positive_int, default=5, help="timed steps per measurement (after one warm-up)")
    b.add_argument("--num-voco", type=positive_int, default=1, help="K: <voco> tokens per image")
    b.set_defaults(func=_bench_command)
