"""The demos' training runs: `voco train` (`train.finetune.train`) with its arguments built directly,
one run in this process or several in worker processes at one thread each."""

from __future__ import annotations

import multiprocessing
import shutil
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
    save_steps: int | None = None,
) -> Path:
    """One training run of the demos (cosine schedule), skipped when `out` holds a trained model already.

    `model`: ModelArguments fields beyond the start model (num_voco, compressor, attention_rule, ...);
    `data_extra`: DataArguments fields beyond the data and image folder (video_folder, num_frames);
    `save_steps`: keep the weights every this many steps (the learning curves read them), else none."""
    from ..train.finetune import DataArguments, ModelArguments, TrainingArguments, train

    out = Path(out)
    if (out / "config.json").is_file():
        return out
    if save_steps and out.exists():
        shutil.rmtree(out)  # weights-only checkpoints cannot resume a run: start it again
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
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_only_model=bool(save_steps),
        report_to="none",
        dataloader_num_workers=0,
        model_max_length=model_max_length,
        seed=seed,
        group_by_modality_length=group_by_modality_length,
    )
    train(margs, dargs, targs)
    return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _train_job(job: dict) -> Path:
    return train_stage(**job)


def train_stages(jobs: list[dict], processes: int = 2) -> None:
    """`train_stage(**job)` for every job not done yet, `processes` at a time, each in a worker process
    at one thread: the toy models' small matmuls scale poorly across threads, so on 2 cores two
    one-thread runs side by side finish sooner than the same runs one after another at two threads
    (two two-thread runs side by side thrash). A run's result depends on its thread count only in the
    last float bits, and every run of a demo stage always gets one thread, so a demo stays repeatable."""
    todo = [job for job in jobs if not (Path(job["out"]) / "config.json").is_file()]
    if not todo:
        return
    with multiprocessing.get_context("spawn").Pool(min(processes, len(todo)), initializer=_one_thread) as pool:
        for _ in pool.imap_unordered(_train_job, todo):
            pass
        pool.close()
        pool.join()
