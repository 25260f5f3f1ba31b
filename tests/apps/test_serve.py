"""`voco serve` end to end: the real server (uvicorn, a free 127.0.0.1 port) driven by the real
`openai` client, answers checked against `voco ask` on the same inputs; bad requests; a bounded
load test; the cache store; kill -9 while a cache file is written, then a restart."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest
import torch
import uvicorn
from PIL import Image

from voco_llama.cli import build_parser, main
from voco_llama.core.cache import VoCoCache, kv_bytes
from voco_llama.core.errors import InputError
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model
from voco_llama.core.processing import encode_prompts, question_prompt
from voco_llama.serve.store import CacheStore

KEY = "test-key"
QUESTIONS = ["What is in the image?", "What colour is the shape?", "how many circles?"]


def noise_image(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def image_part(image: Image.Image) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


def user(*parts) -> list[dict]:
    return [{"role": "user", "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}]


class Server:
    """The app of `voco serve FLAGS` on a free loopback port, in a thread of this process."""

    def __init__(self, argv: list[str]):
        from voco_llama.apps.serve import build_server

        args = build_parser("serve").parse_args(["serve", *argv])
        self.app, self.name = build_server(args)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=60)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def http(url: str, body=None, key: str | None = KEY, raw: bytes | None = None) -> tuple[int, dict | str]:
    """A plain HTTP request (the openai client cannot send malformed bodies)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in Prometheus text."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    images = [noise_image(seed) for seed in range(4)]
    for i, image in enumerate(images):
        image.save(d / f"img{i}.png")
    frames = d / "frames"
    frames.mkdir()
    for i in range(4):
        noise_image(100 + i).save(frames / f"{i:03d}.png")
    return d, images


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir()


@pytest.fixture(scope="module")
def pipe(model_dir):
    return VoCoPipeline.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def server(model_dir, media):
    flags = ["--model", str(model_dir), "--api-key", KEY, "--allowed-local-media-path", str(media[0] / "frames")]
    flags += ["--max-image-pixels", "4096", "--max-request-size", "1MiB", "--max-frames", "8", "--max-tokens", "64"]
    flags += ["--max-batch", "8", "--cache-memory", "64KiB"]
    s = Server(flags)
    yield s
    s.stop()


def offline(capsys, argv: list[str]) -> dict:
    """`voco ask ... --json`, the offline answer a served one must equal."""
    assert main(["ask", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_answers_equal_voco_ask_streamed_or_not(server, media, model_dir, capsys):
    folder, images = media
    for i, question in ((0, QUESTIONS[0]), (1, QUESTIONS[1])):
        ask = offline(
            capsys,
            ["--model", str(model_dir), "--image", str(folder / f"img{i}.png"), "--question", question]
            + ["--max-new-tokens", "8"],
        )
        reply = server.client.chat.completions.create(
            model=server.name, messages=user(image_part(images[i]), question), max_tokens=8, temperature=0
        )
        assert reply.choices[0].message.content == ask["answer"]
        assert reply.usage.completion_tokens == len(ask["token_ids"])
        assert reply.choices[0].finish_reason == ("stop" if len(ask["token_ids"]) < 8 else "length")
        # the prompt the answer reads: system + question text + K=1 VoCo token, never the 16 vision tokens
        assert 20 < reply.usage.prompt_tokens < 80
        chunks = list(
            server.client.chat.completions.create(
                model=server.name,
                messages=user(image_part(images[i]), question),
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces) == ask["answer"] and len([p for p in pieces if p]) > 1
        assert chunks[-1].usage.completion_tokens == len(ask["token_ids"])
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason


def test_video_and_cache_ids_equal_voco_ask(server, media, model_dir, pipe, capsys):
    folder, _ = media
    question = QUESTIONS[2]
    ask = offline(
        capsys,
        ["--model", str(model_dir), "--video", str(folder / "frames"), "--num-frames", "4", "--question", question]
        + ["--max-new-tokens", "6"],
    )
    frames = [Image.open(p).convert("RGB") for p in sorted((folder / "frames").iterdir())]
    path_part = {"type": "video_url", "video_url": {"url": (folder / "frames").as_uri(), "num_frames": 4}}
    inline_part = {"type": "video", "video": [data_url(f) for f in frames]}
    status, made = http(server.url + "/v1/voco/compress", inline_part)
    assert status == 200 and made["groups"] == 4 and made["num_voco"] == 1 and not made["cached"]
    assert made["bytes"] == kv_bytes(pipe.model.config, 4 * 1)  # 4 frames x K=1 token, fp32
    cache_part = {"type": "voco_cache", "voco_cache": {"id": made["id"]}}
    for part in (path_part, inline_part, cache_part):
        reply = server.client.chat.completions.create(
            model=server.name, messages=user(part, question), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == ask["answer"], part["type"]
    status, again = http(server.url + "/v1/voco/compress", inline_part)
    assert status == 200 and again["id"] == made["id"] and again["cached"]


def test_multi_turn_system_and_sampling(server, media, pipe):
    _, images = media
    first = pipe.ask(QUESTIONS[0], images=[images[2]], max_new_tokens=5)
    expected = pipe.ask(QUESTIONS[1], images=[images[2]], history=[(QUESTIONS[0], first.text)], max_new_tokens=5)
    messages = user(image_part(images[2]), QUESTIONS[0])
    messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": QUESTIONS[1]}]
    reply = server.client.chat.completions.create(model=server.name, messages=messages, max_tokens=5)
    assert reply.choices[0].message.content == expected.text
    plain = server.client.chat.completions.create(model=server.name, messages=user(QUESTIONS[0]), max_tokens=3)
    system = server.client.chat.completions.create(
        model=server.name,
        messages=[{"role": "system", "content": "Answer in one word."}, *user(QUESTIONS[0])],
        max_tokens=3,
    )
    assert system.usage.prompt_tokens < plain.usage.prompt_tokens  # the short system prompt replaced vicuna's
    for _ in range(3):
        sampled = server.client.chat.completions.create(
            model=server.name, messages=user(image_part(images[3]), "hi"), max_tokens=6, temperature=1.0, top_p=0.9
        )
        assert 1 <= sampled.usage.completion_tokens <= 6


def test_parts_of_different_k_in_one_request(tiny_model_dir, media):
    """A model trained for K in {1, 2, 4}: each image or video part may ask for its K; a video at K=1
    beside an image at K=4 answers as `pipe.ask` from those two caches."""
    folder, images = media
    model = tiny_model_dir(num_voco_choices=(1, 2, 4))
    pipe = VoCoPipeline.from_pretrained(model)
    s = Server(["--model", str(model), "--api-key", KEY, "--allowed-local-media-path", str(folder / "frames")])
    try:
        card = s.client.models.list().data[0]
        assert (card.num_voco, card.num_voco_choices) == (1, [1, 2, 4])
        frames = [Image.open(p).convert("RGB") for p in sorted((folder / "frames").iterdir())]
        video = {"type": "video", "video": [data_url(f) for f in frames], "num_voco": 1}
        photo = {**image_part(images[1]), "num_voco": 4}
        question = "Is the last frame like the image?"
        placed = "<image>" * 4 + "\n<image>\n" + question  # each part where it is: the prompt the server builds
        caches = [pipe.compress(frames, num_voco=1), pipe.compress([images[1]], num_voco=4)]
        want = pipe.ask(placed, cache=caches, max_new_tokens=6)
        reply = s.client.chat.completions.create(
            model=s.name, messages=user(video, photo, question), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == want.text
        assert reply.usage.prompt_tokens == want_prompt_tokens(pipe, placed, [1, 1, 1, 1, 4])
        status, made = http(s.url + "/v1/voco/compress", photo)
        assert status == 200 and made["num_voco"] == 4 and made["cached"]  # made by the chat request
        assert made["bytes"] == kv_bytes(pipe.model.config, 4)
        status, at_2 = http(s.url + "/v1/voco/compress", {**photo, "num_voco": 2})
        assert status == 200 and at_2["num_voco"] == 2 and at_2["id"] != made["id"] and not at_2["cached"]
        by_id = {"type": "voco_cache", "voco_cache": {"id": made["id"]}}
        reply = s.client.chat.completions.create(
            model=s.name, messages=user(video, by_id, question), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == want.text
        url = s.url + "/v1/chat/completions"
        for part, words in (
            ({**photo, "num_voco": 3}, "num_voco: K=3: this model was trained with K in {1, 2, 4}"),
            ({**by_id, "num_voco": 4}, "num_voco: 4: a cache id has the K it was made with"),
            ({**photo, "num_voco": "4"}, "num_voco: '4': a positive integer is required"),
        ):
            status, body = http(url, {"model": s.name, "messages": user(part, question), "max_tokens": 2})
            assert status == 400 and words in body["error"]["message"], body
    finally:
        s.stop()


def want_prompt_tokens(pipe, question, ks):
    """Tokens a prompt with these images reads: its text plus K per image (what usage reports)."""
    prompt = question_prompt(question, num_images=None)
    batch = encode_prompts([prompt], pipe.tokenizer, pipe.model.config, num_voco=ks)
    return int(batch["attention_mask"].sum()) - len(ks) * pipe.model.config.num_vision_tokens


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
        ("n > 1", {**good, "n": 2}, 400, "n=1"),
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
    assert http(server.url + "/v1/voco/compress", {"type": "text", "text": "hi"})[0] == 400
    assert http(server.url + "/v1/nothing")[0] == 404
    status, body = http(url, good)
    assert status == 200 and body["choices"][0]["message"]["content"] is not None
    metrics = http(server.url + "/metrics", key=None)[1]
    assert metric(metrics, "voco_request_errors_total") >= len(cases)


def test_load_16_clients_batched_no_error_no_difference(server, media, pipe):
    """16 concurrent clients x 25 requests (streamed or not, 4 or 8 tokens, 4 images x 3 questions)."""
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
        for r in range(25):
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
    batches = metric(after, "voco_batch_size_count") - metric(before, "voco_batch_size_count")
    served = metric(after, "voco_batch_size_sum") - metric(before, "voco_batch_size_sum")
    assert served == 400 and batches < 400, (served, batches)  # several requests shared model calls
    assert metric(after, "voco_request_errors_total") == metric(before, "voco_request_errors_total")
    assert time.monotonic() - start < 120


def test_store_lru_by_bytes_disk_reload_and_refusals(tmp_path):
    pipe = VoCoPipeline(*build_model("tiny"))
    caches = pipe.compress([noise_image(s) for s in range(4)])
    one = caches[0].nbytes
    store = CacheStore(2 * one, pipe.model.fingerprint(), tmp_path / "c")
    keys = [f"{i:064x}" for i in range(4)]
    for i in range(3):
        store.put(keys[i], caches[i])
    assert store.resident_count == 2 and store.resident_bytes == 2 * one and store.evictions == 1
    assert store.peek(keys[0]) is None  # least recent: out of memory ...
    store.flush()
    entry, tier = store.get(keys[0])  # ... and found on disk, checksum and fingerprint checked
    assert tier == "disk" and torch.equal(entry.keys[0], caches[0].keys[0])
    with pytest.raises(InputError, match="in use"):
        CacheStore(one, "x", tmp_path / "c")
    store.close()
    # a torn file, a file of another model and a leftover temp file are never used
    folder = tmp_path / "c"
    data = (folder / f"{keys[1]}.voco").read_bytes()
    (folder / f"{keys[1]}.voco").write_bytes(data[: len(data) // 2])
    VoCoCache.save(VoCoPipeline(*build_model("tiny", seed=1)).compress([noise_image(9)]), folder / f"{keys[2]}.voco")
    (folder / f".{keys[3]}.voco.abc.tmp").write_bytes(data[:10])
    store = CacheStore(2 * one, pipe.model.fingerprint(), folder)
    assert not list(folder.glob("*.tmp"))
    assert store.get(keys[1]) == (None, None) and store.get(keys[2]) == (None, None)
    assert store.rejected == 2 and not (folder / f"{keys[1]}.voco").exists()
    assert store.get(keys[0])[1] == "disk"
    store.put(keys[3], caches[3])  # bigger than the budget entries still serve, never resident
    small = CacheStore(one - 1, pipe.model.fingerprint())
    small.put(keys[0], caches[0])
    assert small.resident_count == 0
    store.close()


def _start_process(model_dir, cache_dir, media_dir) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "voco_llama.cli", "serve", "--model", str(model_dir), "--port", "0"]
    command += ["--cache-dir", str(cache_dir), "--allowed-local-media-path", str(media_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = ""
    deadline = time.monotonic() + 60
    while "http://" not in line:
        line = process.stdout.readline()
        assert line or process.poll() is None, "server exited"
        assert time.monotonic() < deadline
    url = re.search(r"http://[\d.]+:\d+", line).group(0)
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
    while True:
        try:
            if http(url + "/health", key=None)[0] == 200:
                return process, url
        except OSError:
            time.sleep(0.05)


def test_kill9_while_writing_caches_then_restart(model_dir, pipe, tmp_path, media):
    cache_dir = tmp_path / "caches"
    folder, images = media
    process, url = _start_process(model_dir, cache_dir, folder)
    try:
        ids = [http(url + "/v1/voco/compress", image_part(images[i]), key=None)[1]["id"] for i in range(3)]
        while len(list(cache_dir.glob("*.voco"))) < 3:
            time.sleep(0.01)
        stop = threading.Event()

        def storm(worker: int):  # new images, compressed and written one after another
            for n in range(10_000):
                if stop.is_set():
                    return
                try:
                    http(url + "/v1/voco/compress", image_part(noise_image(1000 + worker * 10_000 + n)), key=None)
                except OSError:
                    return

        threads = [threading.Thread(target=storm, args=(w,), daemon=True) for w in range(3)]
        for t in threads:
            t.start()
        caught, deadline = False, time.monotonic() + 20
        while not caught and time.monotonic() < deadline:
            caught = any(name.endswith(".tmp") for name in os.listdir(cache_dir))
        process.send_signal(signal.SIGKILL)  # mid-write when caught: its temp file is there
        process.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert caught, "no write was in flight in 20 s"
    finally:
        if process.poll() is None:
            process.kill()
    fingerprint = pipe.model.fingerprint()
    for path in cache_dir.glob("*.voco"):  # whatever the kill interrupted, no cache file is torn
        VoCoCache.load(path, expected_fingerprint=fingerprint)
    # plant a torn file and another model's file under two known ids
    torn = cache_dir / f"{ids[1]}.voco"
    torn.write_bytes(torn.read_bytes()[:-100])
    shutil.copy(cache_dir / f"{ids[0]}.voco", tmp_path / "good.voco")
    VoCoPipeline(*build_model("tiny", seed=1)).compress([images[2]]).save(cache_dir / f"{ids[2]}.voco")
    process, url = _start_process(model_dir, cache_dir, folder)
    try:
        assert not list(cache_dir.glob(".*.tmp"))  # the killed writer's temp file is gone
        expected = pipe.ask(QUESTIONS[0], images=[images[0]], max_new_tokens=6).text
        chat = {"model": "tiny", "max_tokens": 6}
        part = {"type": "voco_cache", "voco_cache": {"id": ids[0]}}
        status, body = http(url + "/v1/chat/completions", {**chat, "messages": user(part, QUESTIONS[0])}, key=None)
        assert status == 200 and body["choices"][0]["message"]["content"] == expected  # kept across the restart
        for bad in ids[1:]:
            part = {"type": "voco_cache", "voco_cache": {"id": bad}}
            status, body = http(url + "/v1/chat/completions", {**chat, "messages": user(part, "q")}, key=None)
            assert status == 404, body
        expected = pipe.ask(QUESTIONS[1], images=[images[1]], max_new_tokens=6).text
        messages = user(image_part(images[1]), QUESTIONS[1])  # the torn one's image, sent again: recompressed
        status, body = http(url + "/v1/chat/completions", {**chat, "messages": messages}, key=None)
        assert status == 200 and body["choices"][0]["message"]["content"] == expected
        metrics = http(url + "/metrics", key=None)[1]
        assert metric(metrics, "voco_cache_rejected_total") == 2 and metric(metrics, "voco_cache_hits_total") >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
