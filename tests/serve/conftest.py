"""Fixtures of the serve tests: a few images and a video folder, the tiny model's folder and
pipeline, and one server per test module on it (small limits, so refusals are cheap to reach)."""

from __future__ import annotations

import pytest

from tests.serve.kit import KEY, Server, noise_image
from voco_llama.core.pipeline import VoCoPipeline


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
