"""`voco ask`: a question about an image, a video or a cache file, answered by one of the
pipeline's routes (`--route` cache: the two-stage VoCo cache; masked: one pass over all vision
tokens under the VoCo rule; full: causal attention; none: no image). `--path` is the flag's
earlier spelling, still accepted."""

from __future__ import annotations

import json

from ..core.errors import InputError, non_negative_float, positive_float, positive_int
from ..core.pipeline import add_route_flag


def _ask_command(args) -> int:
    from ..core.pipeline import VoCoPipeline
    from ..core.video import read_video

    if args.cache and args.route != "cache":
        raise InputError("--cache answers from the cache; use --image with --route masked/full")
    if args.route != "none" and not (args.image or args.video or args.cache):
        raise InputError("give --image IMG, --video VIDEO or --cache FILE (or --route none)")
    pipe = VoCoPipeline.from_pretrained(args.model)
    # several cache files: their groups in order, each at its own K (a video at K=1, an image at K=16)
    caches = [pipe.load_cache(path) for path in args.cache or []]
    cache = caches[0] if len(caches) == 1 else caches or None
    images = read_video(args.video, args.num_frames, args.fps) if args.video else args.image
    answer = pipe.ask(
        args.question,
        cache=cache,
        images=images,
        route=args.route,
        num_voco=args.num_voco,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
    )
    if args.json:
        print(
            json.dumps(
                {"answer": answer.text, "token_ids": answer.token_ids, "logprobs": answer.logprobs, "route": args.route}
            )
        )
    else:
        print(answer.text)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "ask", description="Answer a question about an image, a video (a group per frame) or a VoCo cache file."
    )
    p.add_argument("--model", required=True, help="a VoCo model folder")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--image", nargs="+", help="one or more images")
    source.add_argument("--video", help="a video file or a folder of frames")
    source.add_argument(
        "--cache", nargs="+", help="cache file(s) from voco compress, in prompt order; they may differ in K"
    )
    p.add_argument("--num-frames", type=positive_int, default=8, help="frames sampled uniformly from --video")
    p.add_argument("--fps", type=positive_float, help="sample --video at this rate instead of --num-frames")
    p.add_argument("--question", required=True)
    add_route_flag(p, "--path", help="how the answer reaches the image")
    p.add_argument(
        "--num-voco",
        type=positive_int,
        help="K: <voco> tokens per image, one the model was trained with (default: the model's; "
        "a cache answers at its own K)",
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=128, help="at most this many answer tokens")
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0: greedy decoding")
    p.add_argument("--json", action="store_true", help="print answer, token ids and their log-probabilities")
    p.set_defaults(func=_ask_command)
