"""`voco ask`: a question about an image, a video or a cache file, answered by one of the
pipeline's routes (cache: the two-stage VoCo cache; masked: one pass over all vision tokens under
the VoCo rule; full: causal attention; none: no image)."""

from __future__ import annotations

import json

from ..core.errors import InputError
from ..core.pipeline import ROUTES


def _ask_command(args) -> int:
    from ..core.pipeline import VoCoPipeline
    from ..core.video import read_video

    pipe = VoCoPipeline.from_pretrained(args.model)
    if args.cache and args.route != "cache":
        raise InputError("--cache answers from the cache; use --image with --route masked/full")
    cache = pipe.load_cache(args.cache) if args.cache else None
    images = args.image or None
    if args.video:
        images = read_video(args.video, args.num_frames, args.fps)
    if (
        images is None
        and args.route in ("masked", "full")
        or (cache is None and images is None and args.route == "cache")
    ):
        raise InputError("give --image IMG (or --cache FILE for --route cache)")
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
    p = subparsers.add_parser("ask", help="answer a question about an image or a cache")
    p.add_argument("--model", required=True)
    p.add_argument("--image", nargs="+")
    p.add_argument("--video", help="a video file or a folder of frames")
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--fps", type=float)
    p.add_argument("--cache")
    p.add_argument("--question", required=True)
    p.add_argument(
        "--route", "--path", dest="route", choices=ROUTES, default="cache", help="how the answer reaches the image"
    )
    p.add_argument("--num-voco", type=int)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--json", action="store_true", help="answer, token ids and their log-probabilities")
    p.set_defaults(func=_ask_command)
