"""The demos' training runs: `voco train` (`train.finetune.train`) with the arguments built directly."""

from __future__ import annotations

from pathlib import Path


def train_stage(
    out: Path,
    start: Path,
    data: Path,
    image_folder: Path,
    steps: int,
    batch_size: int,
    lr: float,
    model: dict,
    data_extra: dict | None = None,
    model_max_length: int = 512,
    seed: int = 0,
    group_by_modality_length: bool = False,
) -> Path:
    """One training run of the demos (cosine schedule), skipped when `out` holds a trained model already.

    `model`: ModelArguments fields beyond the start model (num_voco, compressor, attention_rule, ...);
    `data_extra`: DataArguments fields beyond the data and image folder (video_folder, num_frames)."""
    from ..train.finetune import DataArguments, ModelArguments, TrainingArguments, train

    if (out / "config.json").is_file():
        return out
    margs = ModelArguments(model_name_or_path=str(start), version="v1", **model)
    dargs = DataArguments(
        data_path=str(data), image_folder=str(image_folder), image_aspect_ratio="pad", **(data_extra or {})
    )
    targs = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        weight_decay=0.0,
        logging_steps=max(1, steps // 8),
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        model_max_length=model_max_length,
        seed=seed,
        group_by_modality_length=group_by_modality_length,
    )
    train(margs, dargs, targs)
    return out
