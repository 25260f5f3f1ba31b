"""`voco compress`: images or a video -> a VoCo cache file (pass 1, once per image); or a folder
of images -> one cache file per image, resumable: a file already there counts as done only if it
loads as a cache of this model with this K (one from another model, another K, or a truncated or
damaged file is compressed again)."""

from __future__ import annotations

import glob
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..core.errors import InputError, interruptible_progress, positive_float, positive_int
from ..core.files import check_file_target, check_folder_target


def _compress_command(args) -> int:
    from ..core.pipeline import VoCoPipeline

    if args.images:
        check_folder_target(args.out)
    else:
        check_file_target(args.out)
    pipe = VoCoPipeline.from_pretrained(args.model)
    if args.images:
        return _compress_many(pipe, args)
    if args.video:
        cache = pipe.compress_video(args.video, args.num_frames, args.fps, num_voco=args.num_voco)
    else:
        cache = pipe.compress(args.image, num_voco=args.num_voco)
    cache.save(args.out)
    print(
        f"{args.out}: {cache.num_groups} {'frame' if args.video else 'image'}(s), K={cache.num_voco}, "
        f"{cache.nbytes:,} bytes of K/V"
    )
    return 0


def _is_done(target: Path, fingerprint: str, num_voco: int) -> bool:
    """`target` holds a usable cache of this model with K = num_voco; a bad one is said once."""
    from ..core.cache import VoCoCache

    if not target.exists():
        return False
    try:
        cache = VoCoCache.load(target, expected_fingerprint=fingerprint)
    except InputError as err:
        tqdm.write(f"voco: redoing {err}", file=sys.stderr)
        return False
    if cache.num_voco != num_voco:
        tqdm.write(f"voco: redoing {target}: made with K={cache.num_voco}, not {num_voco}", file=sys.stderr)
        return False
    return True


def _compress_many(pipe, args) -> int:
    """One cache file per image; images already done are skipped, unreadable ones reported."""
    from ..core.processing import IMAGE_SUFFIXES, load_image

    source = Path(args.images)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(args.images))
    if not files:
        raise InputError(f"{args.images}: no images found")
    out = Path(args.out)
    target = {f: out / f"{f.name}.voco" for f in files}
    if len(set(target.values())) != len(files):
        raise InputError(f"{args.images}: two images share a file name; compress each folder separately")
    fingerprint, num_voco = pipe.model.fingerprint(), pipe.model.config.accepted_num_voco(args.num_voco)
    todo = [f for f in files if not _is_done(target[f], fingerprint, num_voco)]
    failed, started = 0, time.time_ns()

    def kept() -> str:
        # saves are atomic: a file written since the start is a whole cache of this run
        done = (
            len(files) - len(todo) + sum(target[f].exists() and target[f].stat().st_mtime_ns >= started for f in todo)
        )
        return f"{out}: {done} of {len(files)} images compressed and kept; the same command resumes"

    with interruptible_progress(len(todo), "compress", "img", kept) as bar:
        for start in range(0, len(todo), args.batch_size):
            loaded = []
            for f in todo[start : start + args.batch_size]:
                try:
                    loaded.append((f, load_image(f)))
                except InputError as err:
                    failed += 1
                    tqdm.write(f"voco: skipped {err}", file=sys.stderr)
            if loaded:
                cache = pipe.compress([image for _, image in loaded], num_voco=args.num_voco)
                for i, (f, _) in enumerate(loaded):
                    cache[i].save(target[f])
            bar.update(len(todo[start : start + args.batch_size]))
    print(f"{out}: {len(todo) - failed} compressed, {len(files) - len(todo)} already done, {failed} unreadable")
    return 1 if failed else 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "compress",
        description="Compress images or a video into a VoCo cache file (only the K <voco> tokens' K/V per image "
        "or frame), or a folder of images into one cache file each.",
    )
    p.add_argument("--model", required=True, help="a VoCo model folder (voco init, voco convert, voco train)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", help="one or more images -> one cache file, a group each, in order")
    source.add_argument("--video", help="a video file or a folder of frames -> one cache file, a group per frame")
    source.add_argument(
        "--images", help="a folder or a glob -> one cache file per image in --out (a folder); resumable"
    )
    p.add_argument("--num-frames", type=positive_int, default=8, help="frames sampled uniformly from --video")
    p.add_argument("--fps", type=positive_float, help="sample --video at this rate instead of --num-frames")
    p.add_argument(
        "--num-voco",
        type=positive_int,
        help="K: <voco> tokens per image, one the model was trained with (default: the model's)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="images compressed at once with --images")
    p.add_argument("--out", required=True, help="the cache file (a folder with --images)")
    p.set_defaults(func=_compress_command)
