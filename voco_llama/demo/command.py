"""`voco demo`: the front door of the demos. `voco demo` runs the image demo (image.py: the paper's
Tables 1 and 2 at toy scale), `--video` the video demo after it (video.py), `--curves` the learning
curves used to size the toy world's budget (curves.py), `--pretrain` the tower and base it starts
from (pretrain.py)."""

from __future__ import annotations

from ..core.errors import InputError
from .presets import PRESETS


def _demo_command(args) -> int:
    if sum(map(bool, (args.video, args.curves, args.pretrain))) > 1:
        raise InputError("--video, --curves and --pretrain: give one of them")
    if args.pretrain:
        from .pretrain import run_pretrain

        return run_pretrain(args)
    if args.video:
        from .video import run_video_demo

        return run_video_demo(args)
    if args.curves:
        from .curves import run_curves

        return run_curves(args)
    from .image import run_demo

    return run_demo(args)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the project's main job: the paper's Tables 1 and 2 at toy scale")
    p.add_argument("--preset", default="demo", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--out", default=None, help="run directory (default runs/demo; runs/demo-seedN for --seed N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of every training run")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    p.add_argument("--video", action="store_true", help="the video demo (per-frame VoCo), after the image demo")
    p.add_argument(
        "--curves",
        action="store_true",
        help="learning curves instead: per-benchmark accuracy on a held-out slice every few steps (DIR/curves)",
    )
    p.add_argument(
        "--pretrain",
        action="store_true",
        help="train the tower and base the demo starts from (shipped in voco_llama/demo/pretrained) into --out",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="train the tower and base in this run instead of starting from the shipped ones",
    )
    p.set_defaults(func=_demo_command)
