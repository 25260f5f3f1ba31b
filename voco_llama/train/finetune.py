"""`voco train`: VoCo visual instruction tuning on `transformers.Trainer`, with LLaVA-1.5's flags.

    voco train --model_name_or_path MODEL --version v1 --data_path llava_v1_5_mix665k.json \\
        --image_folder data --num_voco 1 --output_dir runs/voco ...   (see scripts/finetune_voco_llama.sh)

Every flag of LLaVA-1.5's `finetune.sh` is accepted with its meaning (the TrainingArguments ones
are Trainer's own, so DeepSpeed ZeRO-2/3, FSDP, gradient accumulation, bf16/tf32, gradient
checkpointing, checkpointing, `--resume_from_checkpoint`, logging and progress bars all come from
Trainer; `--evaluation_strategy` is accepted as the old name of `--eval_strategy`). Ours:
`--num_voco K`, `--num_voco_choices 1,2,4,8,16` (one model for several K: each record's K drawn
uniformly from the set, see `train.data.draw_num_voco`), `--compressor voco`, `--position_layout`,
`--attention_rule voco|causal` (causal trains the full-token upper-bound model),
`--voco_layout llava|reference` (reference: the VoCo-LLaMA reference code's layout and prompts, so
its checkpoints train on; answers and their `</s>` are the only labels either way),
`--freeze_vision_tower` (default True),
`--skip_bad_samples` (with `--max_bad_fraction`, default 0.05), `--seed`.

The starting model is one of:
  (a) one of our saved models (config model_type "voco_llava"): loaded as is;
  (b) an HF LLaVA checkpoint (model_type "llava"): converted (`convert.from_llava_hf`);
  (c) LLaVA-style parts: a Llama causal LM (`--model_name_or_path`, with its tokenizer), a CLIP
      vision tower (`--vision_tower`, with its image processor) and a stage-1 projector
      (`--pretrain_mm_mlp_adapter`, `mm_projector.bin`): assembled by `convert.convert_original`
      (a plain Llama checkpoint is the original LLaVA layout without projector keys);
  (d) with `--voco_layout reference`, a checkpoint of the VoCo-LLaMA reference code (model_type
      "llava_llama", a `<voco>` row; `--vision_tower`, else its local mm_vision_tower):
      `convert.from_voco_llama_reference`.

The data is validated as `voco data check` does (every image opened) before training starts: bad
records stop the run with one line and exit code 2, unless `--skip_bad_samples` (then the
dropped records are counted per reason, and more than `--max_bad_fraction` of them still stops
it). The end result is a bundle (model + tokenizer + image processor) in `--output_dir` that
`voco ask --model` and `presets.load_bundle` open directly; checkpoints carry the image processor
too, and a rerun with checkpoints in `--output_dir` resumes from the latest one (as LLaVA's
train.py does). A folder holding a finished model (its config.json) is refused before any work
unless `--overwrite_output_dir` (train afresh, checkpoints not resumed) or `--resume_from_checkpoint`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import HfArgumentParser, Trainer, TrainerCallback
from transformers import TrainingArguments as HfTrainingArguments

from ..core.errors import InputError
from ..core.files import check_folder_target
from ..core.modeling import COMPRESSORS

VERSIONS = {"v1": "vicuna_v1", "vicuna_v1": "vicuna_v1", "plain": "plain"}


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "our saved model, an HF LLaVA checkpoint, or a Llama LM (with --vision_tower)"}
    )
    version: str = field(default="v1", metadata={"help": "conversation template: v1 (vicuna_v1) or plain"})
    vision_tower: str | None = field(default=None, metadata={"help": "CLIP vision tower dir (parts start)"})
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={"help": "stage-1 mm_projector.bin"})
    mm_projector_type: str = field(default="mlp2x_gelu", metadata={"help": "only mlp2x_gelu"})
    mm_vision_select_layer: int = field(default=-2, metadata={"help": "vision feature layer (parts start)"})
    mm_vision_select_feature: str = field(default="patch", metadata={"help": "patch (drop CLS) or cls_patch"})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "must be False (not supported)"})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "must be False (not supported)"})
    num_voco: int | None = field(
        default=None,
        metadata={"help": "K VoCo tokens per image (default: model's, else 1); with --num_voco_choices, the default K"},
    )
    num_voco_choices: str | None = field(
        default=None,
        metadata={
            "help": "train one model for several K, e.g. 1,2,4,8,16: each record's K is drawn uniformly from the "
            "set, once per record, from --seed (the same in every epoch, run and resume); the model then "
            "accepts any K of the set (default: the start model's set, else one K)"
        },
    )
    compressor: str = field(default="voco", metadata={"help": "voco, or a 1-token baseline: avgpool, qformer"})
    voco_layout: str | None = field(
        default=None,
        metadata={
            "help": "llava (ours) or reference (the VoCo-LLaMA reference code's: image first, its prompt, "
            "natural positions; continues its checkpoints); default: the start model's, else llava"
        },
    )
    position_layout: str | None = field(
        default=None, metadata={"help": "compact or natural (default: model's, else compact)"}
    )
    attention_rule: str = field(
        default="voco", metadata={"help": "voco, or causal to train the full-token upper-bound model"}
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "keep the vision tower frozen"})


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "LLaVA instruction JSON (llava_v1_5_mix665k.json schema)"})
    image_folder: str | None = field(default=None, metadata={"help": "folder the image paths are relative to"})
    image_aspect_ratio: str = field(default="pad", metadata={"help": "pad, resize, square or original"})
    video_folder: str | None = field(
        default=None, metadata={"help": "folder video paths are relative to (default: image_folder)"}
    )
    num_frames: int = field(default=8, metadata={"help": "frames sampled per video, each its own compression group"})
    lazy_preprocess: bool = field(default=True, metadata={"help": "accepted for LLaVA compatibility (always lazy)"})
    is_multimodal: bool = field(default=True, metadata={"help": "accepted for LLaVA compatibility"})
    skip_bad_samples: bool = field(default=False, metadata={"help": "drop bad records (counted) instead of refusing"})
    max_bad_fraction: float = field(
        default=0.05, metadata={"help": "with --skip_bad_samples: refuse when more than this share of records is bad"}
    )


@dataclass
class TrainingArguments(HfTrainingArguments):
    model_max_length: int = field(default=2048, metadata={"help": "longest training row, vision tokens included"})
    group_by_modality_length: bool = field(
        default=False, metadata={"help": "LLaVA's sampler: batches all-image or all-text, of similar lengths"}
    )
    evaluation_strategy: str | None = field(default=None, metadata={"help": "old name of --eval_strategy"})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "old name: warmup over this fraction of the steps (--warmup_steps < 1)"}
    )
    # Our batches carry pixel_values/labels, which the model takes through **kwargs.
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep False (as LLaVA does)"})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "replace the trained model in --output_dir and start afresh (its checkpoints are not resumed)"
        },
    )

    def __post_init__(self):
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise InputError(f"--learning_rate {self.learning_rate:g}: expected a finite number >= 0")
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise InputError(f"--warmup_ratio {self.warmup_ratio}: expected a fraction in [0, 1)")
            if self.warmup_steps:
                raise InputError("give --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_tf32_available

        if self.tf32 and not is_torch_tf32_available():
            _warn("--tf32 needs an Ampere or newer CUDA GPU; none here, so it is ignored")
            self.tf32 = None
        if self.bf16 and not is_torch_bf16_gpu_available():
            _warn("--bf16 needs a bf16-capable GPU; none here, so training runs in fp32")
            self.bf16 = False
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
            # Without this, accelerate leaves CPU processes unconnected: each would train its own copy.
            _warn("several processes and no GPU: data-parallel training on CPU (--use_cpu True)")
            self.use_cpu = True
        if not torch.accelerator.is_available():
            self.dataloader_pin_memory = False  # nothing to pin for
        super().__post_init__()


def _warn(message: str) -> None:
    print(f"voco train: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# LLaVA's modality-grouped length sampler
# ----------------------------------------------------------------------------------------------


def _split_to_even_chunks(indices, lengths, num_chunks):
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    totals = [0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths, batch_size, world_size, generator=None):
    indices = torch.randperm(len(lengths), generator=generator)
    mega = world_size * batch_size
    megabatches = [indices[i : i + mega].tolist() for i in range(0, len(lengths), mega)]
    megabatches = [sorted(m, key=lambda i: lengths[i], reverse=True) for m in megabatches]
    megabatches = [_split_to_even_chunks(m, lengths, world_size) for m in megabatches]
    return [i for m in megabatches for batch in m for i in batch]


def modality_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    """LLaVA's `get_modality_length_grouped_indices`: lengths > 0 are image records, < 0 text-only.
    Every megabatch (world_size x batch_size consecutive indices) is one modality, except one
    final mixed megabatch made of the two modalities' leftovers. (LLaVA draws the in-modality
    permutations from the global RNG; here all draws use `generator`, so the order is reproducible.)"""
    assert all(n != 0 for n in lengths), "zero-length record"
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    mm_indices, mm_lengths = zip(*[(i, n) for i, n in enumerate(lengths) if n > 0])
    lang_indices, lang_lengths = zip(*[(i, -n) for i, n in enumerate(lengths) if n < 0])
    mm = [mm_indices[i] for i in length_grouped_indices(mm_lengths, batch_size, world_size, generator)]
    lang = [lang_indices[i] for i in length_grouped_indices(lang_lengths, batch_size, world_size, generator)]
    mega = world_size * batch_size
    mm_mega = [mm[i : i + mega] for i in range(0, len(mm), mega)]
    lang_mega = [lang[i : i + mega] for i in range(0, len(lang), mega)]
    additional = mm_mega[-1] + lang_mega[-1]
    megabatches = mm_mega[:-1] + lang_mega[:-1]
    order = torch.randperm(len(megabatches), generator=generator)
    megabatches = [megabatches[i] for i in order]
    if additional:
        megabatches.append(sorted(additional))
    return [i for m in megabatches for i in m]


class ModalityLengthGroupedSampler(Sampler):
    """Same order on every rank (seed + epoch), so accelerate's per-rank batch sharding sees one list."""

    def __init__(self, lengths: list[int], batch_size: int, world_size: int, seed: int = 0):
        self.lengths, self.batch_size, self.world_size, self.seed = list(lengths), batch_size, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, generator))


class VoCoTrainer(Trainer):
    def create_accelerator_and_postprocess(self) -> None:
        """accelerate (1.16) turns FSDP on only for GPU-type process groups: on CPU processes it drops
        the plugin without a word and wraps the model in plain DDP. FSDP2 itself shards over gloo, so
        give the plugin back to the shared accelerator state before the model is prepared."""
        super().create_accelerator_and_postprocess()
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled:
            if state.distributed_type != DistributedType.MULTI_CPU:
                raise InputError("--fsdp on CPU shards over several processes: launch with torchrun --nproc_per_node N")
            if self.args.fsdp_plugin_args["fsdp_version"] != 2:
                raise InputError("--fsdp on CPU processes needs FSDP2 (fsdp_config version 2)")
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            # both shared states, as accelerate does on GPUs (a later AcceleratorState() re-reads PartialState's)
            state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.is_fsdp_enabled = True

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(self.args, "group_by_modality_length", False) and hasattr(dataset, "modality_lengths"):
            # As LLaVA: one megabatch = the batches of all ranks and accumulation steps of one update.
            return ModalityLengthGroupedSampler(
                dataset.modality_lengths,
                batch_size=self.args.train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Trainer loads a checkpoint's file keys as they are, but save_pretrained writes LLaVA's
        legacy key layout (`language_model.model.*`, ...) that only from_pretrained maps back: with
        the stock loader a resumed run would silently keep its fresh weights. Load through
        from_pretrained, strictly. (DeepSpeed and FSDP resume through their own loaders.)"""
        model = model if model is not None else self.model
        folder = Path(resume_from_checkpoint)
        names = (
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        )
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or not any((folder / n).is_file() for n in names):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        unwrapped = self.accelerator.unwrap_model(model)
        dtype = next(unwrapped.parameters()).dtype
        loaded = type(unwrapped).from_pretrained(folder, config=unwrapped.config, dtype=dtype)
        unwrapped.load_state_dict(loaded.state_dict(), strict=True)


class SaveImageProcessor(TrainerCallback):
    """Checkpoints get the image processor too, so a checkpoint is a complete bundle."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self.image_processor.save_pretrained(folder)


# ----------------------------------------------------------------------------------------------
# The starting model
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _without_zero3_init():
    """Build the model whole: embedding resizing and the mean init of `<voco>` index weights,
    which ZeRO-3's partitioned-at-load parameters would not allow. DeepSpeed partitions later."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:  # pragma: no cover
        yield
        return
    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


def _model_type(directory: str) -> str | None:
    path = Path(directory) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: unreadable config ({err})") from None


def load_start_model(margs: ModelArguments):
    """(model, tokenizer, image_processor, how) for the three ways of starting; see the module doc."""
    from ..core.convert import (
        REFERENCE_MODEL_TYPE,
        convert_original,
        from_llava_hf,
        from_voco_llama_reference,
        set_voco_layout,
    )
    from ..core.presets import load_bundle

    if margs.mm_projector_type != "mlp2x_gelu":
        raise InputError(f"--mm_projector_type {margs.mm_projector_type}: only mlp2x_gelu is supported")
    if margs.mm_use_im_start_end or margs.mm_use_im_patch_token:
        raise InputError("--mm_use_im_start_end / --mm_use_im_patch_token must be False (LLaVA-1.5 uses neither)")
    if margs.compressor not in COMPRESSORS:
        raise InputError(f"--compressor {margs.compressor}: expected one of {COMPRESSORS}")
    if (
        margs.compressor == "voco"
        and margs.attention_rule == "voco"
        and margs.num_voco is not None
        and margs.num_voco < 1
    ):
        # K=0 is a plain LLaVA model: --attention_rule causal (the demos' base), not a VoCo one
        raise InputError(
            f"--num_voco {margs.num_voco}: must be at least 1 under --attention_rule voco (K VoCo tokens per image)"
        )
    if margs.compressor != "voco":
        margs.num_voco, margs.attention_rule = 0, "causal"  # the 1-token baselines attend causally
    if margs.attention_rule not in ("voco", "causal"):
        raise InputError(f"--attention_rule {margs.attention_rule}: expected voco or causal")
    if margs.position_layout not in (None, "compact", "natural"):
        raise InputError(f"--position_layout {margs.position_layout}: expected compact or natural")
    if margs.voco_layout not in (None, "llava", "reference"):
        raise InputError(f"--voco_layout {margs.voco_layout}: expected llava or reference")
    if margs.voco_layout == "reference":
        for flag, bad in (
            ("--compressor", margs.compressor != "voco"),
            ("--attention_rule", margs.attention_rule != "voco"),
            ("--position_layout", margs.position_layout not in (None, "natural")),
            ("--num_voco_choices", margs.num_voco_choices is not None),
        ):
            if bad:
                raise InputError(
                    f"{flag} does not go with --voco_layout reference (its rule, natural positions, one K)"
                )

    choices = parse_num_voco_choices(margs.num_voco_choices)
    if choices is not None and margs.compressor != "voco":
        raise InputError(f"--num_voco_choices: compressor {margs.compressor} has no VoCo tokens")
    if choices is not None and margs.num_voco is not None and margs.num_voco not in choices:
        raise InputError(f"--num_voco {margs.num_voco} is not in --num_voco_choices {margs.num_voco_choices}")
    source = margs.model_name_or_path
    model_type = _model_type(source)
    layout = margs.position_layout or "compact"
    # with a set, the default K is --num_voco, else the set's smallest (the most compressed)
    k = margs.num_voco if margs.num_voco is not None else choices[0] if choices else 1
    if model_type == "voco_llava":
        # A baseline compressor starts from the saved model's weights; its own layers start fresh.
        overrides = {"compressor": margs.compressor, "attention_rule": margs.attention_rule}
        if margs.num_voco is not None or choices is not None:
            overrides["num_voco"] = k
        if choices is not None or margs.compressor != "voco":
            overrides["num_voco_choices"] = choices
        else:
            _check_start_choices(source, margs.num_voco)
        if margs.position_layout:
            overrides["position_layout"] = margs.position_layout
        model, tokenizer, image_processor = load_bundle(source, **overrides)
        how = "our saved model"
    elif model_type == "llava":
        with _without_zero3_init():
            model, tokenizer, image_processor = from_llava_hf(source, k, layout)
        how = "HF LLaVA checkpoint"
    elif model_type == REFERENCE_MODEL_TYPE and margs.voco_layout == "reference":
        with _without_zero3_init():
            model, tokenizer, image_processor = from_voco_llama_reference(
                source, margs.vision_tower, margs.num_voco if margs.num_voco is not None else 2
            )
        how = "VoCo-LLaMA reference checkpoint"
    elif margs.vision_tower:
        if model_type is None:
            raise InputError(f"{source}: not a model directory (no config.json)")
        if not (Path(margs.vision_tower) / "config.json").is_file():
            raise InputError(f"{margs.vision_tower}: not a vision tower directory (no config.json)")
        if margs.pretrain_mm_mlp_adapter and not Path(margs.pretrain_mm_mlp_adapter).is_file():
            raise InputError(f"{margs.pretrain_mm_mlp_adapter}: projector file not found")
        with _without_zero3_init():
            model, tokenizer, image_processor = convert_original(
                source, margs.vision_tower, margs.pretrain_mm_mlp_adapter, k, layout
            )
        model.config.vision_feature_layer = margs.mm_vision_select_layer
        if margs.mm_vision_select_feature != "patch":
            model.config.vision_feature_select_strategy = "full"
        how = "LLaVA parts (LLM + vision tower + projector)"
    elif model_type is None:
        raise InputError(f"{source}: not a model directory (no config.json)")
    else:
        raise InputError(
            f"{source}: model_type {model_type!r} is neither voco_llava nor llava; "
            "starting from a language model needs --vision_tower and --pretrain_mm_mlp_adapter"
        )
    if model.config.compressor != margs.compressor:
        raise InputError(f"{source}: --compressor {margs.compressor} can only start from one of our saved models")
    if choices is not None:
        model.config.num_voco_choices = choices
    model.config.attention_rule = margs.attention_rule
    if margs.voco_layout is not None and margs.voco_layout != model.config.voco_layout:
        set_voco_layout(model, tokenizer, margs.voco_layout, margs.position_layout)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, image_processor, how


def parse_num_voco_choices(text: str | None) -> list[int] | None:
    """`--num_voco_choices 1,2,4,8,16` -> [1, 2, 4, 8, 16] (sorted, distinct); None stays None."""
    if text is None:
        return None
    try:
        choices = [int(part) for part in str(text).split(",")]
    except ValueError:
        choices = []
    if not choices or min(choices) < 1 or len(set(choices)) != len(choices):
        raise InputError(f"--num_voco_choices {text}: expected distinct positive integers separated by commas")
    return sorted(choices)


def _check_start_choices(source: str, num_voco: int | None) -> None:
    """Continuing a model trained with a set of K trains with that set again: --num_voco must be in it."""
    choices = json.loads((Path(source) / "config.json").read_text()).get("num_voco_choices")
    if choices is not None and num_voco is not None and num_voco not in choices:
        raise InputError(
            f"--num_voco {num_voco}: {source} was trained with K in {choices}; give --num_voco_choices "
            f"({num_voco} alone trains it at K={num_voco} only)"
        )


def freeze(model, vision_tower: bool) -> None:
    model.requires_grad_(True)
    if vision_tower:
        model.model.vision_tower.requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def parse(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), prog="voco train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # gradient_checkpointing is LLaVA's name; keep it quiet
        return parser.parse_args_into_dataclasses(args=argv)


def check_output_dir(targs: TrainingArguments) -> None:
    """Before any work: --output_dir can be written, and the trained model a finished run left in it
    is not replaced unless --overwrite_output_dir or --resume_from_checkpoint says so (a folder with
    checkpoints and no final model is an interrupted run: it resumes, as LLaVA's train.py does)."""
    check_folder_target(targs.output_dir)
    out = Path(targs.output_dir)
    if (out / "config.json").is_file() and not targs.overwrite_output_dir and targs.resume_from_checkpoint is None:
        raise InputError(
            f"{out}: holds a trained model; pass --overwrite_output_dir to replace it "
            "(or --resume_from_checkpoint CHECKPOINT to continue from one of its checkpoints)"
        )


def _latest_checkpoint(output_dir: str) -> str | None:
    found = [p for p in Path(output_dir).glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()]
    return str(max(found, key=lambda p: int(p.name.split("-")[1]))) if found else None


def _connect_deepspeed() -> None:
    """Hand DeepSpeed the process group Trainer made. On CPU (--use_cpu, which several processes
    need, see TrainingArguments) accelerate starts torch.distributed on gloo itself and never calls
    `deepspeed.init_distributed`; DeepSpeed's own world size then fails quietly to 1, so ZeRO-3's
    partitioned load and its batch-size check disagree with Trainer's world of N. (On GPUs
    accelerate has already initialised DeepSpeed's comm layer: nothing to do.)"""
    import deepspeed

    if torch.distributed.is_initialized() and not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend(), auto_mpi_discovery=False)


def _keep_used_conversions(model) -> None:
    """Save under the key names a plain run writes. save_pretrained undoes the key renamings the
    load recorded; the plain loader records only those that matched a checkpoint key, transformers'
    ZeRO-3 loader records all of them, LLaVA's legacy layout included, so a ZeRO-3 run would write
    `language_model.model.*` where a plain run writes `language_model.*`."""
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [c for c in conversions if c.was_used()]


def _numel(parameter) -> int:
    """ZeRO-3 loads each parameter partitioned (numel 0 here); ds_numel is its full size."""
    return getattr(parameter, "ds_numel", parameter.numel())


def run(argv: list[str]) -> int:
    """`voco train ARGV` (LLaVA's flags)."""
    return train(*parse(argv))


def train(margs: ModelArguments, dargs: DataArguments, targs: TrainingArguments) -> int:
    """One training run from the three argument dataclasses (what `voco train` parses its flags
    into); the demos call this directly."""
    from transformers import set_seed

    from .data import REASONS, VoCoDataCollator, VoCoInstructionDataset

    main_process = targs.process_index == 0
    check_output_dir(targs)
    template = VERSIONS.get(margs.version)
    if template is None:
        raise InputError(f"--version {margs.version}: expected one of {sorted(VERSIONS)}")
    if targs.deepspeed:
        try:
            import deepspeed  # noqa: F401  (an optional extra: pip install voco-llama[deepspeed])
        except ImportError:
            raise InputError("--deepspeed needs the deepspeed package (pip install 'voco-llama[deepspeed]')") from None
        if "LOCAL_RANK" not in os.environ:
            # else DeepSpeed looks for an MPI world (mpi4py) and fails with a traceback
            raise InputError(
                "--deepspeed needs a launcher, even for one process: torchrun --nproc_per_node N -m voco_llama.cli "
                "train ... (or deepspeed --num_gpus N --module voco_llama.cli train ...)"
            )
        _connect_deepspeed()
    if not 0 <= dargs.max_bad_fraction <= 1:
        raise InputError(f"--max_bad_fraction {dargs.max_bad_fraction}: expected a fraction in [0, 1]")
    set_seed(targs.seed)

    model, tokenizer, image_processor, how = load_start_model(margs)
    _keep_used_conversions(model)
    tokenizer.model_max_length = targs.model_max_length
    freeze(model, margs.freeze_vision_tower)

    try:
        dataset = VoCoInstructionDataset(
            dargs.data_path,
            tokenizer,
            image_processor,
            model.config,
            image_folder=dargs.image_folder,
            template=template,
            model_max_length=targs.model_max_length,
            image_aspect_ratio=dargs.image_aspect_ratio,
            skip_bad=True,
            open_images=True,
            video_folder=dargs.video_folder,
            num_frames=dargs.num_frames,
            seed=targs.data_seed if targs.data_seed is not None else targs.seed,
        )
    except ValueError as err:
        raise InputError(str(err).splitlines()[0]) from None
    bad = dataset.bad_counts
    by_reason = ", ".join(f"{REASONS[r]}: {n}" for r, n in bad.items())
    if bad and not dargs.skip_bad_samples:
        raise InputError(
            f"{dargs.data_path}: {sum(bad.values())} bad record(s) of {dataset.num_records} ({by_reason}); "
            "see `voco data check`, or pass --skip_bad_samples to drop them"
        )
    share = sum(bad.values()) / max(dataset.num_records, 1)
    if share > dargs.max_bad_fraction:
        # a wrong --image_folder makes nearly every record bad: skipping them would train on the rest, silently
        raise InputError(
            f"{dargs.data_path}: {sum(bad.values())} of {dataset.num_records} records bad ({share:.1%}, more than "
            f"--max_bad_fraction {dargs.max_bad_fraction:g}; {by_reason}); see `voco data check`"
        )
    if len(dataset) == 0:
        raise InputError(f"{dargs.data_path}: no usable record")
    if main_process:
        trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
        total = sum(_numel(p) for p in model.parameters())
        choices = model.config.num_voco_choices
        ks = f"K drawn uniformly per record from {choices}" if choices else f"K={model.config.num_voco}"
        print(
            f"voco train: {how}, {ks}, rule {model.config.attention_rule}, "
            f"{trainable:,} of {total:,} parameters trained; {len(dataset)} records"
        )
        if bad:
            print(f"voco train: skipped {sum(bad.values())} bad record(s) of {dataset.num_records} ({by_reason})")

    model.config.use_cache = False
    model.config.text_config.use_cache = False
    trainer = VoCoTrainer(
        model=model,
        args=targs,
        train_dataset=dataset,
        data_collator=VoCoDataCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[SaveImageProcessor(image_processor)],
    )
    resume = targs.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume is None and not targs.overwrite_output_dir and _latest_checkpoint(targs.output_dir):
        resume = _latest_checkpoint(targs.output_dir)
        if main_process:
            print(f"voco train: resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_state()

    model.config.use_cache = True
    model.config.text_config.use_cache = True
    trainer.save_model(targs.output_dir)  # model + tokenizer (ZeRO-3 gathers the weights)
    if trainer.is_world_process_zero():
        image_processor.save_pretrained(targs.output_dir)
        print(f"voco train: saved {targs.output_dir} (open it with `voco ask --model {targs.output_dir}`)")
    return 0


def _cli(args) -> int:
    return run(args.argv)


def register_cli(subparsers) -> None:
    """Add `voco train`; everything after the verb goes to HfArgumentParser (`voco train -h` lists it)."""
    p = subparsers.add_parser(
        "train",
        help="VoCo visual instruction tuning (LLaVA-1.5's flags, on transformers.Trainer)",
        add_help=False,
        prefix_chars="\x00",  # no options of its own: the whole rest is HfArgumentParser's
    )
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cli)
