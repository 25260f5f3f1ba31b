"""`voco demo`: the project's main job.

Until the synthetic world and its training land, the demo runs the real end-to-end path on a
tiny randomly initialised model: build it, compress an image into a VoCo cache, answer a
question from the cache and from the single masked pass, and compare sizes and answers.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image, ImageDraw

from .cache import kv_bytes
from .inference import VoCoPipeline
from .presets import build_model, save_bundle


def _example_image(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (30, 30, 60))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 30, 30), fill=(220, 40, 40))
    draw.rectangle((36, 34, 56, 54), fill=(40, 200, 60))
    return image


def run_demo(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "tiny-model"
    if args.fresh or not (model_dir / "config.json").is_file():
        save_bundle(model_dir, *build_model("tiny", num_voco=1))
    pipe = VoCoPipeline.from_pretrained(model_dir)
    image_path = out / "example.png"
    _example_image().save(image_path)

    start = time.perf_counter()
    cache = pipe.compress([image_path])
    compress_ms = (time.perf_counter() - start) * 1e3
    cache_file = cache.save(out / "example.voco.safetensors")
    question = "What colour is the circle?"
    from_cache = pipe.ask(question, cache=cache, max_new_tokens=12)
    masked = pipe.ask(question, images=[image_path], path="masked", max_new_tokens=12)
    config = pipe.model.config
    full = kv_bytes(config, config.num_vision_tokens + config.num_voco)
    print(f"model        {model_dir} (random weights: answers are noise until trained)")
    print(f"image        {image_path} -> {config.num_vision_tokens} vision tokens -> K={cache.num_voco} VoCo token(s)")
    print(f"cache        {cache.nbytes:,} bytes in memory, {cache_file.stat().st_size:,} on disk "
          f"(full-token K/V: {full:,} bytes, {cache.nbytes / full:.1%}); compressed in {compress_ms:.1f} ms")
    print(f"question     {question}")
    print(f"from cache   {from_cache.text!r} tokens {from_cache.token_ids}")
    print(f"masked pass  {masked.text!r} tokens {masked.token_ids}")
    diff = max(abs(a - b) for a, b in zip(from_cache.logprobs, masked.logprobs))
    print(f"same tokens: {from_cache.token_ids == masked.token_ids}, max log-prob difference {diff:.2e}")
