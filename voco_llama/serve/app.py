"""The FastAPI application: OpenAI's chat-completions and models endpoints, the VoCo compress
endpoint, tokenize / detokenize, version, health and Prometheus metrics.

Every refusal is OpenAI's error object with a one-line message, `{"error": {"message", "type",
"param", "code"}}`, and a 4xx status (400 bad field, 401 key, 403 path outside the allowed folder,
404 unknown model or cache id, 413 too large), or 503 with `Retry-After` when the queue
(`--max-queue`) or the bytes of requests in flight (`--max-inflight-bytes`) are full. An unexpected
failure is a 500 for that request only, saying "internal error" (the exception is logged, never
sent). With an API key, every endpoint but /health, /version and /metrics needs `Authorization:
Bearer KEY`. A request whose client disconnects (or times out) is cancelled: dropped from
the queue, or from the running batch at the next decode step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from ..core.conversation import get_template
from ..core.errors import InputError
from .engine import Busy, Engine, Job
from .protocol import Limits, RequestError, check_model, parse_chat, parse_compress, render_user

log = logging.getLogger("voco.serve")
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/voco/compress",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/version",
    "/health",
    "/metrics",
)
OPEN = ("/health", "/metrics", "/version")  # answered without the API key


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, headers: dict | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    message = " ".join(str(message).split())  # one line, whatever the cause
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status, headers=headers)


def refusal(err: Exception) -> JSONResponse:
    """The response to an exception: a request error as it says, anything else "internal error"."""
    if isinstance(err, Busy):
        return error_response(503, str(err), err.code, headers={"Retry-After": str(err.retry_after)})
    if isinstance(err, InputError):
        return error_response(
            getattr(err, "status", 400), str(err), getattr(err, "code", None), getattr(err, "param", None)
        )
    log.error("internal error", exc_info=err)
    return error_response(500, "internal error")


class _InFlight:
    """Bytes of request bodies held by requests being read, parsed, waiting or answered."""

    def __init__(self, limit: int):
        self.limit, self.bytes = limit, 0

    def add(self, size: int) -> None:
        if self.bytes + size > self.limit:
            raise Busy(
                f"server busy: {self.bytes:,} bytes of requests in flight (--max-inflight-bytes {self.limit:,}); "
                "retry later"
            )
        self.bytes += size

    def release(self, size: int) -> None:
        self.bytes -= size


async def read_json(request: Request, limit: int, inflight: _InFlight) -> tuple[dict, int]:
    """(the body as a JSON object, its size, counted in flight until `inflight.release`), refused
    (413) once it passes `limit` bytes, or (503) when the bytes in flight are full."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await _drain(request, limit)
        raise RequestError(f"body: {int(declared):,} bytes, over the limit of {limit:,}", 413)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            try:
                inflight.add(len(chunk))
            except Busy:
                await _drain(request, limit)
                raise
            size += len(chunk)
            if size > limit:
                await _drain(request, limit)
                raise RequestError(f"body: over the limit of {limit:,} bytes", 413)
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"body: malformed JSON ({err})") from None
        except RecursionError:
            raise RequestError("body: JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError("body: a JSON object is required")
    except BaseException:
        inflight.release(size)
        raise
    return body, size


async def _drain(request: Request, limit: int) -> None:
    """Read (and drop) what the client is still sending of a refused body, up to 4x the limit, so
    a client that sends its whole body before it reads the answer gets the 413, not a broken pipe."""
    drained = 0
    async for chunk in request.stream():
        drained += len(chunk)
        if drained > 4 * limit:
            return


async def watch(request: Request, job: Job) -> None:
    """Cancel the job when its client disconnects (closed, or timed out)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancelled = True
            return


class _Guard:
    """ASGI middleware: the API key, the request counters, and the last word on errors
    (an exception escaping a handler is answered "internal error" and logged)."""

    def __init__(self, app, metrics, api_key: str | None):
        self.app, self.metrics, self.api_key = app, metrics, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        status = []

        async def counted(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            if self.api_key is not None and path not in OPEN and not self._authorized(scope):
                message = "missing or wrong API key (Authorization: Bearer KEY)"
                await error_response(401, message, "invalid_api_key")(scope, receive, counted)
            else:
                await self.app(scope, receive, counted)
        except Exception as err:  # noqa: BLE001 (one request fails, the server keeps serving)
            if not status:
                await refusal(err)(scope, receive, counted)
            else:
                log.error("internal error on %s after the response began", path, exc_info=err)
        endpoint = path if path in ENDPOINTS else "other"
        code = str(status[0] if status else 500)
        self.metrics.requests.labels(endpoint, code).inc()
        if int(code) >= 400:
            self.metrics.errors.labels(endpoint, code).inc()

    def _authorized(self, scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())


def create_app(
    engine: Engine,
    model_name: str,
    limits: Limits | None = None,
    api_key: str | None = None,
    max_inflight_bytes: int = 256 * 2**20,
) -> FastAPI:
    limits = limits or Limits()
    pipe, metrics = engine.pipe, engine.metrics
    max_positions = pipe.model.config.text_config.max_position_embeddings
    started = int(time.time())
    inflight = _InFlight(max_inflight_bytes)
    metrics.watch(engine, inflight)

    @asynccontextmanager
    async def lifespan(app):
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="voco serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Guard, metrics=metrics, api_key=api_key)
    app.state.engine = engine

    @app.exception_handler(InputError)
    async def _input_error(request, err: InputError):
        return refusal(err)

    @app.exception_handler(HTTPException)
    async def _http_error(request, err: HTTPException):
        return error_response(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/version")
    async def server_version():
        return {"version": version("voco-llama")}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": started, "owned_by": "voco-llama"}
        # the K a part may ask for ("num_voco"): the model's trained set
        choices = pipe.model.config.num_voco_choices or [pipe.model.config.num_voco]
        card.update(max_model_len=max_positions, num_voco=engine.num_voco, num_voco_choices=choices)
        return {"object": "list", "data": [card]}

    def prepare_chat(body: dict):
        """Parse, look up or decode the media, build and measure the prompt (in a thread)."""
        request = parse_chat(body, limits, model_name)
        units = {id(media): engine.resolve(media, limits) for media in request.media}
        groups = {key: unit.groups for key, unit in units.items()}
        if sum(groups.values()) > limits.max_frames:
            raise RequestError(
                f"messages: {sum(groups.values())} images and frames, over the limit of {limits.max_frames}"
            )
        template = get_template(pipe.template)
        if request.system is not None:
            template = replace(template, system=request.system)
        prompt = template.render([(render_user(pieces, groups), answer) for pieces, answer in request.turns])[0]
        ks = [unit.num_voco for unit in units.values() for _ in range(unit.groups)]  # in prompt order
        prompt_tokens, positions = engine.prompt_size(prompt, ks)
        if positions + request.max_tokens > max_positions:
            raise RequestError(
                f"messages: the prompt spans {positions} positions and max_tokens is {request.max_tokens}; "
                f"the model has {max_positions}"
            )
        job = Job(
            list(units.values()),
            prompt,
            request.max_tokens,
            request.temperature,
            request.top_p,
            n=request.n,
            stop=request.stop,
            seed=request.seed,
            top_logprobs=request.top_logprobs,
        )
        return request, job, prompt_tokens

    async def run(request: Request, job: Job):
        """The job's result, cancelled if the client leaves first."""
        watcher = asyncio.ensure_future(watch(request, job))
        try:
            return await engine.submit(job)
        finally:
            watcher.cancel()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body, size = await read_json(request, limits.max_request_bytes, inflight)
        try:
            chat_request, job, prompt_tokens = await asyncio.to_thread(prepare_chat, body)
        except BaseException:
            inflight.release(size)
            raise
        reply = _Reply(model_name, prompt_tokens, metrics, pipe.tokenizer, chat_request)
        if chat_request.stream:
            job.text = asyncio.Queue()
        task = asyncio.ensure_future(run(request, job))  # its bytes stay in flight until it ends
        task.add_done_callback(lambda t: (inflight.release(size), t.cancelled() or t.exception()))
        if chat_request.stream:
            return StreamingResponse(reply.stream(task, job), media_type="text/event-stream")
        return reply.body(await task)

    @app.post("/v1/voco/compress")
    async def compress(request: Request):
        body, size = await read_json(request, limits.max_request_bytes, inflight)
        try:
            unit = await asyncio.to_thread(lambda: engine.resolve(parse_compress(body, limits, model_name), limits))
            cached = unit.entry is not None
            if not cached:
                unit = await run(request, Job([unit]))
            pending = engine.store.durable(unit.key)
            if pending is not None:  # the id is returned once its file is on disk
                await asyncio.wrap_future(pending)
        finally:
            inflight.release(size)
        entry = unit.entry
        return {
            "id": unit.key,
            "object": "voco.cache",
            "groups": entry.num_groups,
            "num_voco": entry.num_voco,
            "bytes": entry.nbytes,
            "cached": cached,
        }

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body, size = await read_json(request, limits.max_request_bytes, inflight)
        inflight.release(size)
        check_model(body, model_name)
        if set(body) - {"model", "prompt", "add_special_tokens"}:
            extra = sorted(set(body) - {"model", "prompt", "add_special_tokens"})[0]
            raise RequestError(f"{extra}: not a field of /tokenize (model, prompt, add_special_tokens)", param=extra)
        prompt, special = body.get("prompt"), body.get("add_special_tokens", True)
        if not isinstance(prompt, str) or not isinstance(special, bool):
            raise RequestError("prompt: a string is required (add_special_tokens: true or false)", param="prompt")
        tokens = pipe.tokenizer(prompt, add_special_tokens=special)["input_ids"]
        return {"count": len(tokens), "max_model_len": max_positions, "tokens": tokens}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body, size = await read_json(request, limits.max_request_bytes, inflight)
        inflight.release(size)
        check_model(body, model_name)
        tokens, vocabulary = body.get("tokens"), len(pipe.tokenizer)
        if set(body) - {"model", "tokens"}:
            extra = sorted(set(body) - {"model", "tokens"})[0]
            raise RequestError(f"{extra}: not a field of /detokenize (model, tokens)", param=extra)
        if not isinstance(tokens, list) or not all(_is_token(t, vocabulary) for t in tokens):
            raise RequestError(f"tokens: a list of token ids from 0 to {vocabulary - 1} is required", param="tokens")
        return {"prompt": pipe.tokenizer.decode(tokens)}

    return app


def _is_token(value, vocabulary: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocabulary


class _Reply:
    """One chat completion's response body, or its server-sent events."""

    def __init__(self, model_name: str, prompt_tokens: int, metrics, tokenizer, request):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name, self.prompt_tokens, self.metrics, self.tokenizer = (
            model_name,
            prompt_tokens,
            metrics,
            tokenizer,
        )
        self.n, self.include_usage = request.n, request.include_usage
        self.want_logprobs = request.top_logprobs is not None

    def _usage(self, choices) -> dict:
        completion = sum(len(c.token_ids) for c in choices)
        self.metrics.prompt_tokens.inc(self.prompt_tokens)
        self.metrics.completion_tokens.inc(completion)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _entry(self, token: int, logprob: float) -> dict:
        text = self.tokenizer.decode([token])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    def logprobs(self, choice) -> dict | None:
        """OpenAI's logprobs object: per generated token, its text, log-probability, bytes, and
        the `top_logprobs` most likely tokens at that step."""
        content = []
        for i, (token, logprob) in enumerate(zip(choice.token_ids, choice.logprobs)):
            entry = self._entry(token, logprob)
            entry["top_logprobs"] = [self._entry(t, p) for t, p in choice.top[i]] if choice.top is not None else []
            content.append(entry)
        return {"content": content, "refusal": None}

    def body(self, choices) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": choice.text},
                    "logprobs": self.logprobs(choice) if self.want_logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
                for i, choice in enumerate(choices)
            ],
            "usage": self._usage(choices),
        }

    def _chunk(self, choices: list[dict] | None, usage: dict | None = None) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_name}
        chunk["choices"] = choices or []
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def _pieces(self, pieces: list[tuple[int, str]]) -> str:
        """One chunk of new text: each choice's pieces joined, one entry per choice."""
        texts: dict[int, str] = {}
        for index, text in pieces:
            texts[index] = texts.get(index, "") + text
        return self._chunk([{"index": i, "delta": {"content": t}, "finish_reason": None} for i, t in texts.items()])

    async def stream(self, task: asyncio.Future, job: Job):
        """Text of each choice as it comes (the engine cuts it so the pieces add up to exactly the
        non-streamed answer), then each choice's finish reason (and its log-probabilities, all in
        that last chunk), then usage if asked."""
        try:
            yield self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}} for i in range(self.n)])
            while True:
                getter = asyncio.ensure_future(job.text.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                pieces = [getter.result()]
                while not job.text.empty():
                    pieces.append(job.text.get_nowait())
                yield self._pieces(pieces)
            try:
                choices = task.result()
            except Exception as err:  # noqa: BLE001 (the stream has started: the error goes in it)
                yield f"data: {json.dumps(json.loads(refusal(err).body))}\n\n"
                yield "data: [DONE]\n\n"
                return
            rest = []
            while not job.text.empty():
                rest.append(job.text.get_nowait())
            if rest:
                yield self._pieces(rest)
            usage = self._usage(choices)
            ends = []
            for i, choice in enumerate(choices):
                end = {"index": i, "delta": {}, "finish_reason": choice.finish_reason}
                if self.want_logprobs:
                    end["logprobs"] = self.logprobs(choice)
                ends.append(end)
            yield self._chunk(ends)
            if self.include_usage:
                yield self._chunk(None, usage=usage)
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():  # the client left mid-stream
                job.cancelled = True
                task.cancel()
