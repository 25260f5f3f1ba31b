"""One worker that batches concurrent requests, continuously.

Requests are resolved in the handlers (each image's key looked up in the store; only images not
cached are decoded) and wait in a bounded queue (`max_queue`; beyond it, 503 and Retry-After).
The worker runs one step at a time in the model thread. A step admits what has queued, up to
`max_batch` running answers: compresses every new image of the admitted requests together (each
new key once), stores the caches, prefills the new answers and joins them to the running batch;
then it picks one token for every running answer (each with its own temperature, top_p and
seeded generator), ends those that hit EOS, a stop string or their token limit, and runs one
decode step for the rest. So a request joins at the next step instead of waiting for the whole
batch, and a request whose client left (`Job.cancelled`) is dropped from the queue, or from the
running batch at the next step.

`lookup`, `remember`, `make_entries` and `prefill` are the four steps that depend on what is
cached; `voco bench-serve` overrides them to serve the same requests from full-token K/V caches
or with no cache at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..core.attention import VISION, TokenLabels, layout_positions
from ..core.cache import VoCoCache, group_num_voco
from ..core.errors import InputError
from ..core.modeling import _choose, _last_valid
from ..core.processing import encode_prompts
from .protocol import Limits, Media, RequestError
from .store import CacheStore, content_key, identity

log = logging.getLogger("voco.serve")
RULE = "voco"


class Busy(RequestError):
    """The server is full (queue or in-flight bytes): 503 with a Retry-After header."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, 503, "server_busy")
        self.retry_after = retry_after


class ClientGone(RequestError):
    """The client disconnected before its answer was done (nobody reads this error)."""

    def __init__(self):
        super().__init__("client disconnected", 499, "client_closed_request")


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
class Choice:
    """One generated answer: text (stop strings cut), tokens, their log-probabilities (and the
    `top` most likely tokens at each step, when asked), and why it ended ("stop" or "length")."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]] | None
    finish_reason: str


@dataclass(eq=False)  # a job is itself: hashed and compared by identity
class Job:
    units: list[Unit]
    prompt: str | None = None  # None: compress only (/v1/voco/compress)
    max_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None
    text: asyncio.Queue | None = None  # streaming: (choice index, new text) as it comes
    arrived: float = field(default_factory=time.perf_counter)
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: bool = False  # set when its client leaves: dropped at the next step


class _Row:
    """One answer being generated (a choice of a job)."""

    def __init__(self, job: Job, index: int, tokenizer, eos: int | None, device):
        self.job, self.index, self.tokenizer, self.eos = job, index, tokenizer, eos
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.top: list[list[tuple[int, float]]] | None = [] if job.top_logprobs else None
        self.sent = ""
        self.finish: str | None = None
        self.stop_at: int | None = None  # where a stop string begins in the decoded text
        self.holdback = max((len(s) for s in job.stop), default=1) - 1  # chars that may start a stop string
        self.first = self.last = 0.0  # when its first and latest tokens came
        self.generator = None
        if job.temperature > 0 and job.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed((job.seed + index) % 2**63)

    def add(self, token: int, logprob: float, top) -> None:
        self.ids.append(token)
        self.logprobs.append(logprob)
        if self.top is not None:
            self.top.append(top)
        decoded = None
        if self.job.stop:
            decoded = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            found = [i for i in (decoded.find(s) for s in self.job.stop) if i >= 0]
            if found:
                self.stop_at, self.finish = min(found), "stop"
        if self.finish is None and self.eos is not None and token == self.eos:
            self.finish = "stop"
        elif self.finish is None and len(self.ids) >= self.job.max_tokens:
            self.finish = "length"
        if self.job.text is not None:
            self._stream(decoded)

    def text(self, decoded: str | None = None) -> str:
        """The answer so far as the final one is made: decoded, cut at a stop string, stripped;
        while running, the last characters that could begin a stop string are held back."""
        decoded = self.tokenizer.decode(self.ids, skip_special_tokens=True) if decoded is None else decoded
        if self.stop_at is not None:
            decoded = decoded[: self.stop_at]
        elif self.finish is None and self.holdback:
            decoded = decoded[: max(0, len(decoded) - self.holdback)]
        return decoded.strip()

    def _stream(self, decoded: str | None) -> None:
        """A piece is sent once the text, stripped as the final answer is, still starts with all
        that was sent (trailing spaces and half characters wait), so the pieces add up to exactly
        the non-streamed answer."""
        text = self.text(decoded)
        if self.finish is not None:
            piece = text[len(self.sent) :] if text.startswith(self.sent) else ""
        elif text.startswith(self.sent) and len(text) > len(self.sent) and not text.endswith("\ufffd"):
            piece = text[len(self.sent) :]
        else:
            return
        self.sent += piece
        if piece:
            self.job.loop.call_soon_threadsafe(self.job.text.put_nowait, (self.index, piece))

    def choice(self) -> Choice:
        return Choice(self.text(), self.ids, self.logprobs, self.top, self.finish)


@dataclass
class _Batch:
    """The running answers and their decoding state: next-token logits [B, V], key labels and
    K/V [B, ..., T, ...] (left-padded with invalid keys where rows differ), next positions [B, 1]."""

    rows: list[_Row]
    logits: torch.Tensor
    key: TokenLabels
    past: DynamicCache
    position: torch.Tensor
    order: int

    def join(self, other: _Batch) -> _Batch:
        width = max(self.key.kind.shape[1], other.key.kind.shape[1])
        keys, pasts = (
            [_pad_labels(b.key, width) for b in (self, other)],
            [_layers(b.past, width) for b in (self, other)],
        )
        key = TokenLabels(*(torch.cat([getattr(k, f) for k in keys]) for f in ("kind", "group", "valid", "order")))
        layers = [tuple(torch.cat(pair) for pair in zip(*kv)) for kv in zip(*pasts)]
        return _Batch(
            self.rows + other.rows,
            torch.cat([self.logits, other.logits]),
            key,
            DynamicCache(ddp_cache_data=layers),
            torch.cat([self.position, other.position]),
            max(self.order, other.order),
        )

    def keep(self, rows: list[int]) -> _Batch:
        """Only these rows; key columns no row still needs are dropped."""
        index = torch.tensor(rows, device=self.logits.device)
        key = TokenLabels(*(getattr(self.key, f)[index] for f in ("kind", "group", "valid", "order")))
        columns = key.valid.any(0).nonzero()[:, 0]
        key = TokenLabels(*(getattr(key, f)[:, columns] for f in ("kind", "group", "valid", "order")))
        layers = [(k[index][:, :, columns], v[index][:, :, columns]) for k, v in _layers(self.past)]
        rows = [self.rows[i] for i in rows]
        return _Batch(
            rows, self.logits[index], key, DynamicCache(ddp_cache_data=layers), self.position[index], self.order
        )


def _layers(past: DynamicCache, width: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) [B, heads, T, d], left-padded with zeros to `width`."""
    out = []
    for layer in past.layers:
        k, v = layer.keys, layer.values
        pad = 0 if width is None else width - k.shape[2]
        out.append((F.pad(k, (0, 0, pad, 0)), F.pad(v, (0, 0, pad, 0))) if pad else (k, v))
    return out


def _pad_labels(labels: TokenLabels, width: int) -> TokenLabels:
    pad = width - labels.kind.shape[1]
    if not pad:
        return labels
    return TokenLabels(*(F.pad(getattr(labels, f), (pad, 0)) for f in ("kind", "group", "valid", "order")))


class Engine:
    def __init__(
        self,
        pipe,
        store: CacheStore,
        metrics=None,
        num_voco: int | None = None,
        max_batch: int = 16,
        max_queue: int = 256,
    ):
        config = pipe.model.config
        if config.compressor != "voco":
            raise InputError(
                f"model compressor {config.compressor!r} makes no VoCo cache; voco serve needs a VoCo model"
            )
        self.pipe, self.store, self.metrics = pipe, store, metrics
        self.num_voco = config.accepted_num_voco(num_voco)  # K of a part that does not say its own
        self.max_batch, self.max_queue = max_batch, max_queue
        self.preprocessing = json.dumps([pipe.image_aspect_ratio, pipe.image_processor.to_json_string()])
        self.waiting: deque[Job] = deque()
        self.running = 0  # requests with an answer in the running batch
        self.steps = 0  # decode steps run (the tests read it to see the server idle)
        self._batch: _Batch | None = None
        self._wake: asyncio.Event | None = None
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

    def prefill(self, jobs: list[Job]):
        """Pass 2's prompt run for one answer per job, from the jobs' caches (any K, in prompt
        order): what `model.prefill` returns (a `Prefill`)."""
        model = self.pipe.model
        entries = [unit.entry for job in jobs for unit in job.units]
        ks = group_num_voco(entries) if entries else self.num_voco
        batch = encode_prompts([job.prompt for job in jobs], self.pipe.tokenizer, model.config, num_voco=ks)
        ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
        return model.prefill(ids, mask, cache=entries or None, rule=RULE)

    # ---- the worker -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._model_thread.shutdown(wait=True)
        self.store.close()

    async def submit(self, job: Job):
        """Queue a job and wait for its result: a list of Choice (chat) or a Unit (compress).
        A full queue answers 503 at once."""
        if len(self.waiting) >= self.max_queue:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise Busy(f"server busy: {len(self.waiting)} requests waiting (--max-queue {self.max_queue}); retry later")
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self.waiting.append(job)
        self._wake.set()
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if self._batch is None and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            free = self.max_batch - (len(self._batch.rows) if self._batch is not None else 0)
            admitted = []
            while self.waiting and (not admitted or self.waiting[0].n <= free) and free > 0:
                job = self.waiting.popleft()
                admitted.append(job)
                free -= job.n if job.prompt is not None else 1
            try:
                done = await loop.run_in_executor(self._model_thread, self._step, admitted)
            except Exception as err:  # noqa: BLE001 (a failed step fails its requests, never the server)
                log.exception("model step failed")
                failed = admitted + ([row.job for row in self._batch.rows] if self._batch is not None else [])
                self._batch = None
                done = [(job, err) for job in dict.fromkeys(failed)]
            self.running = len({id(row.job) for row in self._batch.rows}) if self._batch is not None else 0
            for job, result in done:
                if isinstance(result, ClientGone):
                    self._gone(job)
                elif job.future.done():
                    continue
                elif isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _drop_cancelled(self) -> None:
        if any(job.cancelled for job in self.waiting):
            for job in self.waiting:
                if job.cancelled:
                    self._gone(job)
            self.waiting = deque(job for job in self.waiting if not job.cancelled)

    def _gone(self, job: Job) -> None:
        if self.metrics is not None:
            self.metrics.cancelled.inc()
        if not job.future.done():
            job.future.set_exception(ClientGone())

    def _step(self, admitted: list[Job]) -> list[tuple[Job, object]]:
        """One step of the model thread: admit, pick a token per running answer, decode once.
        Returns the jobs that finished, with their results."""
        done: list[tuple[Job, object]] = []
        now = time.perf_counter()
        if self.metrics is not None:
            for job in admitted:
                self.metrics.queue_time.observe(now - job.arrived)
        try:
            self._compress(admitted)
            chat = [job for job in admitted if job.prompt is not None]
            if chat:
                self._admit(chat)  # joins the running batch only once all of it succeeded
            done += [(job, job.units[0]) for job in admitted if job.prompt is None]  # compress only: done
        except Exception as err:  # noqa: BLE001 (the admitted requests fail; the running batch goes on)
            done += [(job, err) for job in admitted]
        batch = self._batch
        if batch is None:
            return done
        live = [i for i, row in enumerate(batch.rows) if not row.job.cancelled]
        done += [(row.job, ClientGone()) for row in batch.rows if row.job.cancelled and row.index == 0]
        if len(live) < len(batch.rows):
            batch = batch.keep(live) if live else None
        if batch is None:
            self._batch = None
            return done
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch.rows))
        self._pick(batch)
        finished: dict[int, Job] = {}
        for row in batch.rows:
            if row.finish is not None and all(r.finish is not None for r in batch.rows if r.job is row.job):
                finished[id(row.job)] = row.job
        for job in finished.values():
            rows = sorted((r for r in batch.rows if r.job is job), key=lambda r: r.index)
            done.append((job, [r.choice() for r in rows]))
            self._observe(job, rows)
        going = [i for i, row in enumerate(batch.rows) if row.finish is None]
        if len(going) < len(batch.rows):
            batch = batch.keep(going) if going else None
        if batch is not None:
            token = torch.tensor([row.ids[-1] for row in batch.rows], device=batch.logits.device)
            logits, key = self.pipe.model.decode_step(token, batch.key, batch.past, batch.position, batch.order, RULE)
            batch = _Batch(batch.rows, logits, key, batch.past, batch.position + 1, batch.order + 1)
            self.steps += 1
        self._batch = batch
        return done

    def _compress(self, jobs: list[Job]) -> None:
        """Compress each new key of these jobs once, even when several of them brought it."""
        fresh, ks = {}, {}
        for unit in (u for job in jobs for u in job.units if u.entry is None):
            if unit.key not in fresh:
                fresh[unit.key] = self.store.peek(unit.key) or unit.images  # made by an earlier step?
                ks[unit.key] = unit.num_voco
        todo = [key for key, value in fresh.items() if isinstance(value, list)]
        for k in dict.fromkeys(ks[key] for key in todo):  # one compression call per K
            same_k = [key for key in todo if ks[key] == k]
            for key, entry in zip(same_k, self.make_entries([fresh[key] for key in same_k], k)):
                fresh[key] = entry
                self.remember(key, entry)
        for unit in (u for job in jobs for u in job.units if u.entry is None):
            unit.entry = fresh[unit.key]

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill one answer per choice of these jobs and join them to the running batch."""
        rows_jobs = [job for job in jobs for _ in range(job.n)]
        prompt = self.prefill(rows_jobs)
        logits, query, key, past, q_positions = (
            prompt.logits,
            prompt.query_labels,
            prompt.key_labels,
            prompt.past,
            prompt.query_positions,
        )
        last = _last_valid(query.valid)
        device = logits.device
        tokenizer = self.pipe.tokenizer
        counter = {}
        rows = []
        for job in rows_jobs:
            counter[id(job)] = counter.get(id(job), -1) + 1
            rows.append(_Row(job, counter[id(job)], tokenizer, tokenizer.eos_token_id, device))
        new = _Batch(
            rows,
            logits[torch.arange(len(last), device=device), last].float(),
            key,
            past,
            q_positions.gather(1, last[:, None]) + 1,
            int(key.order.max()) + 1,
        )
        self._batch = new if self._batch is None else self._batch.join(new)

    def _pick(self, batch: _Batch) -> None:
        """One token per row, each by its own sampling settings, with its log-probability."""
        log_p = torch.log_softmax(batch.logits, dim=-1)
        token = batch.logits.argmax(dim=-1)
        for i, row in enumerate(batch.rows):
            job = row.job
            if job.temperature > 0:
                token[i] = _choose(batch.logits[i : i + 1], True, job.temperature, job.top_p, row.generator)[0]
        chosen = log_p.gather(1, token[:, None])[:, 0].tolist()
        most = max((row.job.top_logprobs or 0) for row in batch.rows)
        top = log_p.topk(most, dim=-1) if most else None
        now = time.perf_counter()
        for i, (row, t) in enumerate(zip(batch.rows, token.tolist())):
            if not row.ids:
                row.first = now
            row.last = now
            k = row.job.top_logprobs or 0
            pairs = list(zip(top.indices[i, :k].tolist(), top.values[i, :k].tolist())) if k else None
            row.add(t, chosen[i], pairs)

    def _observe(self, job: Job, rows: list[_Row]) -> None:
        if self.metrics is None:
            return
        end = time.perf_counter()
        self.metrics.e2e.observe(end - job.arrived)
        first = min(r.first for r in rows)
        self.metrics.ttft.observe(first - job.arrived)
        for r in rows:
            if len(r.ids) > 1:
                self.metrics.tpot.observe((r.last - r.first) / (len(r.ids) - 1))
