"""The `voco` command: one verb per concern.

  voco init      a randomly initialised model from a preset (nothing is downloaded)
  voco convert   an original-LLaVA or llava-hf checkpoint -> ours
  voco compress  images -> VoCo cache file
  voco ask       a question about an image or a cache file
  voco demo      the project's main job
  (plus the verbs other modules register: data, score, retention, ...)

Bad input (a missing or unreadable file, a cache from another model) exits with code 2 and one
line on stderr naming the file.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import sys

from .processing import InputError


def _init(args):
    from .presets import build_model, save_bundle

    model, tokenizer, image_processor = build_model(
        args.preset, seed=args.seed, num_voco=args.num_voco, position_layout=args.position_layout
    )
    save_bundle(args.out, model, tokenizer, image_processor)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: preset {args.preset}, {n:,} parameters, K={model.config.num_voco}, "
          f"{model.config.num_vision_tokens} vision tokens per image, layout {model.config.position_layout}")


def _convert(args):
    from .convert import convert_original, from_llava_hf
    from .presets import save_bundle

    if args.llava_hf:
        bundle = from_llava_hf(args.llava_hf, args.num_voco, args.position_layout)
    else:
        if not args.vision_tower:
            raise InputError("--vision-tower is required with --llava (the original layout ships no tower)")
        bundle = convert_original(args.llava, args.vision_tower, args.projector, args.num_voco, args.position_layout)
    save_bundle(args.out, *bundle)
    print(f"{args.out}: converted, <voco> id {bundle[0].config.voco_token_id}, K={bundle[0].config.num_voco}")


def _compress(args):
    from .inference import VoCoPipeline

    pipe = VoCoPipeline.from_pretrained(args.model)
    if args.images:
        return _compress_many(pipe, args)
    if args.video:
        cache = pipe.compress_video(args.video, args.num_frames, args.fps, num_voco=args.num_voco)
    else:
        cache = pipe.compress(args.image, num_voco=args.num_voco)
    cache.save(args.out)
    print(f"{args.out}: {cache.num_groups} {'frame' if args.video else 'image'}(s), K={cache.num_voco}, "
          f"{cache.nbytes:,} bytes of K/V")


def _compress_many(pipe, args) -> int:
    """One cache file per image; images already done are skipped, unreadable ones reported."""
    from pathlib import Path

    from tqdm import tqdm

    from .processing import load_image

    source = Path(args.images)
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in suffixes)
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


def _ask(args):
    from .inference import VoCoPipeline
    from .video import read_video

    pipe = VoCoPipeline.from_pretrained(args.model)
    if args.cache and args.path != "cache":
        raise InputError("--cache answers from the cache; use --image with --path masked/full")
    cache = pipe.load_cache(args.cache) if args.cache else None
    images = args.image or None
    if args.video:
        images = read_video(args.video, args.num_frames, args.fps)
    if images is None and args.path in ("masked", "full") or (cache is None and images is None and args.path == "cache"):
        raise InputError("give --image IMG (or --cache FILE for --path cache)")
    answer = pipe.ask(args.question, cache=cache, images=images, path=args.path, num_voco=args.num_voco,
                      max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.json:
        print(json.dumps({"answer": answer.text, "token_ids": answer.token_ids, "logprobs": answer.logprobs,
                          "path": args.path}))
    else:
        print(answer.text)


def _demo(args):
    if args.video:
        from .videodemo import run_video_demo

        return run_video_demo(args)
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voco", description="VoCo-LLaMA vision compression for LLaVA models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="a randomly initialised model from a preset")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", required=True)
    p.add_argument("--num-voco", type=int, default=1)
    p.add_argument("--position-layout", choices=["compact", "natural"], default="compact")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init)

    p = sub.add_parser("convert", help="an original-LLaVA or llava-hf checkpoint -> a VoCo model")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--llava", help="original LLaVA layout (model.mm_projector.* keys)")
    source.add_argument("--llava-hf", help="HF layout (LlavaForConditionalGeneration)")
    p.add_argument("--vision-tower", help="CLIP vision tower directory (with --llava)")
    p.add_argument("--projector", help="a separate mm_projector.bin (with --llava)")
    p.add_argument("--out", required=True)
    p.add_argument("--num-voco", type=int, default=1)
    p.add_argument("--position-layout", choices=["compact", "natural"], default="compact")
    p.set_defaults(func=_convert)

    p = sub.add_parser("compress", help="images or a video -> VoCo cache file(s)")
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
    p.set_defaults(func=_compress)

    p = sub.add_parser("ask", help="answer a question about an image or a cache")
    p.add_argument("--model", required=True)
    p.add_argument("--image", nargs="+")
    p.add_argument("--video", help="a video file or a folder of frames")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--fps", type=float)
    p.add_argument("--cache")
    p.add_argument("--question", required=True)
    p.add_argument("--path", choices=["cache", "masked", "full", "none"], default="cache")
    p.add_argument("--num-voco", type=int)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--json", action="store_true", help="answer, token ids and their log-probabilities")
    p.set_defaults(func=_ask)

    p = sub.add_parser("demo", help="the project's main job")
    p.add_argument("--preset", default="demo")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--video", action="store_true", help="the video demo (per-frame VoCo), after the image demo")
    p.set_defaults(func=_demo)

    # Verbs that live with their own module register themselves.
    for module in ("bench", "chat", "data", "evaluate", "scoring", "train"):
        importlib.import_module(f".{module}", __package__).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars of tiny models are noise; ours use tqdm
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except InputError as err:
        print(f"voco: error: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
