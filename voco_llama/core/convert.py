"""Bringing existing LLaVA checkpoints in: the llava-hf layout and the original LLaVA layout.

Either way the tokenizer gains `<voco>` (and `<image>` if it lacks one), the embedding matrices
grow, and the new rows start at the mean of the existing rows, as the paper initialises `<voco>`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, CLIPVisionModel, LlamaConfig

from .conversation import IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER
from .errors import InputError
from .modeling import VoCoLlavaConfig, VoCoLlavaForConditionalGeneration
from .presets import load_image_processor, load_tokenizer, local_dir, read_config

_NOT_CONFIG = ("model_type", "architectures", "transformers_version", "auto_map", "_name_or_path")


def add_voco_token(model: VoCoLlavaForConditionalGeneration, tokenizer) -> None:
    """Add the special tokens the model needs, grow embeddings, start new rows at the mean."""
    new = [t for t in (IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER) if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in new] + [tokenizer.convert_tokens_to_ids(VOCO_PLACEHOLDER)]
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    keep = torch.ones(model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    keep[new_ids] = False
    keep[len(tokenizer) :] = False  # padding rows some checkpoints carry beyond the tokenizer
    with torch.no_grad():
        for matrix in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
            matrix[sorted(set(new_ids))] = matrix[keep].mean(dim=0, dtype=torch.float32).to(matrix.dtype)
    model.config.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    model.config.voco_token_id = tokenizer.convert_tokens_to_ids(VOCO_PLACEHOLDER)
    model.config.text_config.vocab_size = model.get_input_embeddings().weight.shape[0]


def from_llava_hf(directory: str | Path, num_voco: int = 1, position_layout: str = "compact", dtype=None):
    """Our model from an HF-format LLaVA checkpoint folder (LlavaForConditionalGeneration)."""
    directory = local_dir(directory, "llava-hf checkpoint")
    model_type = read_config(directory).get("model_type")
    if model_type not in ("llava", "voco_llava"):
        raise InputError(f"{directory}: not an HF LLaVA checkpoint (model_type {model_type!r})")
    tokenizer, image_processor = load_tokenizer(directory), load_image_processor(directory)
    _weight_files(directory)
    llava_config = AutoConfig.from_pretrained(directory, local_files_only=True)
    fields = {k: v for k, v in llava_config.to_dict().items() if k not in _NOT_CONFIG}
    fields.update(num_voco=num_voco, position_layout=position_layout)
    config = VoCoLlavaConfig(**fields)
    model = VoCoLlavaForConditionalGeneration.from_pretrained(
        directory, config=config, dtype=dtype or torch.float32, local_files_only=True
    )
    add_voco_token(model, tokenizer)
    return model.eval(), tokenizer, image_processor


def _weight_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not files:
        raise InputError(f"{directory}: no *.safetensors or pytorch_model*.bin weights")
    return files


def _load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    state = {}
    for f in _weight_files(directory):
        state.update(
            load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu", weights_only=True)
        )
    return state


def _rename_original(key: str) -> str | None:
    """Original LLaVA key -> ours (as transformers' convert_llava_weights_to_hf.py maps them)."""
    for old, new in (
        ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
        ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
        ("model.vision_tower.vision_tower.", "model.vision_tower."),
        ("model.", "model.language_model."),
        ("lm_head.", "lm_head."),
    ):
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def convert_original(
    llava_dir: str | Path,
    vision_tower_dir: str | Path,
    projector: str | Path | None = None,
    num_voco: int = 1,
    position_layout: str = "compact",
):
    """Our model from an original-LLaVA-layout checkpoint (Llama weights with `model.mm_projector.*`,
    config with `mm_*` keys) plus its CLIP vision tower; `projector` adds a separate
    `mm_projector.bin` (a stage-1 adapter) when the checkpoint has none."""
    llava_dir = local_dir(llava_dir, "LLaVA checkpoint")
    vision_tower_dir = local_dir(vision_tower_dir, "vision tower")
    if projector is not None and not Path(projector).is_file():
        raise InputError(f"{projector}: projector file not found")
    raw = read_config(llava_dir)
    if raw.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise InputError(f"{llava_dir / 'config.json'}: projector {raw['mm_projector_type']!r} is not mlp2x_gelu")
    text_fields = {k: v for k, v in raw.items() if not k.startswith("mm_") and k in LlamaConfig.__dataclass_fields__}
    text_config = LlamaConfig(**text_fields)
    tokenizer, image_processor = load_tokenizer(llava_dir), load_image_processor(vision_tower_dir)
    read_config(vision_tower_dir)
    tower = CLIPVisionModel.from_pretrained(vision_tower_dir, dtype=torch.float32, local_files_only=True)
    select = raw.get("mm_vision_select_feature", "patch")
    config = VoCoLlavaConfig(
        vision_config=tower.config,
        text_config=text_config,
        image_token_index=0,  # both ids are set by add_voco_token once the tokenizer has them
        voco_token_id=0,
        vision_feature_layer=raw.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default" if select == "patch" else "full",
        image_seq_length=(tower.config.image_size // tower.config.patch_size) ** 2,
        num_voco=num_voco,
        position_layout=position_layout,
    )
    model = VoCoLlavaForConditionalGeneration(config)
    state = _load_state_dict(llava_dir)
    if projector is not None:
        state.update(torch.load(projector, map_location="cpu", weights_only=True))
    ours = {new: value for key, value in state.items() if (new := _rename_original(key))}
    ours.update({f"model.vision_tower.{k}": v for k, v in tower.state_dict().items()})
    if "lm_head.weight" not in ours and text_config.tie_word_embeddings:
        ours["lm_head.weight"] = ours["model.language_model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise InputError(f"{llava_dir}: weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    add_voco_token(model, tokenizer)
    return model.eval(), tokenizer, image_processor
