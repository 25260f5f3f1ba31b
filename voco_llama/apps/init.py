"""`voco init`: a randomly initialised model from a preset (nothing is downloaded)."""

from __future__ import annotations


def _init_command(args) -> int:
    from ..core.presets import build_model, save_bundle

    model, tokenizer, image_processor = build_model(
        args.preset, seed=args.seed, num_voco=args.num_voco, position_layout=args.position_layout
    )
    save_bundle(args.out, model, tokenizer, image_processor)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"{args.out}: preset {args.preset}, {n:,} parameters, K={model.config.num_voco}, "
        f"{model.config.num_vision_tokens} vision tokens per image, layout {model.config.position_layout}"
    )
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("init", help="a randomly initialised model from a preset")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--out", required=True)
    p.add_argument("--num-voco", type=int, default=1)
    p.add_argument("--position-layout", choices=["compact", "natural"], default="compact")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_init_command)
