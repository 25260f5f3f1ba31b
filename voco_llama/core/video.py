"""Video input: frames sampled from a file (PyAV) or a folder of images.

A video is a sequence of frames; each frame is its own compression group (N vision tokens, then K
VoCo tokens), compressed alone, and the frame caches are placed in time order in the prompt. In the
compact layout F frames cost F*K positions of the context window, so long videos fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .processing import IMAGE_SUFFIXES, load_image


def sample_indices(total: int, num_frames: int | None = None, step: int | None = None) -> list[int]:
    """Uniform sampling of `num_frames` over `total` frames (LLaVA-style linspace), or every `step`-th."""
    if total <= 0:
        return []
    if step:
        return list(range(0, total, step))
    if not num_frames or num_frames >= total:
        return list(range(total))
    return np.linspace(0, total - 1, num_frames).round().astype(int).tolist()


def read_video(path: str | Path, num_frames: int | None = 8, fps: float | None = None) -> list[Image.Image]:
    """Frames of a video file or of a folder of frame images (sorted by name), as RGB images."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no frame images (*.png, *.jpg) in the folder")
        step = None if fps is None else 1  # a folder has no frame rate: --fps keeps every frame
        return [load_image(files[i]) for i in sample_indices(len(files), num_frames, step)]
    if not path.is_file():
        raise InputError(f"{path}: video not found")
    import av  # decoding needs PyAV only for video files

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [frame.to_image().convert("RGB") for frame in container.decode(stream)]
            rate = float(stream.average_rate or 0) or None
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise InputError(f"{path}: unreadable video ({err})") from None
    if not frames:
        raise InputError(f"{path}: video has no frames")
    step = max(1, round(rate / fps)) if fps and rate else None
    return [frames[i] for i in sample_indices(len(frames), None if step else num_frames, step)]
