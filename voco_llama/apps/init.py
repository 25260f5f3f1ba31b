"""`voco init`: a randomly initialised model from a preset (nothing is downloaded)."""

from __future__ import annotations

from ..core.errors import positive_int
from ..core.presets import PRESETS


def _init_command(args) -> int:
    from ..core.files import check_folder_target
    from ..core.presets import build_model, save_bundle

    check_folder_target(args.out, args.overwrite)
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
    p = subparsers.add_parser(
        "init", description="Build a randomly initialised VoCo model from a preset and save it (no download)."
    )
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset")
    p.add_argument("--out", required=True, help="folder to save the model in (must be empty or new)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p.add_argument("--num-voco", type=positive_int, default=1, help="K: <voco> tokens per image")
    p.add_argument("--position-layout", choices=["compact", "natural"], default="compact", help="position ids")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.set_defaults(func=_init_command)
