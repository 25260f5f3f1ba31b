"""Bringing existing checkpoints in: the llava-hf layout, the original LLaVA layout, and
checkpoints trained with the VoCo-LLaMA reference code (github.com/Yxxxb/VoCo-LLaMA).

LLaVA checkpoints: the tokenizer gains `<voco>` (and `<image>` if it lacks one), the embedding
matrices grow, and the new rows start at the mean of the existing rows, as the paper initialises
`<voco>`. A reference checkpoint already has its trained `<voco>` row, kept as it is; it runs under
the reference code's layout (`voco_layout="reference"`, attention.py), which it was trained for.
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
from .processing import reference_head_ids

_NOT_CONFIG = ("model_type", "architectures", "transformers_version", "auto_map", "_name_or_path")


def add_voco_token(model: VoCoLlavaForConditionalGeneration, tokenizer, keep_voco: bool = False) -> None:
    """Add the special tokens the model needs, grow embeddings, start new rows at the mean
    (`<voco>`'s too, unless `keep_voco`: a row trained by the reference code)."""
    new = [t for t in (IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER) if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in new]
    if not keep_voco:
        new_ids.append(tokenizer.convert_tokens_to_ids(VOCO_PLACEHOLDER))
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    keep = torch.ones(model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    keep[new_ids] = False
    keep[len(tokenizer) :] = False  # padding rows some checkpoints carry beyond the tokenizer
    with torch.no_grad():
        for matrix in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
            if new_ids:
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
    model, tokenizer, image_processor = _original_model(
        llava_dir, vision_tower_dir, projector, num_voco=num_voco, position_layout=position_layout
    )
    add_voco_token(model, tokenizer)
    return model.eval(), tokenizer, image_processor


# config.json of a checkpoint the reference code saves: its LlavaConfig (llava/model/language_model/
# llava_llama_1stg.py, model_type "llava_llama") of a LlavaLlamaForCausalLM
REFERENCE_MODEL_TYPE, REFERENCE_ARCHITECTURE = "llava_llama", "LlavaLlamaForCausalLM"


def from_voco_llama_reference(directory: str | Path, vision_tower: str | Path | None = None, num_voco: int = 2):
    """Our model from a checkpoint folder trained with the VoCo-LLaMA reference code: LLaVA's
    original layout (LlavaLlamaForCausalLM, `model.mm_projector.*`), a tokenizer with its trained
    `<voco>` row, K=2 (hard-coded there: llava/train/train_compress.py `preprocess_v1`). The CLIP
    tower comes from `vision_tower`, else from config.json's `mm_vision_tower` when that is a local
    folder (the reference code loads it from there too, llava/model/multimodal_encoder/builder.py)."""
    directory = local_dir(directory, "VoCo-LLaMA reference checkpoint")
    raw = read_config(directory)
    if raw.get("model_type") != REFERENCE_MODEL_TYPE:
        raise InputError(
            f"{directory}: not a VoCo-LLaMA reference checkpoint (config.json model_type "
            f"{raw.get('model_type')!r}; its {REFERENCE_ARCHITECTURE} saves {REFERENCE_MODEL_TYPE!r})"
        )
    tokenizer = load_tokenizer(directory)
    if VOCO_PLACEHOLDER not in tokenizer.get_vocab():
        raise InputError(
            f"{directory}: its tokenizer has no {VOCO_PLACEHOLDER}: not trained with the VoCo-LLaMA reference code "
            "(an original LLaVA checkpoint converts with --llava)"
        )
    if raw.get("mm_use_im_start_end") or raw.get("mm_patch_merge_type", "flat") != "flat":
        raise InputError(
            f"{directory / 'config.json'}: image start/end tokens or a patch merge the reference never trains"
        )
    if vision_tower is None:
        named = raw.get("mm_vision_tower")
        if not named or not Path(named).is_dir():
            raise InputError(
                f"{directory / 'config.json'}: mm_vision_tower {named!r} is not a local folder; "
                "give the CLIP tower with --vision-tower DIR"
            )
        vision_tower = named
    vision_tower = local_dir(vision_tower, "vision tower")
    model, tokenizer, image_processor = _original_model(
        directory, vision_tower, None, tokenizer=tokenizer, num_voco=num_voco, position_layout="natural"
    )
    add_voco_token(model, tokenizer, keep_voco=True)
    set_voco_layout(model, tokenizer, "reference")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer, image_processor


def set_voco_layout(model, tokenizer, voco_layout: str, position_layout: str | None = None) -> None:
    """Run `model` in `voco_layout` from now on: "reference" (natural positions, the head read from
    `tokenizer`) or "llava" (`position_layout`, by default compact)."""
    config = model.config
    if voco_layout == "reference":
        config.position_layout = "natural"
        config.voco_head_ids = reference_head_ids(tokenizer, config.image_token_id, config.voco_token_id)
    else:
        config.position_layout = position_layout or "compact"
        config.voco_head_ids = None
    config.voco_layout = voco_layout
    config.check_compressor()


def _original_model(
    llava_dir: Path, vision_tower_dir: Path, projector, tokenizer=None, num_voco: int = 1, position_layout="compact"
):
    """An original-layout checkpoint's weights in our model, before its tokens are settled."""
    raw = read_config(llava_dir)
    if raw.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise InputError(f"{llava_dir / 'config.json'}: projector {raw['mm_projector_type']!r} is not mlp2x_gelu")
    text_fields = {k: v for k, v in raw.items() if not k.startswith("mm_") and k in LlamaConfig.__dataclass_fields__}
    text_config = LlamaConfig(**text_fields)
    tokenizer, image_processor = tokenizer or load_tokenizer(llava_dir), load_image_processor(vision_tower_dir)
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
    return model, tokenizer, image_processor
