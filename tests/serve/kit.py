"""What the serve tests share: images as the API takes them, the real server (uvicorn on a free
127.0.0.1 port, in a thread, or `voco serve` in a process), plain HTTP for bodies the `openai`
client cannot send, and `voco ask --json`, the offline answer a served one must equal."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import uvicorn
from PIL import Image

from voco_llama.cli import build_parser, main

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


def http(
    url: str, body=None, key: str | None = KEY, raw: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict | str]:
    """A plain HTTP request (the openai client cannot send malformed bodies). `headers`: a dict
    the response's headers are put in."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text, got = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as err:
        status, text, got = err.code, err.read().decode(), err.headers
    if headers is not None:
        headers.update(got.items())
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in Prometheus text."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def offline(capsys, argv: list[str]) -> dict:
    """`voco ask ... --json`, the offline answer a served one must equal."""
    assert main(["ask", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def start_process(model_dir, cache_dir, media_dir, *flags: str) -> tuple[subprocess.Popen, str]:
    """`voco serve` in a process of its own (it can be killed), on a free port; (process, URL)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "voco_llama.cli", "serve", "--model", str(model_dir), "--port", "0"]
    command += ["--cache-dir", str(cache_dir), "--allowed-local-media-path", str(media_dir), *flags]
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
