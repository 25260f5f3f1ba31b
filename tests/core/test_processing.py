"""Images to pixels: LLaVA's pad unchanged for normal images, a bounded cost for extreme ones."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from voco_llama.core.errors import InputError
from voco_llama.core.presets import image_processor_for
from voco_llama.core.processing import load_image, process_images


def llava_expand2square(image, background):
    """LLaVA's own `expand2square` (llava/mm_utils.py), the reference for `pad`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def reference_pixels(image, processor):
    background = tuple(int(x * 255) for x in processor.image_mean)
    return processor(images=[llava_expand2square(image, background)], return_tensors="pt")["pixel_values"]


def scene(width, height, seed=0):
    """Smooth shapes on a gradient with some noise: photo-like content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    base[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 4) ** 2] = (230, 40, 40)
    base += rng.normal(0, 8, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("vision", "side", "size"),
    [
        ("clip", 336, (640, 480)),
        ("clip", 336, (480, 640)),
        ("clip", 336, (1344, 900)),
        ("clip", 336, (336, 336)),
        ("clip", 32, (48, 40)),
        ("clip", 32, (128, 20)),
        ("siglip", 32, (100, 60)),
    ],
)
def test_pad_is_llavas_bit_for_bit_for_normal_images(vision, side, size):
    processor = image_processor_for(vision, side)
    image = scene(*size)
    assert torch.equal(process_images([image], processor), reference_pixels(image, processor))


def test_a_large_image_is_shrunk_first_and_stays_close_to_llavas_pad():
    """Above 4x the processor's size the image is shrunk before the pad; the result differs from
    padding the full image only by resampling: mean |diff| < 0.01, max < 0.25 (normalised pixels,
    whose range is about 4)."""
    processor = image_processor_for("clip", 336)
    image = scene(3000, 1700)
    ours, reference = process_images([image], processor), reference_pixels(image, processor)
    diff = (ours - reference).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.25, (float(diff.mean()), float(diff.max()))


def test_a_thin_image_keeps_its_content():
    """12000x4 red: after the shrink it is a 1-pixel stripe across the middle of the square (LLaVA's
    pad would make it 0.1 pixel); everywhere else the pad colour, where red - green is ~0."""
    processor = image_processor_for("clip", 336)
    pixels = process_images([Image.new("RGB", (12000, 4), (255, 0, 0))], processor)[0]
    red_minus_green = (pixels[0] - pixels[1]).mean(dim=1)  # per row
    assert red_minus_green[160:176].max() > 0.5
    assert red_minus_green[:160].abs().max() < 1e-3 and red_minus_green[176:].abs().max() < 1e-3


# Peak resident memory of a fresh process: VmHWM, not getrusage's ru_maxrss, which a child starts
# with its parent's (pytest's) size and so would hide the very growth measured here.
PEAK = """
import re, sys
from voco_llama.core.presets import image_processor_for
from voco_llama.core.processing import load_image, process_images
processor = image_processor_for("clip", 336)
process_images([load_image(sys.argv[1])], processor)
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


def peak_kib(path):
    run = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, check=True)
    return int(run.stdout.split()[-1])


def test_peak_memory_of_a_12000x4_image_is_that_of_a_normal_one(tmp_path):
    """Measured: before, 12000x4 peaked at 2262 MB against 347 MB for 640x480 (the pad built a
    12000x12000 canvas); now within a few percent."""
    Image.new("RGB", (12000, 4), (200, 30, 30)).save(tmp_path / "thin.png")
    scene(640, 480).save(tmp_path / "normal.png")
    assert (tmp_path / "thin.png").stat().st_size < 1000
    thin, normal = peak_kib(tmp_path / "thin.png"), peak_kib(tmp_path / "normal.png")
    assert thin < 1.5 * normal, (thin, normal)


def test_more_pixels_than_pils_limit_is_one_clear_error(tmp_path, monkeypatch):
    """Refused from the header (opening is lazy), never a DecompressionBombError traceback; here
    with the limit lowered so the images stay small (the CLI table uses PNGs claiming 10000^2 and 20000^2)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40)).save(tmp_path / "over.png")  # 1600 pixels: above the limit
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")  # above twice the limit: PIL raises itself
    with pytest.raises(InputError, match=r"over.png: image is 40x40 = 1,600 pixels, above the limit of 1,000"):
        load_image(tmp_path / "over.png")
    with pytest.raises(InputError, match=r"bomb.png: unreadable image \(DecompressionBombError"):
        load_image(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's way of lifting the limit
    assert load_image(tmp_path / "bomb.png").size == (100, 100)
