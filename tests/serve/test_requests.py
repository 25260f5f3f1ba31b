"""Every request field's fate, walked over OpenAI's own request schema (the installed `openai`
client's types); bad requests are 4xx with OpenAI's error object and a one-line message naming
the field; nothing a client sends produces a 500; an internal error says "internal error" only."""

from __future__ import annotations

import base64
import json

from openai.types.chat import completion_create_params as schema

from tests.serve.kit import KEY, data_url, http, image_part, metric, noise_image, user
from voco_llama.serve.protocol import IMPLEMENTED, REFUSED


def test_bad_requests_are_4xx_one_line_and_server_keeps_serving(server, media, tmp_path):
    _, images = media
    url = server.url + "/v1/chat/completions"
    good = {"model": server.name, "messages": user(image_part(images[0]), "What?"), "max_tokens": 2}
    big = noise_image(7, (80, 80))  # 6,400 pixels: over the server's --max-image-pixels 4096
    outside = tmp_path / "x.png"
    images[0].save(outside)
    cases = [
        ("malformed JSON", {"raw": b'{"model": '}, 400, "malformed JSON"),
        ("not an object", {"raw": b"[1, 2]"}, 400, "JSON object"),
        ("wrong model", {**good, "model": "gpt-4"}, 404, "not found"),
        (
            "unknown cache id",
            {**good, "messages": user({"type": "voco_cache", "voco_cache": {"id": "ab" * 32}})},
            404,
            "unknown cache id",
        ),
        (
            "bad cache id",
            {**good, "messages": user({"type": "voco_cache", "voco_cache": {"id": "../../etc"}})},
            400,
            "not a cache id",
        ),
        (
            "unreadable image",
            {
                **good,
                "messages": user(
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()},
                    }
                ),
            },
            400,
            "unreadable image",
        ),
        (
            "not base64",
            {**good, "messages": user({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}})},
            400,
            "base64",
        ),
        (
            "remote URL",
            {**good, "messages": user({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}})},
            400,
            "remote URLs",
        ),
        (
            "path outside the folder",
            {**good, "messages": user({"type": "image_url", "image_url": {"url": outside.as_uri()}})},
            403,
            "outside",
        ),
        ("too many pixels", {**good, "messages": user(image_part(big), "q")}, 400, "over the limit"),
        (
            "too many frames",
            {**good, "messages": user({"type": "video", "video": [data_url(images[0])] * 9})},
            400,
            "1 to 8",
        ),
        ("too-long prompt", {**good, "messages": user("word " * 5000)}, 400, "positions"),
        ("max_tokens too large", {**good, "max_tokens": 65}, 400, "max_tokens"),
        ("n over the limit", {**good, "n": 9}, 400, "n: 9 is not an integer from 1 to 8"),
        ("n zero", {**good, "n": 0}, 400, "n: 0"),
        ("system message only", {**good, "messages": [{"role": "system", "content": "hi"}]}, 400, "the user's"),
        ("nested 50,000 deep", {"raw": b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"}, 400, "nested too deeply"),
        ("two token limits", {**good, "max_completion_tokens": 3}, 400, "two different limits"),
        ("vLLM's top_k", {**good, "top_k": 5}, 400, "top_k: not a field of OpenAI's"),
        ("vLLM's repetition_penalty", {**good, "repetition_penalty": 1.2}, 400, "repetition_penalty"),
        ("response_format json", {**good, "response_format": {"type": "json_object"}}, 400, "response_format"),
        ("logit_bias", {**good, "logit_bias": {"5": 10}}, 400, "logit_bias"),
        ("placeholder in text", {**good, "messages": user("look <image> here")}, 400, "<image>"),
        ("roles out of order", {**good, "messages": [{"role": "assistant", "content": "hi"}]}, 400, "expected 'user'"),
        ("unknown part", {**good, "messages": user({"type": "audio", "audio": {}})}, 400, "not a content part type"),
        ("temperature", {**good, "temperature": 5}, 400, "temperature"),
        (
            "a K the model never trained at",
            {**good, "messages": user({**image_part(images[0]), "num_voco": 2})},
            400,
            "num_voco: K=2: this model was trained at K=1 only",
        ),
        ("request too large", {"raw": b'{"pad": "' + b"x" * (1 << 20) + b'"}'}, 413, "over the limit"),
        ("no API key", {**good, "key": None}, 401, "API key"),
        ("wrong API key", {**good, "key": "nope"}, 401, "API key"),
    ]
    for name, case, status, words in cases:
        case = dict(case)
        raw, key = case.pop("raw", None), case.pop("key", KEY)
        got, body = http(url, None if raw else case, key=key, raw=raw)
        assert got == status, (name, got, body)
        message = body["error"]["message"]
        assert words in message and "\n" not in message, (name, message)
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["type"]
    assert http(server.url + "/v1/voco/compress", {"type": "text", "text": "hi"})[0] == 400
    assert http(server.url + "/v1/nothing")[0] == 404
    status, body = http(url, good)
    assert status == 200 and body["choices"][0]["message"]["content"] is not None
    metrics = http(server.url + "/metrics", key=None)[1]
    assert metric(metrics, "voco_request_errors_total") >= len(cases)


def schema_fields() -> set[str]:
    """Every field of OpenAI's chat-completion request, as the installed client defines it."""
    kinds = (schema.CompletionCreateParamsBase, schema.CompletionCreateParamsStreaming)
    return {name for kind in kinds for name in kind.__annotations__}


# a value of each implemented field that changes what is done (200), and one of each refused field
# that asks for what is not done (400)
IMPLEMENTED_VALUES = {
    "model": "tiny",
    "messages": user("hi"),
    "max_tokens": 2,
    "max_completion_tokens": 2,
    "temperature": 0.5,
    "top_p": 0.5,
    "n": 2,
    "stream": False,
    "stream_options": {"include_usage": True},
    "stop": ["\n"],
    "seed": 1,
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0,
    "frequency_penalty": 0,
}
REFUSED_VALUES = {
    "audio": {"voice": "alloy", "format": "wav"},
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {}}],
    "logit_bias": {"42": 5},
    "metadata": {"run": "1"},
    "modalities": ["text", "audio"],
    "moderation": {"model": "omni-moderation-latest"},
    "parallel_tool_calls": True,
    "prediction": {"type": "content", "content": "x"},
    "prompt_cache_key": "k",
    "prompt_cache_options": {"mode": "auto"},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "safety_identifier": "user-1",
    "service_tier": "flex",
    "store": True,
    "tool_choice": "auto",
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "user": "user-1",
    "verbosity": "low",
    "web_search_options": {},
}


def test_every_field_of_openais_request_schema_is_implemented_or_refused(server):
    fields = schema_fields()
    assert fields == set(IMPLEMENTED) | set(REFUSED), fields ^ (set(IMPLEMENTED) | set(REFUSED))
    assert set(IMPLEMENTED_VALUES) == set(IMPLEMENTED) and set(REFUSED_VALUES) == set(REFUSED)
    url = server.url + "/v1/chat/completions"
    base = {"model": server.name, "messages": user("hi"), "max_tokens": 2}
    for name, value in IMPLEMENTED_VALUES.items():
        body = {**base, name: value}
        body.update({"max_completion_tokens": {"max_tokens": None}, "top_logprobs": {"logprobs": True}}.get(name, {}))
        status, reply = http(url, body)
        assert status == 200, (name, reply)
        if name == "top_logprobs":
            assert all(len(e["top_logprobs"]) == 2 for e in reply["choices"][0]["logprobs"]["content"])
        if name == "n":
            assert len(reply["choices"]) == 2
        if name == "logprobs":
            assert len(reply["choices"][0]["logprobs"]["content"]) == reply["usage"]["completion_tokens"]
    for name, value in REFUSED_VALUES.items():
        status, reply = http(url, {**base, name: value})
        assert status == 400 and reply["error"]["param"] == name, (name, reply)
        assert reply["error"]["message"].startswith(f"{name}: not supported"), reply
        for accepted in REFUSED[name]:  # a value asking for what is done anyway
            status, reply = http(url, {**base, name: accepted})
            assert status == 200, (name, accepted, reply)


ODD_VALUES = [None, True, -1, "", [{}], float("nan")]


def test_no_request_produces_a_500(server, media):
    """Every field of the schema and of a content part, given each of a set of odd values: never a
    500, and the server still answers after."""
    _, images = media
    url = server.url + "/v1/chat/completions"
    base = {"model": server.name, "messages": user("hi"), "max_tokens": 1}
    statuses = {}
    for name in sorted(schema_fields()) + ["top_k"]:
        for value in ODD_VALUES:
            raw = json.dumps({**base, name: value}).encode()  # NaN as JSON's NaN, which json.loads accepts
            status, body = http(url, raw=raw)
            statuses[(name, repr(value))] = status
            assert status < 500, (name, value, body)
    part = {"type": "image_url", "image_url": {"url": data_url(images[0])}}
    odd_parts = [{"type": t, t: v} for t in ("image_url", "video", "video_url", "voco_cache") for v in ODD_VALUES]
    odd_parts += [{**part, "num_voco": v} for v in ODD_VALUES] + [{"type": v} for v in ODD_VALUES]
    odd_parts += [{"type": "video", "video": [v]} for v in ODD_VALUES] + [
        {"type": "text", "text": v} for v in ODD_VALUES
    ]
    odd_messages = [[v] for v in ODD_VALUES] + [[{"role": "user", "content": v}] for v in ODD_VALUES]
    odd_messages += [[{"role": v, "content": "hi"}] for v in ODD_VALUES] + [
        [{"role": "user", "content": [p]} for p in odd_parts]
    ]
    odd_messages += [[{"role": "user", "content": [p]}] for p in odd_parts]
    for messages in odd_messages:
        status, body = http(url, raw=json.dumps({**base, "messages": messages}).encode())
        assert status < 500, (messages, body)
    for path in ("/v1/voco/compress", "/tokenize", "/detokenize"):
        for value in ODD_VALUES + [part]:
            body = value if isinstance(value, dict) else {"type": "image_url", "image_url": value, "tokens": value}
            status, reply = http(server.url + path, raw=json.dumps(body).encode())
            assert status < 500, (path, value, reply)
    assert any(s == 400 for s in statuses.values()) and http(url, base)[0] == 200
    text = http(server.url + "/metrics", key=None)[1]
    assert metric(text, 'voco_request_errors_total{endpoint="/v1/chat/completions",status="500"}') == 0


def test_internal_error_says_internal_error_only(server, media, caplog):
    """A failure inside the model step is a 500 saying "internal error" (logged with its cause,
    never sent), streamed or not; the server keeps serving."""
    _, images = media
    engine = server.app.state.engine
    real = engine.prefill

    def broken(jobs):
        raise RuntimeError("secret detail of the failure")

    url = server.url + "/v1/chat/completions"
    body = {"model": server.name, "messages": user("hi"), "max_tokens": 2}
    engine.prefill = broken
    try:
        status, reply = http(url, body)
        streamed = http(url, {**body, "stream": True})[1]
    finally:
        engine.prefill = real
    assert status == 500 and reply["error"] == {
        "message": "internal error",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert '"internal error"' in streamed and "secret" not in streamed
    assert "secret detail" in caplog.text
    assert http(url, body)[0] == 200
