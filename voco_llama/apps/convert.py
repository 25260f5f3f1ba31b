"""`voco convert`: an original-LLaVA or llava-hf checkpoint -> a VoCo model (core/convert.py)."""

from __future__ import annotations

from ..core.errors import InputError, positive_int


def _convert_command(args) -> int:
    from ..core.convert import convert_original, from_llava_hf
    from ..core.files import check_folder_target
    from ..core.presets import save_bundle

    check_folder_target(args.out, args.overwrite)
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
    p = subparsers.add_parser(
        "convert",
        description="Convert a local LLaVA checkpoint folder into a VoCo model: the tokenizer gains <voco>, "
        "its embedding starts at the mean of the others.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--llava", metavar="DIR", help="original LLaVA layout (model.mm_projector.* keys)")
    source.add_argument(
        "--llava-hf", metavar="DIR", help="HF layout (LlavaForConditionalGeneration, with its tokenizer and processor)"
    )
    p.add_argument("--vision-tower", metavar="DIR", help="CLIP vision tower folder (with --llava)")
    p.add_argument("--projector", metavar="FILE", help="a separate mm_projector.bin (with --llava)")
    p.add_argument("--out", required=True, help="folder to save the VoCo model in (must be empty or new)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p.add_argument("--num-voco", type=positive_int, default=1, help="K: <voco> tokens per image")
    p.add_argument("--position-layout", choices=["compact", "natural"], default="compact", help="position ids")
    p.set_defaults(func=_convert_command)
