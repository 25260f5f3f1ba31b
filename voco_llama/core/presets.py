"""Named model presets, and building, saving and loading a model with its tokenizer and image
processor as one directory (what `voco init`, `voco ask` and Trainer outputs use).

Presets are randomly initialised, built from transformers' own config classes: nothing is ever
downloaded. `tiny` exists so every code path runs in seconds on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .conversation import IMAGE_PLACEHOLDER, TEMPLATES, VOCO_PLACEHOLDER
from .errors import InputError

# torch, transformers and the model classes are imported where a model is built or loaded, so the
# preset names (`voco init --help`, `voco bench --help`) cost no torch import


@dataclass(frozen=True)
class Preset:
    name: str
    vision: str = "clip"  # "clip" or "siglip"
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab_size: int = 512
    num_voco: int = 1
    num_voco_choices: tuple[int, ...] | None = None  # the K a model trained for several accepts (tests, benches)
    position_layout: str = "compact"
    attention_rule: str = "voco"
    compressor: str = "voco"  # baselines ("avgpool", "qformer") imply num_voco=0 and causal attention
    voco_layout: str = "llava"  # "reference": the reference code's layout (implies natural positions)
    # std of the random init (transformers' initializer_range, 0.02 by default). Models trained from
    # scratch on CPU need a larger one: at 0.02 a 128-wide LLM's attention starts uniform and takes
    # thousands of steps to learn to look anything up in the image.
    init_std: float | None = None
    # the tower layer the projector reads (LLaVA's -2, the penultimate); a tower trained for the task
    # with few layers reads its last (-1): with 2 layers, -2 would leave the second one unused
    vision_feature_layer: int = -2


def llava15_geometry(hidden: int = 512, layers: int = 4) -> Preset:
    """LLaVA-1.5's shape where it matters for cost ratios (576 vision tokens, MHA, LLaMA's MLP ratio), at
    CPU width and depth; what `voco bench` measures."""
    heads = max(1, hidden // 64)
    return Preset(
        "llava15-geometry",
        vision="clip",
        image_size=336,  # CLIP ViT-L/14-336: 24 x 24 = 576 patch tokens
        patch_size=14,
        vision_hidden=max(16, hidden // 4),  # ViT-L is ~4.5% of Vicuna-7B's parameters; this is ~6%
        vision_layers=layers,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=heads,  # LLaMA-7B is MHA: 32 KV heads
        intermediate=int(hidden * 11008 / 4096),
        vocab_size=512,
        num_voco=1,
    )


PRESETS = {
    "tiny": Preset("tiny"),
    "tiny-siglip": Preset("tiny-siglip", vision="siglip"),
    "llava15-geometry": llava15_geometry(),
}

# What a tiny tokenizer is trained on when no corpus is given: the templates and everyday words.
_DEFAULT_CORPUS = [t.system + " USER: ASSISTANT: </s>" for t in TEMPLATES.values()] + [
    "What is in the image? Describe the image briefly. Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly. A. B. C. D. yes no",
    "a red green blue yellow purple orange black white circle square triangle star cross left right top bottom",
    "one two three four five how many is there which colour color shape where the of and in on with",
]


def image_processor_for(vision: str, image_size: int):
    """The HF image processor of the tower (PIL backend: torchvision cannot sit beside CPU torch)."""
    if vision == "clip":
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    from transformers import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})


def build_model(preset: str | Preset = "tiny", tokenizer=None, seed: int = 0, **overrides):
    """A randomly initialised model, its tokenizer and image processor."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, SiglipVisionConfig

    from .modeling import VoCoLlavaConfig, VoCoLlavaForConditionalGeneration
    from .processing import reference_head_ids
    from .tokenizer import build_tokenizer

    p = PRESETS[preset] if isinstance(preset, str) else preset
    if overrides:
        p = Preset(**{**p.__dict__, **overrides})
    if p.compressor != "voco":
        p = Preset(**{**p.__dict__, "num_voco": 0, "attention_rule": "causal"})
    if p.voco_layout == "reference":
        p = Preset(**{**p.__dict__, "position_layout": "natural"})
    tokenizer = tokenizer or build_tokenizer(_DEFAULT_CORPUS * 4, vocab_size=p.vocab_size)
    vision_kwargs = dict(
        hidden_size=p.vision_hidden,
        intermediate_size=p.vision_hidden * 4,
        num_hidden_layers=p.vision_layers,
        num_attention_heads=max(1, p.vision_hidden // 16),
        image_size=p.image_size,
        patch_size=p.patch_size,
    )
    if p.init_std is not None:
        vision_kwargs["initializer_range"] = p.init_std
    vision_config = CLIPVisionConfig(**vision_kwargs) if p.vision == "clip" else SiglipVisionConfig(**vision_kwargs)
    text_config = LlamaConfig(
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **({"initializer_range": p.init_std} if p.init_std is not None else {}),
    )
    image_id, voco_id = (tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER))
    reference = p.voco_layout == "reference"
    config = VoCoLlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_id,
        voco_token_id=voco_id,
        voco_layout=p.voco_layout,
        voco_head_ids=reference_head_ids(tokenizer, image_id, voco_id) if reference else None,
        image_seq_length=(p.image_size // p.patch_size) ** 2,
        vision_feature_select_strategy="default" if p.vision == "clip" else "full",
        vision_feature_layer=p.vision_feature_layer,
        num_voco=p.num_voco,
        num_voco_choices=list(p.num_voco_choices) if p.num_voco_choices is not None else None,
        position_layout=p.position_layout,
        attention_rule=p.attention_rule,
        compressor=p.compressor,
    )
    torch.manual_seed(seed)
    model = VoCoLlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, image_processor_for(p.vision, p.image_size)


def save_bundle(directory: str | Path, model, tokenizer, image_processor) -> Path:
    directory = Path(directory)
    try:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        image_processor.save_pretrained(directory)
    except OSError as err:  # a read-only place (which os.access cannot tell root), a full disk
        raise InputError(f"{directory}: cannot write ({err.strerror or err})") from None
    return directory


def local_dir(directory: str | Path, what: str) -> Path:
    """A folder that must exist here: a typo must not become a hub lookup (loads pass local_files_only)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: {what} folder not found")
    return directory


def read_config(directory: Path) -> dict:
    """config.json of a checkpoint folder, as JSON."""
    path = directory / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{directory}: not a model folder (no config.json)") from None
    except (OSError, UnicodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: unreadable config ({err})") from None


def load_tokenizer(directory: Path):
    """The tokenizer saved in `directory`; a folder without one (a bare `model.save_pretrained`)
    is named as such instead of failing deep inside a tokenizer backend."""
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise InputError(
            f"{directory}: no tokenizer (tokenizer.json or tokenizer.model); save the processor or "
            "tokenizer into the folder beside the model (processor.save_pretrained(DIR))"
        )
    from transformers import AutoTokenizer

    from . import modeling  # noqa: F401  (registers "voco_llava" with AutoConfig: no "model of type" warning)

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"{directory}: cannot load its tokenizer ({err.__class__.__name__}: {err})") from None


def load_image_processor(directory: Path):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as err:
        raise InputError(
            f"{directory}: no usable image processor (preprocessor_config.json): {err.__class__.__name__}"
        ) from None


def load_bundle(
    directory: str | Path, dtype=None, device=None, attn_implementation: str | None = None, **config_overrides
):
    """(model, tokenizer, image_processor) from a directory written by `save_bundle` or Trainer.
    `config_overrides` change the config before the weights load (new modules start fresh)."""
    import torch

    from .modeling import VoCoLlavaConfig, VoCoLlavaForConditionalGeneration

    directory = local_dir(directory, "model")
    model_type = read_config(directory).get("model_type")
    if model_type == "llava":
        raise InputError(
            f"{directory}: an llava-hf checkpoint, not a VoCo model; convert it first: "
            f"voco convert --llava-hf {directory} --out DIR"
        )
    if model_type != "voco_llava":
        raise InputError(f"{directory}: not a VoCo model (model_type {model_type!r})")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if config_overrides:
        config = VoCoLlavaConfig.from_pretrained(directory, local_files_only=True)
        for key, value in config_overrides.items():
            setattr(config, key, value)
        kwargs["config"] = config
    tokenizer, image_processor = load_tokenizer(directory), load_image_processor(directory)
    model = VoCoLlavaForConditionalGeneration.from_pretrained(
        directory, dtype=dtype or torch.float32, local_files_only=True, **kwargs
    )
    return model.to(device or "cpu").eval(), tokenizer, image_processor
