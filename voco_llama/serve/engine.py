"""One worker that batches concurrent requests.

Requests are resolved in the handlers (each image's key looked up in the store; only images not
cached are decoded) and queued. The worker takes what has queued, up to `max_batch` requests,
and in one model thread: compresses every new image of the batch together (each new key once),
stores the caches, then answers the batch's questions in one `answer_prompts` call per sampling
setting (greedy requests all together). Tokens reach streaming requests as they are made.

`lookup`, `remember`, `make_entries` and `answer` are the four steps that depend on what is
cached; `voco bench-serve` overrides them to serve the same requests from full-token K/V caches
or with no cache at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..core.attention import VISION, layout_positions
from ..core.cache import VoCoCache
from ..core.errors import InputError
from ..core.processing import encode_prompts
from .protocol import Limits, Media, RequestError
from .store import CacheStore, content_key, identity


@dataclass
class Unit:
    """A media piece of a request, resolved: its key, and its cache or (not cached yet) its images."""

    key: str
    entry: object | None
    images: list | None = None
    num_voco: int | None = None  # K of its groups

    @property
    def groups(self) -> int:
        return self.entry.num_groups if self.entry is not None else len(self.images)


@dataclass
class Job:
    units: list[Unit]
    prompt: str | None = None  # None: compress only (/v1/voco/compress)
    max_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    tokens: asyncio.Queue | None = None  # streaming: generated token ids, as they come
    arrived: float = field(default_factory=time.perf_counter)
    future: asyncio.Future | None = None

    @property
    def sampling(self) -> tuple[float, float]:
        return (self.temperature, self.top_p) if self.temperature > 0 else (0.0, 1.0)


class _BatchStreamer:
    """model.generate's streamer (put each step's tokens [batch], then end): hands each request
    its own tokens until its EOS or its token limit, and notes when they came."""

    def __init__(self, jobs: list[Job], eos: int | None, loop):
        self.jobs, self.eos, self.loop = jobs, eos, loop
        self.counts = [0] * len(jobs)
        self.first = None
        self.last = [None] * len(jobs)  # when each request's latest token came
        self.last_token = [None] * len(jobs)

    def put(self, tokens) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        for i, (job, token) in enumerate(zip(self.jobs, tokens.tolist())):
            if self.counts[i] == job.max_tokens or (self.counts[i] and self.last_token[i] == self.eos):  # ended
                continue
            self.counts[i] += 1
            self.last[i] = now
            self.last_token[i] = token
            if job.tokens is not None:
                self.loop.call_soon_threadsafe(job.tokens.put_nowait, token)

    def end(self) -> None:
        pass


class Engine:
    def __init__(self, pipe, store: CacheStore, metrics=None, num_voco: int | None = None, max_batch: int = 16):
        config = pipe.model.config
        if config.compressor != "voco":
            raise InputError(
                f"model compressor {config.compressor!r} makes no VoCo cache; voco serve needs a VoCo model"
            )
        self.pipe, self.store, self.metrics = pipe, store, metrics
        self.num_voco = config.accepted_num_voco(num_voco)  # K of a part that does not say its own
        self.max_batch = max_batch
        self.preprocessing = json.dumps([pipe.image_aspect_ratio, pipe.image_processor.to_json_string()])
        self.queue: asyncio.Queue | None = None
        self._task = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voco-model")

    # ---- resolving a request's media (in a handler thread) --------------------------------------

    def num_voco_for(self, media: Media) -> int:
        """The K a part is compressed at: its own (one the model was trained with) or the server's."""
        try:
            return self.pipe.model.config.accepted_num_voco(media.num_voco or self.num_voco)
        except InputError as err:
            raise RequestError(f"{media.field}.num_voco: {err}") from None

    def key(self, media: Media) -> str:
        if media.kind == "cache":
            return media.cache_id
        server = identity(self.store.fingerprint, self.num_voco_for(media), self.preprocessing)
        return content_key(server, media.kind, media.parts)

    def resolve(self, media: Media, limits: Limits) -> Unit:
        key = self.key(media)
        entry = self.lookup(key)
        k = None if media.kind == "cache" else self.num_voco_for(media)
        if entry is not None:
            return Unit(key, entry, num_voco=k if k is not None else entry.num_voco)
        if media.kind == "cache":
            raise RequestError(
                f"{media.field}.voco_cache.id: unknown cache id {key[:16]}... (made by another model or K, or evicted; "
                "compress it again)",
                404,
                "cache_not_found",
            )
        return Unit(key, None, media.decode(limits), num_voco=k)

    def prompt_size(self, prompt: str, num_voco: list[int]) -> tuple[int, int]:
        """(tokens the answer reads: text + K per image, positions the prompt spans) of a prompt
        whose images have these K, in order."""
        model = self.pipe.model
        batch = encode_prompts([prompt], self.pipe.tokenizer, model.config, num_voco=num_voco)
        labels = model.labels_for(batch["input_ids"], batch["attention_mask"])
        positions = layout_positions(labels, model.layout_for("voco"))
        return int((labels.kind != VISION).sum()), int(positions.max()) + 1

    # ---- what is cached: the four steps the bench's baselines replace ---------------------------

    def lookup(self, key: str):
        return self.store.get(key)[0]

    def remember(self, key: str, entry) -> None:
        self.store.put(key, entry)

    def make_entries(self, image_lists: list[list], num_voco: int) -> list:
        """Caches of several images/videos at K = num_voco, compressed together, `max_batch` images per call."""
        flat = [image for images in image_lists for image in images]
        parts = [
            self.pipe.compress(flat[i : i + self.max_batch], num_voco=num_voco)
            for i in range(0, len(flat), self.max_batch)
        ]
        cache, entries, start = VoCoCache.cat(parts), [], 0
        for images in image_lists:
            view = cache[start : start + len(images)]
            # cloned: a slice would keep the whole batch's tensors alive behind a small nbytes
            entries.append(replace(view, keys=[k.clone() for k in view.keys], values=[v.clone() for v in view.values]))
            start += len(images)
        return entries

    def answer(self, jobs: list[Job], temperature: float, top_p: float, streamer) -> list:
        entries = [unit.entry for job in jobs for unit in job.units]  # caches of any K, in prompt order
        return self.pipe.answer_prompts(
            [job.prompt for job in jobs],
            cache=entries or None,
            num_voco=self.num_voco,
            max_new_tokens=[job.max_tokens for job in jobs],
            temperature=temperature,
            top_p=top_p,
            streamer=streamer,
        )

    # ---- the worker -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._model_thread.shutdown(wait=True)
        self.store.close()

    async def submit(self, job: Job):
        """Queue a job and wait for its result: an Answer (chat) or a Unit (compress)."""
        job.future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(job)
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            while len(jobs) < self.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            try:
                results = await loop.run_in_executor(self._model_thread, self._run_batch, jobs, loop)
            except Exception as err:  # noqa: BLE001 (a failed batch fails its requests, never the server)
                results = [err] * len(jobs)
            for job, result in zip(jobs, results):
                if job.future.done():
                    continue  # the client went away
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _run_batch(self, jobs: list[Job], loop) -> list:
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(jobs))
        # compress each new key once, even when several requests of the batch brought it
        fresh, ks = {}, {}
        for unit in (u for job in jobs for u in job.units if u.entry is None):
            if unit.key not in fresh:
                fresh[unit.key] = self.store.peek(unit.key) or unit.images  # made by an earlier batch?
                ks[unit.key] = unit.num_voco
        todo = [key for key, value in fresh.items() if isinstance(value, list)]
        for k in dict.fromkeys(ks[key] for key in todo):  # one compression call per K
            same_k = [key for key in todo if ks[key] == k]
            for key, entry in zip(same_k, self.make_entries([fresh[key] for key in same_k], k)):
                fresh[key] = entry
                self.remember(key, entry)
        for unit in (u for job in jobs for u in job.units if u.entry is None):
            unit.entry = fresh[unit.key]
        results: dict[int, object] = {i: job.units[0] for i, job in enumerate(jobs) if job.prompt is None}
        by_sampling: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.prompt is not None:
                by_sampling.setdefault(job.sampling, []).append(i)
        for (temperature, top_p), rows in by_sampling.items():
            group = [jobs[i] for i in rows]
            streamer = _BatchStreamer(group, self.pipe.tokenizer.eos_token_id, loop)
            try:
                answers = self.answer(group, temperature, top_p, streamer)
            except Exception as err:  # noqa: BLE001
                answers = [err] * len(group)
            for i, job, answer, count, last in zip(rows, group, answers, streamer.counts, streamer.last):
                results[i] = answer
                if self.metrics is not None and not isinstance(answer, BaseException) and streamer.first:
                    self.metrics.ttft.observe(streamer.first - job.arrived)
                    if count > 1:
                        self.metrics.tpot.observe((last - streamer.first) / (count - 1))
        return [results[i] for i in range(len(jobs))]
