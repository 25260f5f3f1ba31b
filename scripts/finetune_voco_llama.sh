#!/usr/bin/env bash
# VoCo-LLaMA visual instruction tuning: the reference recipe (see /work/shared/PAPER.md, "Training recipe").
#
#   8 GPUs x per-device batch 8 x gradient accumulation 2 = global batch 128; lr 2e-5, cosine, warmup 3%,
#   weight decay 0, 2 epochs, bf16, tf32, DeepSpeed ZeRO-3, model_max_length 2048, gradient checkpointing;
#   Vicuna-7B-v1.5 + CLIP-ViT-L/14-336 + a stage-1 mm_projector.bin; llava_v1_5_mix665k.json.
#
# Models are read from local directories (download them first, e.g.
#   huggingface-cli download lmsys/vicuna-7b-v1.5 --local-dir checkpoints/vicuna-7b-v1.5
#   huggingface-cli download openai/clip-vit-large-patch14-336 --local-dir checkpoints/clip-vit-large-patch14-336
#   huggingface-cli download liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5 --local-dir checkpoints/pretrain).
# Override any setting through the environment, e.g. NUM_GPUS=4 NUM_VOCO=8 OUTPUT_DIR=... bash scripts/finetune_voco_llama.sh;
# with fewer GPUs the accumulation grows so the global batch stays 128. Extra arguments go to `voco train`
# (e.g. --attention_rule causal to train the upper-bound model, --skip_bad_samples True).
# ENGINE=zero3 (default, the reference), zero2 (configs/zero2.json) or fsdp (FSDP2 full shard, configs/fsdp.json;
# launched with torchrun). ZERO=path overrides the DeepSpeed config file.
# LAUNCHER=deepspeed (default for ZeRO; needs `pip install 'voco-llama[deepspeed]'`) or torchrun.
# DRY_RUN=1 prints the command (one argument per line) instead of running it.
set -euo pipefail

NUM_GPUS=${NUM_GPUS:-8}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-8}
GLOBAL_BATCH=${GLOBAL_BATCH:-128}
GRAD_ACCUM=$(( GLOBAL_BATCH / (NUM_GPUS * PER_DEVICE_BATCH) ))
if (( GRAD_ACCUM < 1 || GRAD_ACCUM * NUM_GPUS * PER_DEVICE_BATCH != GLOBAL_BATCH )); then
    echo "finetune_voco_llama.sh: global batch $GLOBAL_BATCH is not a multiple of $NUM_GPUS GPUs x $PER_DEVICE_BATCH" >&2
    exit 2
fi

NUM_VOCO=${NUM_VOCO:-1}
LLM=${LLM:-./checkpoints/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-./checkpoints/clip-vit-large-patch14-336}
PROJECTOR=${PROJECTOR:-./checkpoints/pretrain/mm_projector.bin}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/voco-llama-7b-k${NUM_VOCO}}
CONFIGS=$(dirname "$0")/../configs
ENGINE=${ENGINE:-zero3}
case "$ENGINE" in
    zero2|zero3) engine=(--deepspeed "${ZERO:-$CONFIGS/$ENGINE.json}"); LAUNCHER=${LAUNCHER:-deepspeed} ;;
    fsdp) engine=(--fsdp --fsdp_config "$CONFIGS/fsdp.json"); LAUNCHER=${LAUNCHER:-torchrun} ;;
    *) echo "finetune_voco_llama.sh: ENGINE must be zero3, zero2 or fsdp, not $ENGINE" >&2; exit 2 ;;
esac

case "$LAUNCHER" in
    deepspeed) launch=(deepspeed --num_gpus "$NUM_GPUS" --module voco_llama.cli) ;;
    torchrun) launch=(torchrun --nproc_per_node "$NUM_GPUS" -m voco_llama.cli) ;;
    *) echo "finetune_voco_llama.sh: LAUNCHER must be deepspeed or torchrun, not $LAUNCHER" >&2; exit 2 ;;
esac

cmd=("${launch[@]}" train
    "${engine[@]}"
    --model_name_or_path "$LLM"
    --version v1
    --data_path "$DATA_PATH"
    --image_folder "$IMAGE_FOLDER"
    --vision_tower "$VISION_TOWER"
    --pretrain_mm_mlp_adapter "$PROJECTOR"
    --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2
    --mm_use_im_start_end False
    --mm_use_im_patch_token False
    --image_aspect_ratio pad
    --group_by_modality_length True
    --num_voco "$NUM_VOCO"
    --compressor voco
    --attention_rule voco
    --bf16 True
    --output_dir "$OUTPUT_DIR"
    --num_train_epochs 2
    --per_device_train_batch_size "$PER_DEVICE_BATCH"
    --per_device_eval_batch_size 4
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --evaluation_strategy no
    --save_strategy steps
    --save_steps 1000
    --save_total_limit 1
    --learning_rate 2e-5
    --weight_decay 0.
    --warmup_ratio 0.03
    --lr_scheduler_type cosine
    --logging_steps 1
    --tf32 True
    --model_max_length 2048
    --gradient_checkpointing True
    --dataloader_num_workers 4
    --lazy_preprocess True
    --report_to "${REPORT_TO:-wandb}"
    --seed 42
    "$@")

if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%s\n' "${cmd[@]}"
else
    exec "${cmd[@]}"
fi
