"""`voco convert`: an original-LLaVA or llava-hf checkpoint -> a VoCo model (core/convert.py)."""

from __future__ import annotations

from ..core.errors import InputError


def _convert_command(args) -> int:
    from ..core.convert import convert_original, from_llava_hf
    from ..core.presets import save_bundle

    if args.llava_hf:
        bundle = from_llava_hf(args.llava_hf, args.num_voco, args.position_layout)
    else:
        if not args.vision_tower:
            raise InputError("--vision-tower is required with --llava (the original layout ships no tower)")
        bundle = convert_original(args.llava, args.vision_tower, args.projector, args.num_voco, args.position_layout)
    save_bundle(args.out, *bundle)
    print(f"{args.out}: converted, <voco> id {bundle[0].config.voco_token_id}, K={bundle[0].config.num_voco}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("convert", help="an original-LLaVA or llava-hf checkpoint -> a VoCo model")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--llava", help="original LLaVA layout (model.mm_projector.* keys)")
    source.add_argument("--llava-hf", help="HF layout (LlavaForConditionalGeneration)")
    p.add_argument("--vision-tower", help="CLIP vision tower directory (with --llava)")
    p.add_argument("--projector", help="a separate mm_projector.bin (with --llava)")
    p.add_argument("--out", required=True)
    p.add_argument("--num-voco", type=int, default=1)
    p.add_argument("--position-layout", choices=["compact", "natural"], default="compact")
    p.set_defaults(func=_convert_command)
