"""The FastAPI application: OpenAI's chat-completions and models endpoints, the VoCo compress
endpoint, health and Prometheus metrics.

Every refusal is OpenAI's error object with a one-line message, `{"error": {"message", "type",
"code"}}`, and a 4xx status (400 bad field, 401 key, 403 path outside the allowed folder, 404
unknown model or cache id, 413 too large); an unexpected failure is a 500 for that request only.
With an API key, every /v1 endpoint needs `Authorization: Bearer KEY` (/health and /metrics do not).
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

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from ..core.conversation import get_template
from ..core.errors import InputError
from .engine import Engine, Job
from .protocol import Limits, RequestError, parse_chat, parse_compress, render_user

log = logging.getLogger("voco.serve")
ENDPOINTS = ("/v1/chat/completions", "/v1/voco/compress", "/v1/models", "/health", "/metrics")


def error_response(status: int, message: str, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    message = " ".join(str(message).split())  # one line, whatever the cause
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"body: {int(declared):,} bytes, over the limit of {limit:,}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body: over the limit of {limit:,} bytes", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"body: malformed JSON ({err})") from None
    if not isinstance(body, dict):
        raise RequestError("body: a JSON object is required")
    return body


def create_app(engine: Engine, model_name: str, limits: Limits | None = None, api_key: str | None = None) -> FastAPI:
    limits = limits or Limits()
    pipe, metrics = engine.pipe, engine.metrics
    eos = pipe.tokenizer.eos_token_id
    max_positions = pipe.model.config.text_config.max_position_embeddings
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="voco serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard_and_count(request: Request, call_next):
        path = request.url.path
        if api_key is not None and path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                response = error_response(
                    401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_api_key"
                )
                return _count(path, response)
        try:
            response = await call_next(request)
        except Exception as err:  # noqa: BLE001 (one request fails, the server keeps serving)
            log.exception("internal error on %s", path)
            response = error_response(500, f"internal error: {err.__class__.__name__}: {err}")
        return _count(path, response)

    def _count(path: str, response):
        endpoint = path if path in ENDPOINTS else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        if response.status_code >= 400:
            metrics.errors.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.exception_handler(InputError)
    async def _input_error(request, err: InputError):
        return error_response(getattr(err, "status", 400), str(err), getattr(err, "code", None))

    @app.exception_handler(HTTPException)
    async def _http_error(request, err: HTTPException):
        return error_response(err.status_code, f"{request.method} {request.url.path}: {err.detail}")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

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
        job = Job(list(units.values()), prompt, request.max_tokens, request.temperature, request.top_p)
        return request, job, prompt_tokens

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_json(request, limits.max_request_bytes)
        chat_request, job, prompt_tokens = await asyncio.to_thread(prepare_chat, body)
        reply = _Reply(model_name, eos, prompt_tokens, metrics)
        if chat_request.stream:
            job.tokens = asyncio.Queue()
            events = reply.stream(engine, job, pipe.tokenizer, chat_request.include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        return reply.body(await engine.submit(job))

    @app.post("/v1/voco/compress")
    async def compress(request: Request):
        body = await read_json(request, limits.max_request_bytes)
        unit = await asyncio.to_thread(lambda: engine.resolve(parse_compress(body, limits, model_name), limits))
        cached = unit.entry is not None
        if not cached:
            unit = await engine.submit(Job([unit]))
        entry = unit.entry
        return {
            "id": unit.key,
            "object": "voco.cache",
            "groups": entry.num_groups,
            "num_voco": entry.num_voco,
            "bytes": entry.nbytes,
            "cached": cached,
        }

    return app


class _Reply:
    """One chat completion's response body, or its server-sent events."""

    def __init__(self, model_name: str, eos: int | None, prompt_tokens: int, metrics):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name, self.eos, self.prompt_tokens, self.metrics = model_name, eos, prompt_tokens, metrics

    def _finish(self, answer) -> str:
        return "stop" if answer.token_ids and answer.token_ids[-1] == self.eos else "length"

    def _usage(self, answer) -> dict:
        self.metrics.prompt_tokens.inc(self.prompt_tokens)
        self.metrics.completion_tokens.inc(len(answer.token_ids))
        completion = len(answer.token_ids)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def body(self, answer) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": self._finish(answer),
                }
            ],
            "usage": self._usage(answer),
        }

    def _chunk(self, delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model_name}
        chunk["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def stream(self, engine: Engine, job: Job, tokenizer, include_usage: bool):
        """Text as tokens come. A piece is sent once the decoded text, stripped as the final answer
        is, still starts with all that was sent (trailing spaces and half characters wait), so the
        pieces add up to exactly the non-streamed answer."""
        yield self._chunk({"role": "assistant", "content": ""})
        task = asyncio.ensure_future(engine.submit(job))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even if the client left
        ids, sent = [], ""
        while True:
            getter = asyncio.ensure_future(job.tokens.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            ids.append(getter.result())
            while not job.tokens.empty():
                ids.append(job.tokens.get_nowait())
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            if text.startswith(sent) and len(text) > len(sent) and not text.endswith("\ufffd"):
                yield self._chunk({"content": text[len(sent) :]})
                sent = text
        try:
            answer = task.result()
        except Exception as err:  # noqa: BLE001 (the stream has started: the error goes in it)
            status = getattr(err, "status", 400 if isinstance(err, InputError) else 500)
            yield f"data: {json.dumps(json.loads(error_response(status, str(err)).body))}\n\n"
            yield "data: [DONE]\n\n"
            return
        rest = answer.text[len(sent) :] if answer.text.startswith(sent) else ""
        if rest:
            yield self._chunk({"content": rest})
        usage = self._usage(answer)
        yield self._chunk({}, self._finish(answer))
        if include_usage:
            yield self._chunk(None, usage=usage)
        yield "data: [DONE]\n\n"
