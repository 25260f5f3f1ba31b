"""The endpoints beside chat: models, health, version, tokenize / detokenize, Prometheus metrics
(vLLM's names as aliases; one cache miss per image however many requests wait for it); `model`
may be left out, one model being served."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.serve.kit import http, image_part, metric, noise_image, user


def test_models_health_metrics(server, media):
    models = server.client.models.list()
    assert [m.id for m in models.data] == [server.name]
    assert http(server.url + "/health", key=None) == (200, {"status": "ok"})
    _, images = media
    for _ in range(2):  # the second request finds the image cached
        server.client.chat.completions.create(
            model=server.name, messages=user(image_part(images[0]), "x"), max_tokens=2
        )
    status, text = http(server.url + "/metrics", key=None)
    assert status == 200
    assert metric(text, "voco_cache_hits_total") >= 1 and metric(text, "voco_cache_misses_total") >= 1
    assert metric(text, "voco_cache_resident_entries") >= 1 and metric(text, "voco_cache_resident_bytes") >= 512
    assert metric(text, "voco_time_to_first_token_seconds_count") >= 2
    assert metric(text, "voco_time_per_output_token_seconds_count") >= 2
    assert metric(text, "voco_requests_total") >= 2


def test_model_optional_version_tokenize_detokenize(server, pipe):
    url = server.url
    status, body = http(url + "/v1/chat/completions", {"messages": user("hi"), "max_tokens": 2})
    assert status == 200 and body["model"] == server.name
    assert http(url + "/v1/chat/completions", {"model": None, "messages": user("hi"), "max_tokens": 2})[0] == 200
    status, body = http(url + "/version", key=None)
    assert status == 200 and body == {"version": "0.1.0"}
    text = "What is on the mat?"
    status, body = http(url + "/tokenize", {"prompt": text})
    assert (
        status == 200 and body["tokens"] == pipe.tokenizer(text)["input_ids"] and body["count"] == len(body["tokens"])
    )
    assert body["max_model_len"] == pipe.model.config.text_config.max_position_embeddings
    plain = http(url + "/tokenize", {"model": server.name, "prompt": text, "add_special_tokens": False})[1]
    assert plain["tokens"] == pipe.tokenizer(text, add_special_tokens=False)["input_ids"]
    status, body = http(url + "/detokenize", {"tokens": plain["tokens"]})
    assert status == 200 and body["prompt"] == pipe.tokenizer.decode(plain["tokens"])
    for path, body, param in (
        ("/detokenize", {"tokens": [len(pipe.tokenizer)]}, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
        ("/tokenize", {"prompt": 5}, "prompt"),
        ("/tokenize", {"prompt": "x", "messages": []}, "messages"),
    ):
        status, reply = http(url + path, body)
        assert status == 400 and reply["error"]["param"] == param, (path, reply)
    assert http(url + "/tokenize", {"prompt": "x"}, key=None)[0] == 401  # the API key guards it
    assert http(url + "/tokenize", {"model": "gpt-4", "prompt": "x"})[0] == 404


def test_metrics_vllm_names_and_one_miss_per_image(server):
    """20 new images, each asked about by 6 clients at once: 20 misses, not 120; running, waiting,
    queue time and end-to-end latency under voco's and vLLM's names."""
    before = http(server.url + "/metrics", key=None)[1]
    images = [noise_image(500 + i) for i in range(20)]

    def ask(i: int) -> int:
        body = {"messages": user(image_part(images[i // 6]), "q"), "max_tokens": 2}
        return http(server.url + "/v1/chat/completions", body)[0]

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(ask, range(120))) == {200}
    after = http(server.url + "/metrics", key=None)[1]
    assert metric(after, "voco_cache_misses_total") - metric(before, "voco_cache_misses_total") == 20
    for name in (
        "e2e_request_latency_seconds_count",
        "request_queue_time_seconds_count",
        "time_to_first_token_seconds_count",
        "prompt_tokens_total",
    ):
        voco, vllm = metric(after, "voco_" + name), metric(after, "vllm:" + name)
        assert voco == vllm and voco - metric(before, "voco_" + name) >= 120, name
    assert metric(after, "vllm:generation_tokens_total") == metric(after, "voco_completion_tokens_total") > 0
    for name in ("num_requests_running", "num_requests_waiting"):  # idle now: both 0, both exported
        assert f"voco_{name} 0.0" in after and f"vllm:{name} 0.0" in after
