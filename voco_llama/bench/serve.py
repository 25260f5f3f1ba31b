"""`voco bench-serve`: what VoCo caching is worth to a server, measured over loopback HTTP.

Three servers, each the real `voco serve` application (same FastAPI app, same batching worker,
same content-addressed store bounded by the same `--cache-memory`), differ only in what they keep
per image (the engine's four cache steps):

  voco_cache  the K VoCo tokens' K/V (`voco serve` itself)
  full_cache  all N vision + K VoCo tokens' K/V (`voco bench`'s (b): `build_full_cache`), answered by
              the same text-only pass against it (`model.prefill_context`) and greedy decoding
  no_cache    nothing: every question runs the masked pass over the pixels again (route "masked")

Each client sends the image with every question (a data: URL; the store finds it by its bytes'
hash, as any OpenAI client of `voco serve` would be served). Clients are threads of this process,
each asking its questions one after another over a pool of images; the three servers run side by
side and every client count is run for each mode in turn, so machine load hits them alike. Before
timing, voco_cache and full_cache see each pool image once (/v1/voco/compress): the timed questions
are follow-up questions, answered from whatever each server's memory still holds.

Continuous batching (`--joiners`, voco_cache only): a short question's latency alone, then the same
question from `--joiners` clients sent while a long sampled answer (`--long-tokens`) decodes; each
must finish within 2x its time alone (it joins the running batch at the next decode step).

Resident images: a fresh store of the same budget is filled with copies of one real entry until it
evicts. Answers must agree across modes (same model, same rule, greedy): mismatches are counted.
Goals, as ratios of one run: VoCo keeps >= 500x the images of full-token caching resident at 576
tokens per image, answers follow-up questions at >= 5x the throughput of no caching, and short
requests joining a long generation finish within 2x their time alone.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core.attention import layout_positions
from ..core.errors import InputError, positive_int
from ..core.files import pyplot, write_png
from ..core.pipeline import VoCoPipeline
from ..core.presets import build_model, llava15_geometry
from ..core.processing import encode_prompts
from ..serve.engine import Engine
from ..serve.metrics import Metrics
from ..serve.store import CacheStore, size_arg
from .inference import RULE, build_full_cache, encode

MODES = ("voco_cache", "full_cache", "no_cache")
QUESTIONS = [
    "What color is the car on the left?\nAnswer the question using a single word or phrase.",
    "How many circles are there?\nAnswer the question using a single word or phrase.",
    "Is there a square in the image?\nAnswer the question using a single word or phrase.",
    "Describe the image briefly.",
]


# ---- the two baselines, as engines ------------------------------------------------------------------


@dataclass
class FullEntry:
    """One image's full-token K/V ([1, kv_heads, N + K, head_dim] per layer) and where it was computed."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    positions: torch.Tensor  # [N + K] positions the keys are rotated at
    num_groups: int = 1

    @property
    def num_voco(self) -> int:  # tokens cached per image (what /v1/voco/compress reports)
        return self.layers[0][0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers for t in kv)


class FullCacheEngine(Engine):
    """Keeps every image's N + K tokens of K/V. Questions with one image each."""

    def make_entries(self, image_lists: list[list], num_voco: int) -> list:
        model = self.pipe.model
        batch = encode(self.pipe.tokenizer, model.config, num_voco=num_voco)  # the image at its usual place
        labels = model.labels_for(batch["input_ids"], batch["attention_mask"])
        positions = layout_positions(labels, model.layout_for(RULE))[0][labels.group[0] == 1]
        entries = []
        for images in image_lists:
            if len(images) != 1:
                raise InputError("full_cache serves questions about one image")
            full = build_full_cache(model, batch, self.pipe.pixels(images).to(model.device, model.dtype))
            entries.append(FullEntry(full.layers, positions))
        return entries

    def prefill(self, jobs):
        if any(len(job.units) != 1 for job in jobs):
            raise InputError("full_cache answers questions about one image each")
        model, tokenizer = self.pipe.model, self.pipe.tokenizer
        batch = encode_prompts([job.prompt for job in jobs], tokenizer, model.config, num_voco=self.num_voco)
        ids = batch["input_ids"].to(model.device)
        labels = model.labels_for(ids, batch["attention_mask"].to(model.device))
        positions = layout_positions(labels, model.layout_for(RULE))
        index = torch.stack([torch.nonzero(row == 1)[:, 0] for row in labels.group])  # each row's image group
        cached = labels.select(index, torch.ones_like(index, dtype=torch.bool))
        delta = positions.gather(1, index) - torch.stack([job.units[0].entry.positions for job in jobs])
        layers = []
        for layer in range(len(jobs[0].units[0].entry.layers)):
            keys = torch.cat([job.units[0].entry.layers[layer][0] for job in jobs])
            values = torch.cat([job.units[0].entry.layers[layer][1] for job in jobs])
            layers.append((model.rerotate_keys(keys, delta), values))
        # the text-only pass against the full K/V; the engine decodes from it as from a VoCo prefill
        return model.prefill_context(ids, labels, positions, cached, layers, RULE)


@dataclass
class Pixels:
    """no_cache's 'entry': the decoded images, used once and never kept."""

    images: list
    nbytes: int = 0

    @property
    def num_groups(self) -> int:
        return len(self.images)


class NoCacheEngine(Engine):
    """Keeps nothing: each question runs the masked pass over its image's pixels."""

    def lookup(self, key: str):
        return None

    def remember(self, key: str, entry) -> None:
        pass

    def make_entries(self, image_lists: list[list], num_voco: int) -> list:
        return [Pixels(images) for images in image_lists]

    def prefill(self, jobs):
        """The masked pass over each question's pixels (route "masked" of `pipe.ask`)."""
        model = self.pipe.model
        batch = encode_prompts([job.prompt for job in jobs], self.pipe.tokenizer, model.config, num_voco=self.num_voco)
        pixels = self.pipe.pixels([image for job in jobs for unit in job.units for image in unit.entry.images])
        ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
        return model.prefill(ids, mask, pixel_values=pixels.to(model.device, model.dtype), rule=RULE)


ENGINES = {"voco_cache": Engine, "full_cache": FullCacheEngine, "no_cache": NoCacheEngine}


# ---- servers and clients ------------------------------------------------------------------------------


class LoopbackServer:
    """A `voco serve` app with the given engine, on a free 127.0.0.1 port, in a thread."""

    def __init__(self, engine: Engine, name: str):
        import uvicorn

        from ..serve.app import create_app

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(create_app(engine, name), log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("bench-serve: a server failed to start")
            time.sleep(0.02)

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def pool_images(count: int, size: int) -> tuple[list[str], list[Image.Image]]:
    """`count` different synthetic pictures (shapes on a background), as PNG data: URLs and images."""
    rng = np.random.default_rng(0)
    urls, pictures = [], []
    for _ in range(count):
        image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, size, 2))
            r = int(rng.integers(max(1, size // 16), max(2, size // 4)))
            box, color = (x - r, y - r, x + r, y + r), tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
        pictures.append(image)
    return urls, pictures


def run_clients(server: LoopbackServer, name: str, images: list[str], clients: int, per_client: int, max_tokens: int):
    """`clients` threads, each asking `per_client` questions in turn (image and question drawn from
    a seeded generator per client). Returns (wall seconds, latencies, {(image, question): answer})."""
    latencies, answers, errors = [], {}, []

    def client(c: int) -> None:
        rng = np.random.default_rng(1000 + c)
        for _ in range(per_client):
            i, q = int(rng.integers(len(images))), int(rng.integers(len(QUESTIONS)))
            content = [{"type": "image_url", "image_url": {"url": images[i]}}, {"type": "text", "text": QUESTIONS[q]}]
            body = {"model": name, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
            start = time.perf_counter()
            try:
                reply = server.post("/chat/completions", body)
            except OSError as err:
                errors.append(err)
                return
            latencies.append(time.perf_counter() - start)
            answers[(i, q)] = reply["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"bench-serve: {len(errors)} client error(s), first: {errors[0]}")
    return time.perf_counter() - start, latencies, answers


def resident_capacity(entry, budget: int, fingerprint: str) -> int:
    """Images a store of `budget` bytes holds: filled with copies of `entry` until it evicts."""
    store = CacheStore(budget, fingerprint)
    clone = lambda t: t.clone()
    n = 0
    while store.evictions == 0 and store.resident_count == n:  # (an entry over the budget is never kept)
        if isinstance(entry, FullEntry):
            copy = replace(entry, layers=[(clone(k), clone(v)) for k, v in entry.layers])
        else:
            copy = replace(entry, keys=[clone(k) for k in entry.keys], values=[clone(v) for v in entry.values])
        store.put(f"{n:064x}", copy)
        n += 1
    return store.resident_count


def join_case(server: LoopbackServer, engine: Engine, name: str, image: str, settings: dict) -> dict:
    """Continuous batching: a short greedy question's latency alone (median of 3), then the same
    question from `joiners` clients at once, sent while a long sampled answer (`long_tokens`) is
    decoding. Each must finish within 2x its time alone: it joins the running batch at the next
    decode step instead of waiting for the long answer to end."""
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": QUESTIONS[0]}]
    short = {"model": name, "messages": [{"role": "user", "content": content}], "max_tokens": settings["max_tokens"]}
    long = {**short, "max_tokens": settings["long_tokens"], "temperature": 1.0, "seed": 0}

    def timed(body: dict) -> float:
        start = time.perf_counter()
        server.post("/chat/completions", body)
        return time.perf_counter() - start

    timed(short)  # the image is cached from here on
    alone = statistics.median(timed(short) for _ in range(3))
    steps = engine.steps
    runner = threading.Thread(target=lambda: latencies.update(long=timed(long)))
    latencies: dict = {}
    runner.start()
    while engine.steps < steps + 2 and runner.is_alive():  # the long answer is decoding
        time.sleep(0.001)
    joiners = [
        threading.Thread(target=lambda i=i: latencies.update({i: timed(short)})) for i in range(settings["joiners"])
    ]
    for t in joiners:
        t.start()
    for t in joiners:
        t.join()
    during_long = runner.is_alive()
    runner.join()
    during = [latencies[i] for i in range(settings["joiners"])]
    return {
        "alone_ms": alone * 1e3,
        "joined_ms": [d * 1e3 for d in during],
        "long_ms": latencies["long"] * 1e3,
        "long_still_running": during_long,  # the short ones finished before the long one
        "worst_ratio": max(during) / alone,
    }


# ---- the run -------------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_bench_serve(pipe: VoCoPipeline, settings: dict, model_name: str = "") -> dict:
    begin = time.perf_counter()
    config = pipe.model.config
    budget = settings["cache_memory"]
    fingerprint = pipe.model.fingerprint()
    images, pictures = pool_images(settings["pool"], config.vision_config.image_size)
    servers, engines = {}, {}
    for mode in settings["modes"]:
        store = CacheStore(budget if mode != "no_cache" else 0, fingerprint)
        engines[mode] = ENGINES[mode](pipe, store, Metrics(store), max_batch=settings["max_batch"])
        servers[mode] = LoopbackServer(engines[mode], "bench")
    result = {"model": model_name, "settings": settings, "modes": {}, "points": []}
    try:
        caching = [mode for mode in settings["modes"] if mode != "no_cache"]
        seconds, made = dict.fromkeys(caching, 0.0), {}
        for url in images:  # first sight of every pool image, modes in turn, before the follow-up questions
            for mode in caching:
                start = time.perf_counter()
                made[mode] = servers[mode].post("/voco/compress", {"type": "image_url", "image_url": {"url": url}})
                seconds[mode] += time.perf_counter() - start
        for mode in settings["modes"]:
            row = {"name": mode, "bytes_per_image": 0, "tokens_per_image": 0, "resident_capacity": 0}
            if mode in caching:
                entry = engines[mode].make_entries([[pictures[0]]], engines[mode].num_voco)[0]
                row.update(
                    first_sight_s_per_image=seconds[mode] / len(images),
                    bytes_per_image=made[mode]["bytes"],
                    tokens_per_image=made[mode]["num_voco"],
                    resident_capacity=resident_capacity(entry, budget, fingerprint),
                )
            result["modes"][mode] = row
        for clients in settings["clients"]:
            for mode in settings["modes"]:
                wall, latencies, answers = run_clients(
                    servers[mode], "bench", images, clients, settings["requests_per_client"], settings["max_tokens"]
                )
                result["points"].append(
                    {
                        "mode": mode,
                        "clients": clients,
                        "requests": len(latencies),
                        "questions_per_s": len(latencies) / wall,
                        "p50_ms": statistics.median(latencies) * 1e3,
                        "p99_ms": percentile(latencies, 0.99) * 1e3,
                        "answers": {f"{i},{q}": a for (i, q), a in answers.items()},
                    }
                )
        if "voco_cache" in servers and settings["joiners"]:
            result["join"] = join_case(servers["voco_cache"], engines["voco_cache"], "bench", images[0], settings)
        for mode in settings["modes"]:
            store = engines[mode].store
            result["modes"][mode].update(
                resident_after_run=store.resident_count,
                memory_hits=store.hits["memory"],
                misses=store.misses,
                evictions=store.evictions,
            )
    finally:
        for server in servers.values():
            server.stop()
    result["agreement"] = agreement(result)
    result["goals"] = goals(result, config.num_vision_tokens)
    result["runtime_s"] = time.perf_counter() - begin
    return result


def agreement(result: dict) -> dict:
    """Per mode: answers (same image and question) that differ from voco_cache's."""
    reference = {}
    for point in result["points"]:
        if point["mode"] == "voco_cache":
            reference.update(point["answers"])
    out = {}
    for point in result["points"]:
        compared = [k for k in point["answers"] if k in reference]
        row = out.setdefault(point["mode"], {"compared": 0, "different": 0})
        row["compared"] += len(compared)
        row["different"] += sum(point["answers"][k] != reference[k] for k in compared)
    return out


def goals(result: dict, num_vision: int) -> list[dict]:
    modes, out = result["modes"], []
    if "voco_cache" in modes and "full_cache" in modes:
        voco, full = modes["voco_cache"]["resident_capacity"], modes["full_cache"]["resident_capacity"]
        ratio = voco / full if full else None  # None: full-token caching holds not even one image
        out.append(
            {
                "goal": f"images resident in one budget, VoCo vs full-token caching ({num_vision} tokens) >= 500x",
                "measured": ratio,
                "passed": num_vision == 576 and (ratio >= 500 if full else voco >= 500),
                "text": f"{f'{ratio:,.0f}x' if full else 'full-token caching holds none'} ({voco:,} vs {full:,} "
                f"images in {_mib(result['settings']['cache_memory'])})",
            }
        )
    if "voco_cache" in modes and "no_cache" in modes:
        by = {(p["mode"], p["clients"]): p["questions_per_s"] for p in result["points"]}
        ratios = {c: by[("voco_cache", c)] / by[("no_cache", c)] for c in result["settings"]["clients"]}
        worst = min(ratios.values())
        out.append(
            {
                "goal": "follow-up questions per second, VoCo vs no cache >= 5x (at every client count)",
                "measured": worst,
                "passed": worst >= 5,
                "text": ", ".join(f"{c} clients {r:.1f}x" for c, r in ratios.items()),
            }
        )
    if "join" in result:
        join = result["join"]
        out.append(
            {
                "goal": "short requests sent during a long generation finish within 2x their time alone "
                "(continuous batching)",
                "measured": join["worst_ratio"],
                "passed": join["worst_ratio"] <= 2 and join["long_still_running"],
                "text": f"{len(join['joined_ms'])} requests, worst {join['worst_ratio']:.2f}x of "
                f"{join['alone_ms']:.0f} ms alone, during a {join['long_ms']:.0f} ms answer"
                + ("" if join["long_still_running"] else " (which ended first)"),
            }
        )
    return out


# ---- reporting -------------------------------------------------------------------------------------------


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB"


def render_markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# voco bench-serve",
        "",
        f"Model: {result['model']}. Pool {s['pool']} images, cache memory {_mib(s['cache_memory'])}, max_tokens "
        f"{s['max_tokens']}, max batch {s['max_batch']}, {s['requests_per_client']} questions per client, "
        f"{torch.get_num_threads()} torch threads; loopback HTTP, clients are threads of the same process.",
        "",
        "| mode | tokens / image | bytes / image | images resident in the budget | resident after run | "
        "memory hits / misses / evictions | first sight / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in result["modes"].items():
        first = f"{r['first_sight_s_per_image'] * 1e3:.1f} ms" if "first_sight_s_per_image" in r else "-"
        lines.append(
            f"| {mode} | {r['tokens_per_image']} | {r['bytes_per_image']:,} | {r['resident_capacity']:,} | "
            f"{r['resident_after_run']} | {r['memory_hits']} / {r['misses']} / {r['evictions']} | {first} |"
        )
    lines += ["", "| clients | mode | questions / s | p50 | p99 |", "|---|---|---|---|---|"]
    for p in result["points"]:
        lines.append(
            f"| {p['clients']} | {p['mode']} | {p['questions_per_s']:.2f} | {p['p50_ms']:.0f} ms "
            f"| {p['p99_ms']:.0f} ms |"
        )
    lines += ["", "Answers vs voco_cache's (same image and question, greedy):"]
    for mode, a in result["agreement"].items():
        lines.append(f"- {mode}: {a['different']} of {a['compared']} differ")
    lines += ["", "## Goals", ""]
    lines += [f"- {'PASS' if g['passed'] else 'FAIL'} {g['goal']}: {g['text']}" for g in result["goals"]]
    lines += ["", f"Runtime: {result['runtime_s']:.0f} s.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for color, mode in zip(("C0", "C1", "C2"), result["settings"]["modes"]):
        points = [p for p in result["points"] if p["mode"] == mode]
        clients = [p["clients"] for p in points]
        left.plot(clients, [p["questions_per_s"] for p in points], "o-", color=color, label=mode)
        right.plot(clients, [p["p50_ms"] for p in points], "o-", color=color, label=f"{mode} p50")
        right.plot(clients, [p["p99_ms"] for p in points], "x:", color=color, label=f"{mode} p99")
    left.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="questions / s", title="throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency ms", title="latency")
    for ax in (left, right):
        ax.set_xticks(result["settings"]["clients"], [str(c) for c in result["settings"]["clients"]])
        ax.legend(fontsize=7)
    fig.tight_layout()
    return write_png(path, fig, dpi=100)


# ---- CLI ---------------------------------------------------------------------------------------------------


def _bench_serve_command(args) -> int:
    from ..core.files import write_atomic, write_json_atomic

    modes = [m.strip() for m in args.modes.split(",")]
    if not modes or any(m not in MODES for m in modes):
        raise InputError(f"--modes {args.modes}: expected a comma-separated subset of {','.join(MODES)}")
    try:
        clients = sorted({int(c) for c in args.clients.split(",")})
    except ValueError:
        raise InputError(f"--clients {args.clients}: expected numbers like 1,4,16") from None
    if clients[0] < 1:
        raise InputError(f"--clients {args.clients}: every count must be at least 1")
    if args.joiners < 0:
        raise InputError(f"--joiners {args.joiners}: must be 0 (skip the case) or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        pipe, name = VoCoPipeline.from_pretrained(args.model), str(args.model)
    elif args.preset == "llava15-geometry":
        pipe = VoCoPipeline(*build_model(llava15_geometry(args.hidden, args.layers)))
        name = f"llava15-geometry (hidden {args.hidden}, {args.layers} layers, random weights)"
    else:
        pipe, name = VoCoPipeline(*build_model(args.preset)), args.preset
    settings = {
        "modes": modes,
        "clients": clients,
        "requests_per_client": args.requests_per_client,
        "pool": args.pool,
        "cache_memory": args.cache_memory,
        "max_tokens": args.max_tokens,
        "max_batch": args.max_batch,
        "joiners": args.joiners,
        "long_tokens": args.long_tokens,
    }
    result = run_bench_serve(pipe, settings, name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(result, out / "bench_serve.png")
    write_json_atomic(out / "bench_serve.json", result)
    markdown = render_markdown(result)
    write_atomic(out / "bench_serve.md", markdown)
    print(markdown)
    print(f"{out / 'bench_serve.md'}, {out / 'bench_serve.json'}, {png}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-serve", help="serving throughput and latency: VoCo cache vs full-token K/V vs no cache"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="a saved VoCo model directory")
    source.add_argument("--preset", default="llava15-geometry", help="llava15-geometry (576 vision tokens) or tiny")
    p.add_argument("--hidden", type=positive_int, default=512, help="LM width of llava15-geometry")
    p.add_argument("--layers", type=positive_int, default=4, help="LM (and vision) depth of llava15-geometry")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--clients", default="1,4,16", help="concurrent client counts to run")
    p.add_argument("--requests-per-client", type=positive_int, default=8)
    p.add_argument("--pool", type=positive_int, default=64, help="distinct images the questions are about")
    p.add_argument("--cache-memory", type=size_arg, default="256MiB", help="the budget every mode's store gets")
    p.add_argument("--max-tokens", type=positive_int, default=8)
    p.add_argument("--max-batch", type=positive_int, default=16)
    p.add_argument(
        "--joiners", type=int, default=8, help="short requests sent during a long answer (0: skip that case)"
    )
    p.add_argument("--long-tokens", type=positive_int, default=128, help="tokens of that long answer")
    p.add_argument("--threads", type=positive_int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--out", default="runs/bench-serve")
    p.set_defaults(func=_bench_serve_command)
