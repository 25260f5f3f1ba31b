"""`voco convert`: an original-LLaVA, llava-hf or VoCo-LLaMA reference checkpoint -> a VoCo model
(core/convert.py)."""

from __future__ import annotations

from ..core.errors import InputError, positive_int


def _convert_command(args) -> int:
    from ..core.convert import convert_original, from_llava_hf, from_voco_llama_reference
    from ..core.files import check_folder_target
    from ..core.presets import save_bundle

    check_folder_target(args.out, args.overwrite)
    if args.voco_llama_reference:
        for flag, value in (("--projector", args.projector), ("--position-layout", args.position_layout)):
            if value is not None:
                raise InputError(f"{flag} does not apply to --voco-llama-reference (its layout is the reference's)")
        bundle = from_voco_llama_reference(args.voco_llama_reference, args.vision_tower, args.num_voco or 2)
        save_bundle(args.out, *bundle)
        config = bundle[0].config
        print(
            f"{args.out}: converted, reference layout, <voco> id {config.voco_token_id} (its trained row), "
            f"K={config.num_voco}"
        )
        return 0
    num_voco, layout = args.num_voco or 1, args.position_layout or "compact"
    if args.llava_hf:
        bundle = from_llava_hf(args.llava_hf, num_voco, layout)
    else:
        if not args.vision_tower:
            raise InputError("--vision-tower is required with --llava (the original layout ships no tower)")
        bundle = convert_original(args.llava, args.vision_tower, args.projector, num_voco, layout)
    save_bundle(args.out, *bundle)
    print(f"{args.out}: converted, <voco> id {bundle[0].config.voco_token_id}, K={bundle[0].config.num_voco}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        description="Convert a local LLaVA checkpoint folder into a VoCo model: the tokenizer gains <voco>, "
        "its embedding starts at the mean of the others. A checkpoint trained with the VoCo-LLaMA reference code "
        "keeps its trained <voco> and runs in the reference's layout.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--llava", metavar="DIR", help="original LLaVA layout (model.mm_projector.* keys)")
    source.add_argument(
        "--llava-hf", metavar="DIR", help="HF layout (LlavaForConditionalGeneration, with its tokenizer and processor)"
    )
    source.add_argument(
        "--voco-llama-reference",
        metavar="DIR",
        help="a checkpoint trained with the VoCo-LLaMA reference code (LlavaLlamaForCausalLM with a <voco> row); "
        "it keeps the reference's layout and rule",
    )
    p.add_argument(
        "--vision-tower",
        metavar="DIR",
        help="CLIP vision tower folder (with --llava; with --voco-llama-reference, default: config's mm_vision_tower)",
    )
    p.add_argument("--projector", metavar="FILE", help="a separate mm_projector.bin (with --llava)")
    p.add_argument("--out", required=True, help="folder to save the VoCo model in (must be empty or new)")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    p.add_argument(
        "--num-voco",
        type=positive_int,
        default=None,
        help="K: <voco> tokens per image (default: 1; 2 with --voco-llama-reference)",
    )
    p.add_argument(
        "--position-layout",
        choices=["compact", "natural"],
        default=None,
        help="position ids (default: compact; not with --voco-llama-reference, whose layout is fixed)",
    )
    p.set_defaults(func=_convert_command)
