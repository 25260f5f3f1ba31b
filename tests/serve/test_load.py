"""Load through the real server: 16 concurrent clients get exactly the offline answers; clients
that time out or disconnect free their slots (the server is idle soon after they leave); a full
queue answers 503 with Retry-After; in-flight bytes are bounded; a request joins the running batch
at the next decode step instead of waiting for the batch to end."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai

from tests.serve.kit import KEY, QUESTIONS, Server, http, image_part, metric, noise_image, user


def test_load_16_clients_batched_no_error_no_difference(server, media, pipe):
    """16 concurrent clients x 12 requests (streamed or not, 4 or 8 tokens, 4 images x 3 questions)."""
    _, images = media
    expected = {
        (i, q, n): pipe.ask(QUESTIONS[q], images=[images[i]], max_new_tokens=n).text
        for i in range(4)
        for q in range(3)
        for n in (4, 8)
    }
    before = http(server.url + "/metrics", key=None)[1]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)

    def run_client(c: int) -> list[str]:
        wrong = []
        for r in range(12):
            i, q, n, stream = (c + r) % 4, (c * 7 + r) % 3, (4, 8)[(c + r) % 2], (c + r) % 3 == 0
            messages = user(image_part(images[i]), QUESTIONS[q])
            if stream:
                chunks = client.chat.completions.create(model=server.name, messages=messages, max_tokens=n, stream=True)
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            else:
                text = client.chat.completions.create(model=server.name, messages=messages, max_tokens=n)
                text = text.choices[0].message.content
            if text != expected[(i, q, n)]:
                wrong.append(f"client {c} request {r}: {text!r} != {expected[(i, q, n)]!r}")
        return wrong

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        wrong = [w for ws in pool.map(run_client, range(16)) for w in ws]  # raises on any HTTP error
    assert wrong == []
    after = http(server.url + "/metrics", key=None)[1]
    steps = metric(after, "voco_batch_size_count") - metric(before, "voco_batch_size_count")
    answer_steps = metric(after, "voco_batch_size_sum") - metric(before, "voco_batch_size_sum")
    served = metric(after, "voco_e2e_request_latency_seconds_count") - metric(
        before, "voco_e2e_request_latency_seconds_count"
    )
    assert served == 192 and answer_steps / steps > 2, (served, answer_steps, steps)  # answers decoded together
    assert metric(after, "voco_request_errors_total") == metric(before, "voco_request_errors_total")
    assert time.monotonic() - start < 120


def idle(server) -> bool:
    text = http(server.url + "/metrics", key=None)[1]
    return metric(text, "voco_num_requests_running") == 0 and metric(text, "voco_num_requests_waiting") == 0


def test_timeout_storm_frees_the_server(model_dir):
    """150 clients with openai's timeout=1.0 and its default 2 retries, long sampled answers on a
    batch of 4: every attempt is either answered or dropped (none is computed to its end for no
    one), and the server is idle within 2 s of the last client giving up."""
    s = Server(["--model", str(model_dir), "--api-key", KEY, "--max-batch", "4", "--max-tokens", "200"])
    engine = s.app.state.engine
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, timeout=1.0, max_retries=2)

        def run(c: int) -> float:
            try:
                client.chat.completions.create(
                    model=s.name, messages=user(f"tell me a long story {c}"), max_tokens=200, temperature=1.0
                )
            except (openai.APITimeoutError, openai.APIConnectionError):
                pass
            return time.monotonic()

        with ThreadPoolExecutor(150) as pool:
            last_left = max(pool.map(run, range(150)))
        deadline = time.monotonic() + 10
        while not idle(s) and time.monotonic() < deadline:
            time.sleep(0.05)
        idle_after = time.monotonic() - last_left
        steps = engine.steps
        time.sleep(0.5)
        assert engine.steps == steps  # nothing left decoding for no one
        text = http(s.url + "/metrics", key=None)[1]
        chat = 'voco_requests_total{endpoint="/v1/chat/completions",status="%s"}'
        attempts = metric(text, chat % 200) + metric(text, chat % 499)  # answered, or the client was gone
        cancelled = metric(text, "voco_requests_cancelled_total")
        answered = metric(text, "voco_e2e_request_latency_seconds_count")
        assert idle_after < 2.0, idle_after
        assert cancelled > 100 and cancelled + answered == attempts, (cancelled, answered, attempts)
        assert http(s.url + "/v1/chat/completions", {"messages": user("hi"), "max_tokens": 2})[0] == 200
    finally:
        s.stop()


def test_full_queue_answers_503_with_retry_after(model_dir):
    s = Server(["--model", str(model_dir), "--max-batch", "1", "--max-queue", "2", "--max-tokens", "40"])
    try:
        body = {"messages": user("a long answer please"), "max_tokens": 40, "temperature": 1.0}

        def send(_):
            headers = {}
            status, reply = http(s.url + "/v1/chat/completions", body, key=None, headers=headers)
            return status, reply, headers

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, range(8)))
        busy = [(reply, headers) for status, reply, headers in results if status == 503]
        assert sorted(status for status, _, _ in results) == [200] * (8 - len(busy)) + [503] * len(busy)
        assert 8 - len(busy) >= 3 and len(busy) >= 3, [r[0] for r in results]  # 1 running + 2 waiting at least
        for reply, headers in busy:
            assert headers["retry-after"] == "1" and reply["error"]["code"] == "server_busy"
            assert "--max-queue 2" in reply["error"]["message"] and reply["error"]["type"] == "server_error"
        text = http(s.url + "/metrics", key=None)[1]
        assert metric(text, "voco_requests_rejected_total") == len(busy)
    finally:
        s.stop()


def test_inflight_bytes_are_bounded(model_dir):
    """A 200 KB image held by a long answer fills --max-inflight-bytes 300KB: a second one gets 503
    until the first is done; a small request still passes."""
    s = Server(["--model", str(model_dir), "--max-inflight-bytes", "300KB", "--max-tokens", "200"])
    try:
        big = image_part(noise_image(77, (256, 256)))
        assert 150_000 < len(big["image_url"]["url"]) < 300_000
        url = s.url + "/v1/chat/completions"
        long = {"messages": user(big, "describe"), "max_tokens": 200, "temperature": 1.0}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(http, url, long, None)
            deadline = time.monotonic() + 10
            while metric(http(s.url + "/metrics", key=None)[1], "voco_inflight_request_bytes") < 150_000:
                assert time.monotonic() < deadline and not first.done()
                time.sleep(0.01)
            headers = {}
            status, reply = http(url, {**long, "max_tokens": 2}, key=None, headers=headers)
            small = http(url, {"messages": user("hi"), "max_tokens": 2}, key=None)[0]
            assert first.result()[0] == 200
        assert status == 503 and "--max-inflight-bytes" in reply["error"]["message"] and headers["retry-after"]
        assert small == 200
        assert metric(http(s.url + "/metrics", key=None)[1], "voco_inflight_request_bytes") == 0
        assert http(url, {**long, "max_tokens": 2}, key=None)[0] == 200
    finally:
        s.stop()


def test_requests_join_the_running_batch(server, media, pipe):
    """Short greedy requests sent while a long sampled answer streams finish before it does (they
    joined the running batch at a decode step), each equal to its offline answer."""
    _, images = media
    long = server.client.chat.completions.create(
        model=server.name, messages=user("a long one"), max_tokens=64, temperature=1.0, seed=1, stream=True
    )
    stream = iter(long)
    next(stream), next(stream)  # the long answer is decoding
    expected = [pipe.ask(QUESTIONS[q], images=[images[q]], max_new_tokens=3).text for q in range(3)]
    with ThreadPoolExecutor(3) as pool:
        replies = list(
            pool.map(
                lambda q: server.client.chat.completions.create(
                    model=server.name, messages=user(image_part(images[q]), QUESTIONS[q]), max_tokens=3
                ),
                range(3),
            )
        )
    rest = [chunk for chunk in stream if chunk.choices]
    assert [r.choices[0].message.content for r in replies] == expected
    assert len(rest) > 5, "the long answer ended before the short ones: they did not join it"
    assert rest[-1].choices[0].finish_reason in ("length", "stop")
