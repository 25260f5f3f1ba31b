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
            rate = float(stream.average_rate or 0) or None
            # the header's frame count, else the packets' (demuxing decodes nothing)
            total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        step = max(1, round(rate / fps)) if fps and rate else None
        count = None if step else num_frames
        frames, decoded = _decode_sampled(path, sample_indices(total, count, step))
        if decoded != total:  # the header miscounted: sample again over the frames that are there
            frames, decoded = _decode_sampled(path, sample_indices(decoded, count, step))
    except (av.error.FFmpegError, IndexError, OSError) as err:
        raise InputError(f"{path}: unreadable video ({err})") from None
    if not frames:
        raise InputError(f"{path}: video has no frames")
    return frames


def _decode_sampled(path: Path, indices: list[int]) -> tuple[list[Image.Image], int]:
    """The frames at `indices` as RGB images, and how many frames the file decodes to. Every frame
    is decoded (a seek lands on a keyframe, not on a frame) but only the sampled ones are kept, so
    memory does not grow with the video's length."""
    import av

    wanted, frames, decoded = set(indices), [], 0
    with av.open(str(path)) as container:
        for decoded, frame in enumerate(container.decode(container.streams.video[0]), 1):
            if decoded - 1 in wanted:
                frames.append(frame.to_image().convert("RGB"))
    return frames, decoded
