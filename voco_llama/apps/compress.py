"""`voco compress`: images or a video -> a VoCo cache file (pass 1, once per image); or a folder
of images -> one cache file per image, resumable (files already done are skipped)."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from tqdm import tqdm

from ..core.errors import InputError
from ..core.processing import IMAGE_SUFFIXES, load_image


def _compress_command(args) -> int:
    from ..core.pipeline import VoCoPipeline

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


def _compress_many(pipe, args) -> int:
    """One cache file per image; images already done are skipped, unreadable ones reported."""
    source = Path(args.images)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = sorted(Path(p) for p in glob.glob(args.images))
    if not files:
        raise InputError(f"{args.images}: no images found")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = {f: out / f"{f.name}.voco" for f in files}
    if len(set(target.values())) != len(files):
        raise InputError(f"{args.images}: two images share a file name; compress each folder separately")
    todo = [f for f in files if not target[f].exists()]
    failed = 0
    with tqdm(total=len(todo), desc="compress", unit="img") as bar:
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
    p = subparsers.add_parser("compress", help="images or a video -> VoCo cache file(s)")
    p.add_argument("--model", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", nargs="+", help="one or more images -> one cache file, a group each, in order")
    source.add_argument("--video", help="a video file or a folder of frames -> one cache file, a group per frame")
    source.add_argument("--images", help="a folder or a glob -> one cache file per image in --out (a folder)")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--fps", type=float, help="sample frames at this rate instead of --num-frames")
    p.add_argument("--num-voco", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_compress_command)
