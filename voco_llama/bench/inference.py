"""`voco bench`: the paper's Table 7 (efficiency of VoCo caching), measured on this machine.

Three ways of answering one more question about an image the system has already seen, for the
same prompt (vicuna_v1: system, `USER: <image>\\n{question} ASSISTANT:`), all under the VoCo rule
so they are the same model and give the same answer (checked: first-token logits agree to 1e-4):

  (a) no cache      the reference code's way: one masked forward over [context, N vision, K VoCo,
                    context] with pixels, vision tower included, every question;
  (b) full caching  the image group's K/V (N vision + K VoCo tokens, every layer) kept from a
                    first pass; each question computes only the text tokens, attending to that
                    cache through `voco_attention_mask` (the rule masks the N vision keys, but
                    they are stored and the attention kernel still reads them);
  (c) VoCo caching  only the K VoCo tokens' K/V kept (`model.compress`), answered with
                    `model.prefill(..., cache=cache)`.

(b) and (c) compute exactly the same text tokens (system prompt and question); only what is
cached differs. A text-only floor runs those same text tokens with no image at all.

Per mode: tokens cached, cache bytes in memory and on disk (VoCoCache.save for (c), safetensors
of the full K/V for (b)), FLOPs of the answering prefill (torch.utils.flop_counter, with the CPU
flash-attention kernel counted as dense attention), time to first token and per-token decode time
(median and quartiles over warm repeats, modes interleaved so machine load hits them alike), and
peak memory: the high-water mark of torch's CPU allocations during the prefill, from
torch.profiler memory events (weights and an already-built cache are not counted; tracemalloc and
ru_maxrss cannot isolate this). Then sweeps over K and over the number of images/frames.

The default model (`--preset llava15-geometry`) is randomly initialised with LLaVA-1.5's shape
where it sets cost ratios -- CLIP 336 px / patch 14 = 576 vision tokens, vicuna_v1 prompt, MHA
(kv_heads = heads), LLaMA's 2.6875x MLP -- but a width and depth a CPU runs in seconds; the
vision tower is sized so its share of the no-cache cost is near ViT-L's share next to Vicuna-7B.
`--model DIR` benchmarks any saved VoCo model instead.

The analytic LLaVA-1.5-7B figures (32 layers, 32 KV heads x 128, fp16): one token's K/V is
32 x 2 x 4096 x 2 = 524,288 bytes = 0.524 MB (1e6) = 0.5 MiB; 576 tokens' K/V is 301,989,888
bytes = 302.0 MB = 288 MiB. The paper's 302.4 MB is not any token count (302.4e6 / 524,288 =
576.8 tokens) nor MiB: it is 576 x 0.525 MB, i.e. the per-token size rounded to 0.525 MB (the
paper's own note says 0.524 MB) and multiplied by 576. We print the exact bytes and that reading.

Reading the times: on a CPU, a ~60-token prefill runs fewer FLOPs per second than a ~630-token
one (smaller matrix products), so the TTFT ratio (c)/(a) sits above the FLOPs ratio; both are
printed. torch's default thread count is kept; when other processes share the cores, its
OpenMP threads can be slowed ten-fold in some rounds (quartiles then spread widely; `--threads 1`
is steadier on a busy machine).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import DynamicCache, LlamaConfig

from ..core.attention import VISION, TokenLabels, layout_positions
from ..core.cache import kv_bytes
from ..core.errors import positive_int
from ..core.files import check_folder_target, pyplot, write_png
from ..core.presets import PRESETS, build_model, llava15_geometry, load_bundle
from ..core.processing import encode_prompts, question_prompt

# LLaVA-1.5's short-answer evaluation prompt (GQA / VQAv2 style).
QUESTION = "What color is the car on the left?\nAnswer the question using a single word or phrase."
RULE = "voco"
MODES = ("no_cache", "full_cache", "voco_cache")
MODE_NAMES = {
    "no_cache": "no cache (full sequence each time)",
    "full_cache": "full caching (vision + VoCo K/V)",
    "voco_cache": "VoCo caching",
    "floor": "text-only floor (same text, no image)",
}


# ---- the model ------------------------------------------------------------------------------------


def load_model(args):
    if args.model:
        model, tokenizer, _ = load_bundle(args.model)
        return model, tokenizer, str(args.model)
    if args.preset != "llava15-geometry":
        model, tokenizer, _ = build_model(args.preset)
        return model, tokenizer, args.preset
    model, tokenizer, _ = build_model(llava15_geometry(args.hidden, args.layers))
    return model, tokenizer, f"llava15-geometry (hidden {args.hidden}, {args.layers} layers, random weights)"


# ---- analytic figures for the real LLaVA-1.5-7B ----------------------------------------------------

LLAVA15_7B = SimpleNamespace(
    text_config=LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    )
)


def analytic_7b() -> dict:
    one = kv_bytes(LLAVA15_7B, 1, 2)
    full = kv_bytes(LLAVA15_7B, 576, 2)
    one_mb_paper = math.ceil(one / 1e3) / 1e3  # 0.525: 524,288 B rounded up at the third decimal
    return {
        "config": "32 layers x 2 x 32 KV heads x 128 x fp16",
        "bytes_1_token": one,
        "bytes_576_tokens": full,
        "bytes_577_tokens": kv_bytes(LLAVA15_7B, 577, 2),
        "mb_1_token": one / 1e6,
        "mib_1_token": one / 2**20,
        "mb_576_tokens": full / 1e6,
        "mib_576_tokens": full / 2**20,
        "paper_mb_1_token": one_mb_paper,
        "paper_mb_576_tokens": round(576 * one_mb_paper, 6),
        "tokens_for_302_4_mb": 302.4e6 / one,
        "reduction_k1": 1 - one / full,
    }


def analytic_lines(a: dict) -> list[str]:
    return [
        f"LLaVA-1.5-7B K/V, analytic ({a['config']}):",
        f"  1 token    {a['bytes_1_token']:,} B = {a['mb_1_token']:.3f} MB (1e6) = {a['mib_1_token']:.3f} MiB;"
        f" paper: {a['paper_mb_1_token']:.3f} MB (rounded up)",
        f"  576 tokens {a['bytes_576_tokens']:,} B = {a['mb_576_tokens']:.1f} MB (1e6) = {a['mib_576_tokens']:.0f} MiB;"
        f" paper: {a['paper_mb_576_tokens']:.1f} MB = 576 x {a['paper_mb_1_token']:.3f} MB",
        f"  (302.4 MB exactly would be {a['tokens_for_302_4_mb']:.1f} tokens; 577 tokens = "
        f"{a['bytes_577_tokens'] / 1e6:.1f} MB; so 302.4 is the rounded per-token figure x 576)",
        f"  reduction at K=1: {a['reduction_k1']:.2%} (paper: -99.8%)",
    ]


# ---- the prompt and the three ways of answering ---------------------------------------------------


def encode(tokenizer, config, num_images: int = 1, num_voco: int | None = None, question: str = QUESTION):
    prompt = question_prompt(question, num_images=num_images)
    return encode_prompts([prompt], tokenizer, config, num_voco=num_voco)


def example_pixels(config, num_images: int = 1) -> torch.Tensor:
    """A fixed pseudo-random image (cost does not depend on content), repeated for frames."""
    vision = config.vision_config
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, vision.image_size, vision.image_size, generator=generator)
    return image.expand(num_images, -1, -1, -1).contiguous()


def _context_index(labels: TokenLabels) -> torch.Tensor:
    """Indices [1, n] of the real text tokens (outside every group) of a one-row batch."""
    return torch.nonzero((labels.group[0] == 0) & labels.valid[0])[:, 0][None]


@dataclass
class FullCache:
    """(b): every cached token's K/V per layer ([1, kv_heads, tokens, head_dim]) and its labels."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    labels: TokenLabels

    @property
    def num_tokens(self) -> int:
        return self.layers[0][0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers for t in kv)

    def save(self, path: Path) -> Path:
        tensors = {}
        for i, (k, v) in enumerate(self.layers):
            tensors[f"keys.{i}"], tensors[f"values.{i}"] = k.contiguous(), v.contiguous()
        save_file(tensors, str(path), metadata={"format": "voco-bench-full-kv", "tokens": str(self.num_tokens)})
        return path


@torch.no_grad()
def build_full_cache(model, batch, pixel_values) -> FullCache:
    """Pass 1 of (b): each image group [N vision, K VoCo] run alone at its place in the prompt (under
    the rule a group sees only itself, so this equals the masked pass), all its K/V kept. A group
    whose pixels equal the first group's reuses its K/V, keys re-rotated to the new positions."""
    ids = batch["input_ids"]
    labels = model.labels_for(ids, batch["attention_mask"])
    positions = layout_positions(labels, model.layout_for(RULE))
    parts, label_parts, first = [], [], None
    for g in range(1, int(labels.group.max()) + 1):
        index = torch.nonzero(labels.group[0] == g)[:, 0][None]
        group = labels.select(index, torch.ones_like(index, dtype=torch.bool))
        group_positions = positions.gather(1, index)
        label_parts.append(group)
        if first is not None and torch.equal(pixel_values[g - 1], pixel_values[0]):
            delta = group_positions[0] - first[0]
            kv = [(model.rerotate_keys(k, delta[None]), v) for k, v in first[1]]
        else:
            features = torch.stack(model.get_image_features(pixel_values=pixel_values[g - 1 : g]).pooler_output)
            embeds = model.get_input_embeddings()(ids.gather(1, index)).clone()
            embeds[group.kind == VISION] = features.reshape(-1, features.shape[-1]).to(embeds.dtype)
            out = model.text_model(
                inputs_embeds=embeds,
                attention_mask=model.attention_mask_for(group, group, RULE),
                position_ids=group_positions,
                past_key_values=DynamicCache(),
                use_cache=True,
            )
            kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            if first is None:
                first = (group_positions[0], kv)
        parts.append(kv)
    layers = [
        (torch.cat([kv[0] for kv in per_layer], 2), torch.cat([kv[1] for kv in per_layer], 2))
        for per_layer in zip(*parts)
    ]
    cached = label_parts[0]
    for part in label_parts[1:]:
        cached = TokenLabels.cat(cached, part)
    return FullCache(layers, cached)


def prefill_full_cache(model, batch, full: FullCache):
    """Pass 2 of (b): the text tokens against the full cache, under the same rule (a `Prefill`,
    as `model.prefill` returns)."""
    ids = batch["input_ids"]
    labels = model.labels_for(ids, batch["attention_mask"])
    positions = layout_positions(labels, model.layout_for(RULE))
    return model.prefill_context(ids, labels, positions, full.labels, full.layers, RULE)


def text_only_batch(batch, labels: TokenLabels):
    """The floor: exactly (c)'s query tokens (system + question), with no image in the prompt."""
    ids = batch["input_ids"].gather(1, _context_index(labels))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def answerers(model, batch, pixels, full: FullCache | None, cache):
    """mode -> a zero-argument call that runs the answering prefill (what TTFT and FLOPs measure)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    calls = {}
    calls["no_cache"] = lambda: model.prefill(ids, mask, pixel_values=pixels, rule=RULE)
    if full is not None:
        calls["full_cache"] = lambda: prefill_full_cache(model, batch, full)
    if cache is not None:
        calls["voco_cache"] = lambda: model.prefill(ids, mask, cache=cache)
    return calls


# ---- measuring ------------------------------------------------------------------------------------


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


FLOP_MAPPING = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


@torch.no_grad()
def count_flops(call) -> int:
    """FLOPs of one call; attention counted dense (masked keys are computed, then discarded)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING) as counter:
        call()
    return int(counter.get_total_flops())


@torch.no_grad()
def peak_alloc_bytes(call) -> int:
    """High-water mark of torch CPU allocations (allocs minus frees) during `call`, from the
    profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto, the profiler's backend, writes "USDT: ... profiler_start" / "profiler_stop" to stderr
    # for every session at its top level (USDT = 5, above its errors); its threshold comes from
    # KINETO_LOG_LEVEL, read when the profiler first starts in the process. 6 keeps it quiet
    # (a level the user set is left alone).
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@torch.no_grad()
def answer_once(model, call, decode_steps: int) -> tuple[float, list[float], torch.Tensor]:
    """TTFT (prefill + first token), then `decode_steps` greedy steps timed one by one."""
    start = time.perf_counter()
    prompt = call()
    token = prompt.logits[:, -1].argmax(-1)
    ttft = time.perf_counter() - start
    first_logits = prompt.logits[:, -1]
    next_position = prompt.query_positions[:, -1:] + 1
    key_labels, order = prompt.key_labels, prompt.next_order
    steps = []
    for step in range(decode_steps):
        start = time.perf_counter()
        logits, key_labels = model.decode_step(token, key_labels, prompt.past, next_position + step, order + step, RULE)
        token = logits.argmax(-1)
        steps.append(time.perf_counter() - start)
    return ttft, steps, first_logits


def summary(samples: list[float]) -> dict:
    """Median and spread of times in seconds (reported in ms)."""
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "q1_ms": q[0] * 1e3,
        "q3_ms": q[2] * 1e3,
        "min_ms": ordered[0] * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "n": len(ordered),
    }


def time_modes(model, calls: dict, repeats: int, warmup: int, decode_steps: int, progress=None) -> dict:
    """Warm-up, then `repeats` rounds with the modes interleaved."""
    ttft = {m: [] for m in calls}
    decode = {m: [] for m in calls}
    for round_ in range(warmup + repeats):
        for mode, call in calls.items():
            t, steps, _ = answer_once(model, call, decode_steps)
            if round_ >= warmup:
                ttft[mode].append(t)
                decode[mode].extend(steps)
            if progress is not None:
                progress.update(1)
    return {m: {"ttft": summary(ttft[m]), "decode_per_token": summary(decode[m]) if decode[m] else None} for m in calls}


# ---- the benchmark --------------------------------------------------------------------------------


@dataclass
class Settings:
    repeats: int = 10
    warmup: int = 2
    decode_steps: int = 8
    ks: tuple = (1, 4, 16, 64)
    frames: tuple = (1, 2, 4, 8, 16, 32, 64)
    sweep_repeats: int = 3
    frame_budget_s: float = 2.0  # a mode stops growing F once doubling F would likely exceed this


def _pct(new: float, ref: float) -> float:
    return (new / ref - 1) * 100


@torch.no_grad()
def run_bench(model, tokenizer, settings: Settings, out: Path, model_name: str = "") -> dict:
    begin = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    n = config.num_vision_tokens
    k = config.num_voco
    text = config.text_config
    bytes_per_value = torch.finfo(model.dtype).bits // 8
    result = {
        "model": model_name,
        "geometry": {
            "vision_tokens": n,
            "num_voco": k,
            "layers": text.num_hidden_layers,
            "hidden": text.hidden_size,
            "kv_heads": text.num_key_value_heads,
            "head_dim": getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
            "dtype": str(model.dtype).removeprefix("torch."),
            "attn_implementation": text._attn_implementation,
            "torch_threads": torch.get_num_threads(),
            "position_layout": config.position_layout,
            "vision_tower": f"{config.vision_config.model_type} {config.vision_config.num_hidden_layers} layers x "
            f"{config.vision_config.hidden_size}",
        },
        "settings": asdict(settings),
        "analytic_7b": analytic_7b(),
    }

    # -- Table 7: one image, K as configured ------------------------------------------------------
    batch = encode(tokenizer, config)
    labels = model.labels_for(batch["input_ids"], batch["attention_mask"])
    pixels = example_pixels(config)
    cache = model.compress(pixels)
    full = build_full_cache(model, batch, pixels)
    floor_batch = text_only_batch(batch, labels)
    calls = answerers(model, batch, pixels, full, cache)
    calls["floor"] = lambda: model.prefill(floor_batch["input_ids"], floor_batch["attention_mask"], rule=RULE)

    firsts = {m: answer_once(model, call, 0)[2][0].float() for m, call in calls.items()}
    result["agreement"] = {
        "first_token": {m: int(firsts[m].argmax()) for m in MODES},
        "max_abs_logit_diff_full_cache_vs_no_cache": float((firsts["full_cache"] - firsts["no_cache"]).abs().max()),
        "max_abs_logit_diff_voco_cache_vs_no_cache": float((firsts["voco_cache"] - firsts["no_cache"]).abs().max()),
    }

    total = (settings.warmup + settings.repeats) * len(calls)
    with tqdm(total=total, desc="table 7", leave=False) as bar:
        timing = time_modes(model, calls, settings.repeats, settings.warmup, settings.decode_steps, bar)
    b_file = full.save(out / "full_kv.safetensors")
    c_file = cache.save(out / "voco_cache.safetensors")
    query_tokens = int(floor_batch["input_ids"].shape[1])
    rows = {
        "no_cache": {
            "tokens_cached": 0,
            "cache_bytes": 0,
            "disk_bytes": 0,
            "tokens_computed": int(batch["input_ids"].shape[1]),
        },
        "full_cache": {
            "tokens_cached": full.num_tokens,
            "cache_bytes": full.nbytes,
            "disk_bytes": b_file.stat().st_size,
            "tokens_computed": query_tokens,
        },
        "voco_cache": {
            "tokens_cached": cache.num_voco * cache.num_groups,
            "cache_bytes": cache.nbytes,
            "disk_bytes": c_file.stat().st_size,
            "tokens_computed": query_tokens,
        },
        "floor": {"tokens_cached": 0, "cache_bytes": 0, "disk_bytes": 0, "tokens_computed": query_tokens},
    }
    for mode, call in tqdm(calls.items(), desc="flops/memory", leave=False):
        rows[mode].update(
            timing[mode], flops=count_flops(call), peak_alloc_bytes=peak_alloc_bytes(call), name=MODE_NAMES[mode]
        )
    ref = rows["no_cache"]
    for mode in ("full_cache", "voco_cache", "floor"):
        rows[mode]["ttft_change_pct"] = _pct(rows[mode]["ttft"]["median_ms"], ref["ttft"]["median_ms"])
        rows[mode]["flops_change_pct"] = _pct(rows[mode]["flops"], ref["flops"])
    rows["voco_cache"]["storage_change_pct"] = _pct(
        rows["voco_cache"]["cache_bytes"], rows["full_cache"]["cache_bytes"]
    )
    result["table7"] = rows
    result["kv_bytes_formula"] = {
        "full_cache": kv_bytes(config, full.num_tokens, bytes_per_value),
        "voco_cache": kv_bytes(config, cache.num_voco, bytes_per_value),
        "576_vision_tokens": kv_bytes(config, n, bytes_per_value),
    }

    # -- goals ------------------------------------------------------------------------------------
    # costs, not answers: the K=1 storage goal and the sweep below may use any K on these weights
    config.num_voco_choices = sorted({k, 1, *settings.ks})
    k1 = cache if k == 1 else model.compress(pixels, num_voco=1)  # the goal is stated at K=1
    storage_reduction = 1 - k1.nbytes / kv_bytes(config, n, bytes_per_value)
    ttft_vs_no_cache = rows["voco_cache"]["ttft"]["median_ms"] / ref["ttft"]["median_ms"]
    ttft_vs_floor = rows["voco_cache"]["ttft"]["median_ms"] / rows["floor"]["ttft"]["median_ms"]
    result["goals"] = [
        {
            "goal": f"storage reduction at K=1 of {n} >= 99.8%",
            "measured": storage_reduction,
            "passed": storage_reduction >= 0.998,
            "text": f"{storage_reduction:.3%}",
        },
        {
            "goal": "VoCo TTFT <= 10% of no-cache TTFT",
            "measured": ttft_vs_no_cache,
            "passed": ttft_vs_no_cache <= 0.10,
            "text": f"{ttft_vs_no_cache:.1%} ({rows['voco_cache']['ttft']['median_ms']:.2f} / "
            f"{ref['ttft']['median_ms']:.2f} ms; "
            f"FLOPs ratio {rows['voco_cache']['flops'] / ref['flops']:.1%}, text-only floor / no cache "
            f"{rows['floor']['ttft']['median_ms'] / ref['ttft']['median_ms']:.1%})",
        },
        {
            "goal": "VoCo TTFT <= 1.2x text-only floor",
            "measured": ttft_vs_floor,
            "passed": ttft_vs_floor <= 1.2,
            "text": f"{ttft_vs_floor:.2f}x ({rows['voco_cache']['ttft']['median_ms']:.2f} / "
            f"{rows['floor']['ttft']['median_ms']:.2f} ms)",
        },
    ]

    # -- sweep over K ------------------------------------------------------------------------------
    phases = {"table7": time.perf_counter() - begin}
    sweep_k = []
    for num_voco in tqdm(settings.ks, desc="sweep K", leave=False):
        k_batch = encode(tokenizer, config, num_voco=num_voco)
        k_cache = cache if num_voco == k else model.compress(pixels, num_voco=num_voco)
        k_calls = {"voco_cache": answerers(model, k_batch, pixels, None, k_cache)["voco_cache"]}
        k_time = time_modes(model, k_calls, settings.sweep_repeats, 1, 0)["voco_cache"]
        path = k_cache.save(out / f"voco_cache_k{num_voco}.safetensors")
        sweep_k.append(
            {
                "k": num_voco,
                "cache_bytes": k_cache.nbytes,
                "disk_bytes": path.stat().st_size,
                "ttft_ms": k_time["ttft"]["median_ms"],
                "flops": count_flops(k_calls["voco_cache"]),
                "storage_vs_vision_pct": 100 * k_cache.nbytes / kv_bytes(config, n, bytes_per_value),
            }
        )
        path.unlink()
    result["sweep_k"] = sweep_k

    # -- sweep over images / frames in one context ------------------------------------------------
    phases["sweep_k"] = time.perf_counter() - begin - sum(phases.values())
    sweep_frames, skipped, stopped = [], [], set()
    for frames in tqdm(settings.frames, desc="sweep frames", leave=False):
        f_batch = encode(tokenizer, config, num_images=frames)
        f_pixels = example_pixels(config, frames)
        f_cache = type(cache).cat([cache] * frames)  # the same image F times: identical K/V per frame
        f_full = build_full_cache(model, f_batch, f_pixels) if "full_cache" not in stopped else None
        f_calls = answerers(model, f_batch, f_pixels, f_full, f_cache)
        for mode in sorted(stopped):
            f_calls.pop(mode, None)
            skipped.append({"frames": frames, "mode": mode})
        f_time = time_modes(model, f_calls, settings.sweep_repeats, 1, 0)
        row = {
            "frames": frames,
            "voco_cache_bytes": f_cache.nbytes,
            "full_cache_bytes": kv_bytes(config, frames * (n + k), bytes_per_value),
        }
        for mode, t in f_time.items():
            row[f"{mode}_ttft_ms"] = t["ttft"]["median_ms"]
            if 2 * t["ttft"]["median_ms"] > settings.frame_budget_s * 1e3:  # cost grows at least linearly in F
                stopped.add(mode)
        sweep_frames.append(row)
        del f_full
    result["sweep_frames"] = sweep_frames
    result["sweep_frames_skipped"] = skipped
    result["sweep_frames_note"] = (
        f"a mode is no longer run for larger F once its TTFT passed {settings.frame_budget_s / 2:g} s "
        f"(doubling F would exceed {settings.frame_budget_s:g} s); "
        "(b)'s cache bytes are still given (from the formula) where its TTFT was skipped"
    )
    phases["sweep_frames"] = time.perf_counter() - begin - sum(phases.values())
    result["phase_s"] = phases
    result["runtime_s"] = time.perf_counter() - begin
    return result


# ---- reporting ------------------------------------------------------------------------------------


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.3f} MB" if nbytes < 1e8 else f"{nbytes / 1e6:.1f} MB"


def _flops(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def table7_markdown(result: dict) -> list[str]:
    rows = result["table7"]
    lines = [
        "| | tokens cached | storage (memory / disk) | TTFT median [q1-q3] min | decode / token "
        "| FLOPs (answering prefill) | peak alloc |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("no_cache", "full_cache", "voco_cache", "floor"):
        r = rows[mode]
        t = r["ttft"]
        cached = "-" if mode in ("no_cache", "floor") else str(r["tokens_cached"])
        storage = "-" if mode in ("no_cache", "floor") else f"{_mb(r['cache_bytes'])} / {_mb(r['disk_bytes'])}"
        if mode == "voco_cache":
            storage += f" ({r['storage_change_pct']:+.1f}% vs b)"
        time_ = f"{t['median_ms']:.2f} ms [{t['q1_ms']:.2f}-{t['q3_ms']:.2f}] min {t['min_ms']:.2f}"
        flops = _flops(r["flops"])
        if mode != "no_cache":
            time_ += f" ({r['ttft_change_pct']:+.1f}%)"
            flops += f" ({r['flops_change_pct']:+.1f}%)"
        decode = f"{r['decode_per_token']['median_ms']:.2f} ms" if r["decode_per_token"] else "-"
        lines.append(
            f"| {r['name']} | {cached} | {storage} | {time_} | {decode} | {flops} | {_mb(r['peak_alloc_bytes'])} |"
        )
    return lines


def render_markdown(result: dict) -> str:
    g = result["geometry"]
    agree = result["agreement"]
    lines = [
        "# voco bench: Table 7 on this machine",
        "",
        f"Model: {result['model']}; {g['vision_tokens']} vision tokens, K={g['num_voco']}, LM {g['layers']} layers x "
        f"{g['hidden']} ({g['kv_heads']} KV heads x {g['head_dim']}), {g['dtype']}, {g['attn_implementation']}, "
        f"vision tower {g['vision_tower']}, {g['torch_threads']} torch threads. Times: median and quartiles over "
        f"{result['settings']['repeats']} warm repeats; peak alloc: high-water mark of torch CPU allocations during "
        "the answering prefill (torch.profiler memory events; weights and the prebuilt cache excluded).",
        "",
        *table7_markdown(result),
        "",
        f"Same model, same rule: first token {agree['first_token']}, max |logit diff| (b) vs (a) "
        f"{agree['max_abs_logit_diff_full_cache_vs_no_cache']:.1e}, (c) vs (a) "
        f"{agree['max_abs_logit_diff_voco_cache_vs_no_cache']:.1e}.",
        "",
        "## Goals",
        "",
        *[f"- {'PASS' if goal['passed'] else 'FAIL'} {goal['goal']}: {goal['text']}" for goal in result["goals"]],
        "",
        "## Analytic: LLaVA-1.5-7B",
        "",
        "```",
        *analytic_lines(result["analytic_7b"]),
        "```",
        "",
        "## Sweep: K VoCo tokens per image (VoCo caching)",
        "",
        "| K | cache (memory / disk) | % of 576 vision tokens' K/V | TTFT | FLOPs |",
        "|---|---|---|---|---|",
        *[
            f"| {r['k']} | {_mb(r['cache_bytes'])} / {_mb(r['disk_bytes'])} | {r['storage_vs_vision_pct']:.2f}% | "
            f"{r['ttft_ms']:.2f} ms | {_flops(r['flops'])} |"
            for r in result["sweep_k"]
        ],
        "",
        "## Sweep: images / frames in one context",
        "",
        "| frames | (b) cache | (c) cache | (a) TTFT | (b) TTFT | (c) TTFT |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["sweep_frames"]:
        cell = lambda m, r=r: f"{r[m + '_ttft_ms']:.2f} ms" if m + "_ttft_ms" in r else "skipped"
        lines.append(
            f"| {r['frames']} | {_mb(r['full_cache_bytes'])} | {_mb(r['voco_cache_bytes'])} | {cell('no_cache')} | "
            f"{cell('full_cache')} | {cell('voco_cache')} |"
        )
    lines += ["", result["sweep_frames_note"] + "."]
    first_skipped = {}
    for s in result["sweep_frames_skipped"]:
        first_skipped.setdefault(s["mode"], s["frames"])
    for mode, frames in sorted(first_skipped.items()):
        lines.append(f"Skipped: ({mode}) from {frames} frames on.")
    phases = ", ".join(f"{name} {sec:.0f} s" for name, sec in result["phase_s"].items())
    lines += ["", f"Runtime: {result['runtime_s']:.1f} s ({phases}).", ""]
    return "\n".join(lines)


def plot(result: dict, out: Path) -> list[Path]:
    plt = pyplot()

    paths = []
    ks = [r["k"] for r in result["sweep_k"]]
    rows = result["table7"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(ks, [r["cache_bytes"] / 1e6 for r in result["sweep_k"]], "o-", label="(c) VoCo cache")
    left.axhline(rows["full_cache"]["cache_bytes"] / 1e6, color="gray", ls="--", label="(b) full cache")
    left.set(xscale="log", yscale="log", xlabel="K VoCo tokens", ylabel="cache MB", title="storage vs K")
    right.plot(ks, [r["ttft_ms"] for r in result["sweep_k"]], "o-", label="(c) VoCo caching")
    for mode, style in (("no_cache", ":"), ("full_cache", "--"), ("floor", "-.")):
        right.axhline(rows[mode]["ttft"]["median_ms"], color="gray", ls=style, label=MODE_NAMES[mode])
    right.set(xscale="log", yscale="log", xlabel="K VoCo tokens", ylabel="TTFT ms", title="time to first token vs K")
    for ax in (left, right):
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(write_png(out / "bench_k.png", fig, dpi=100))

    frames = result["sweep_frames"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    f = [r["frames"] for r in frames]
    left.plot(f, [r["full_cache_bytes"] / 1e6 for r in frames], "o-", label="(b) full cache")
    left.plot(f, [r["voco_cache_bytes"] / 1e6 for r in frames], "o-", label="(c) VoCo cache")
    left.set(xscale="log", yscale="log", xlabel="images / frames", ylabel="cache MB", title="storage vs frames")
    for mode in ("no_cache", "full_cache", "voco_cache"):
        pts = [(r["frames"], r[f"{mode}_ttft_ms"]) for r in frames if f"{mode}_ttft_ms" in r]
        if pts:
            right.plot(*zip(*pts), "o-", label=MODE_NAMES[mode])
    right.set(
        xscale="log", yscale="log", xlabel="images / frames", ylabel="TTFT ms", title="time to first token vs frames"
    )
    for ax in (left, right):
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(write_png(out / "bench_frames.png", fig, dpi=100))
    return paths


# ---- CLI ------------------------------------------------------------------------------------------


def _bench_command(args) -> int:
    out = Path(args.out)
    check_folder_target(out)  # a file, or under one: one line before any work
    if args.quick:
        settings = Settings(repeats=3, warmup=1, decode_steps=3, ks=(1, 4), frames=(1, 2), sweep_repeats=1)
    else:
        settings = Settings(repeats=args.repeats)
    if args.max_frames is not None:
        settings.frames = tuple(f for f in settings.frames if f <= args.max_frames)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, name = load_model(args)
    if model.config.voco_layout == "reference":  # its prompts hold one image (attention.py)
        settings.frames = (1,)
    result = run_bench(model, tokenizer, settings, out, name)
    plots = plot(result, out)
    result["plots"] = [p.name for p in plots]
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    markdown = render_markdown(result)
    (out / "bench.md").write_text(markdown)
    print("\n".join(table7_markdown(result)))
    print()
    for goal in result["goals"]:
        print(f"{'PASS' if goal['passed'] else 'FAIL'} {goal['goal']}: {goal['text']}")
    print()
    print("\n".join(analytic_lines(result["analytic_7b"])))
    print(
        f"\n{out / 'bench.md'}, {out / 'bench.json'}, {', '.join(str(out / p) for p in result['plots'])}"
        f" ({result['runtime_s']:.0f} s)"
    )
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="Table 7: no cache vs full caching vs VoCo caching, measured")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="a saved VoCo model directory")
    source.add_argument(
        "--preset",
        default="llava15-geometry",
        choices=sorted(PRESETS),
        help="llava15-geometry (default: random weights, LLaVA-1.5's 576-token shape) or another preset",
    )
    p.add_argument("--hidden", type=positive_int, default=512, help="LM width of llava15-geometry")
    p.add_argument("--layers", type=positive_int, default=4, help="LM (and vision) depth of llava15-geometry")
    p.add_argument("--repeats", type=positive_int, default=10, help="warm repeats for Table 7 timings")
    p.add_argument("--max-frames", type=positive_int, help="largest number of frames in the frames sweep (default 64)")
    p.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's own default)")
    p.add_argument("--quick", action="store_true", help="few repeats, small sweeps (tests)")
    p.add_argument("--out", default="runs/bench")
    p.set_defaults(func=_bench_command)
