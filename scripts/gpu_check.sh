#!/usr/bin/env bash
# The checks this project can only make on a GPU, on one CUDA device, within 10 minutes:
#   1. the exactness tests of the stream attention (tests/core/test_streams.py) on CUDA in bf16, with
#      FlashAttention-2 when flash-attn installs (tolerance: each tensor within 3e-2 x its largest
#      reference magnitude; see the test module's doc);
#   2. `voco bench-train` at a 7B-like geometry (random weights, bf16: 4 of LLaMA-7B's 32 layers,
#      width 4096, 32 heads of 128, CLIP-L/336's 576 vision tokens, seq 2048): FlashAttention-2 two
#      streams vs stock LLaVA flash causal vs the dense mask on sdpa;
#   3. `voco bench` (the paper's Table 7) at the full LLaVA-1.5-7B geometry (random weights, fp16:
#      32 layers x 4096, CLIP-L/336 tower of 24 layers x 1024), beside the paper's A100 times;
#   4. one ZeRO-3 step and one FSDP2 step of `voco train` in bf16 (issue 19).
# Run from the repository root:  bash scripts/gpu_check.sh   (VENV=dir reuses a CUDA venv; TORCH_INDEX picks
# the CUDA wheel index). Prints a PASS/FAIL/SKIP line per check, and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}
PY=$VENV/bin/python
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
status=0
say() { echo "== $* ($(date +%T))"; }

# ---- 0. install (about 2-3 minutes on a cold pip cache) ---------------------------------------------------
say "install"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "torch==2.13.0" --index-url "$TORCH_INDEX"
fi
"$PY" -m pip install -q -e ".[dev,deepspeed]"
# flash-attn ships CUDA wheels matched to torch/CUDA/Python; compiling from source takes far longer
# than this script's budget, so give it 3 minutes and go on without it (its checks then say SKIP).
timeout 180 "$PY" -m pip install -q flash-attn --no-build-isolation || echo "flash-attn did not install"
"$PY" - <<'EOF'
import torch
from transformers.utils import is_flash_attn_2_available
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, flash-attn 2: {is_flash_attn_2_available()}")
EOF
FLASH=$("$PY" -c "from transformers.utils import is_flash_attn_2_available as a; print(int(a()))")

# ---- 1. exactness on CUDA, bf16 ---------------------------------------------------------------------------
say "exactness tests, CUDA bf16"
if VOCO_TEST_DEVICE=cuda VOCO_TEST_DTYPE=bfloat16 timeout 120 "$PY" -m pytest -q -p no:cacheprovider \
    tests/core/test_streams.py 2>&1 | tee "$OUT/exactness.log" | tail -5; then
    echo "PASS exactness, CUDA bf16 (flash-attn: $FLASH)"
else
    echo "FAIL exactness, CUDA bf16 (see $OUT/exactness.log)"; status=1
fi

# ---- 2. bench-train at a 7B-like geometry -----------------------------------------------------------------
say "bench-train, 7B-like geometry"
if [ "$FLASH" = 1 ]; then ATTN=flash_attention_2; else ATTN=sdpa; echo "SKIP flash: bench-train runs on sdpa"; fi
if timeout 240 "$PY" -m voco_llama.cli bench-train --preset llava15-geometry --hidden 4096 --layers 4 --heads 32 \
    --seq 2048 --steps 5 --attn "$ATTN" --dtype bfloat16 2>&1 | tee "$OUT/bench_train.txt"; then
    grep -q "^FAIL" "$OUT/bench_train.txt" && status=1
else
    echo "FAIL bench-train exited non-zero"; status=1
fi

# ---- 3. voco bench (Table 7) at the full LLaVA-1.5-7B geometry, fp16 ---------------------------------------
say "voco bench, LLaVA-1.5-7B geometry fp16"
timeout 240 "$PY" - "$OUT/bench7b" <<'EOF' || { echo "FAIL voco bench at 7B geometry"; status=1; }
import sys, time
from pathlib import Path
import torch
from voco_llama.bench import inference
from voco_llama.core.presets import build_model, llava15_geometry

# `voco bench` builds its inputs on the CPU and times with the host clock. Until it takes a device,
# move its inputs to the GPU and make every clock reading wait for the GPU, so the times are real.
_clock, _encode, _pixels = time.perf_counter, inference.encode, inference.example_pixels
time.perf_counter = lambda: (torch.cuda.synchronize(), _clock())[1]
inference.encode = lambda *a, **k: {key: v.cuda() for key, v in _encode(*a, **k).items()}
inference.example_pixels = lambda *a, **k: _pixels(*a, **k).cuda()

preset = llava15_geometry(hidden=4096, layers=32)  # then LLaMA-7B's heads and CLIP-L/336's tower
with torch.device("cuda"):  # a 7B random init: seconds on the GPU, minutes on the CPU
    model, tokenizer, _ = build_model(
        preset, heads=32, kv_heads=32, intermediate=11008, vision_hidden=1024, vision_layers=24
    )
model = model.to(torch.float16).eval()
print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {model.text_model.config._attn_implementation}")
settings = inference.Settings(repeats=10, ks=(1, 4, 16), frames=(1, 4, 16), sweep_repeats=2)
result = inference.run_bench(model, tokenizer, settings, Path(sys.argv[1]), "LLaVA-1.5-7B geometry, random weights, fp16")
print("\n".join(inference.table7_markdown(result)))
paper = {"no_cache": 440.5, "full_cache": 154.9, "voco_cache": 134.0}  # the paper's Table 7, A100, ms
for mode, ms in paper.items():
    print(f"{mode:>10}: TTFT {result['table7'][mode]['ttft']['median_ms']:8.1f} ms here, paper (A100) {ms} ms")
EOF

# ---- 4. ZeRO-3 and FSDP2: one bf16 step of voco train (issue 19) --------------------------------------------
say "voco train one step, ZeRO-3 and FSDP2"
NGPU=${NGPU:-1}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$PY" - "$W" <<'PYEOF'
import json, sys
from pathlib import Path
from PIL import Image
from voco_llama.cli import main
d = Path(sys.argv[1]); (d / "images").mkdir()
colours = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 230), "yellow": (240, 230, 20)}
for name, rgb in colours.items():
    Image.new("RGB", (32, 32), rgb).save(d / "images" / f"{name}.png")
records = [{"id": f"img{i}", "image": f"{c}.png", "conversations": [
    {"from": "human", "value": "<image>\nWhat colour is the image?"}, {"from": "gpt", "value": c}]}
    for i, c in enumerate(list(colours) * 4)]
(d / "data.json").write_text(json.dumps(records))
assert main(["init", "--preset", "tiny", "--out", str(d / "model"), "--seed", "0"]) == 0
PYEOF
COMMON=(--model_name_or_path "$W/model" --data_path "$W/data.json" --image_folder "$W/images" --report_to none
        --max_steps 1 --per_device_train_batch_size 2 --learning_rate 1e-3 --save_strategy no --bf16 True
        --logging_steps 1 --disable_tqdm True --seed 3)
check() {  # engine name, output dir: a finite loss was logged and the saved bf16 model loads with the plain keys
    "$PY" - "$1" "$2" "$W/model" <<'PYEOF'
import json, math, sys
from safetensors import safe_open
from voco_llama.core.presets import load_bundle
name, out, start = sys.argv[1:]
loss = [e["loss"] for e in json.load(open(f"{out}/trainer_state.json"))["log_history"] if "loss" in e]
keys = lambda p: set(safe_open(f"{p}/model.safetensors", "pt").keys())
ok = len(loss) == 1 and math.isfinite(loss[0]) and keys(out) == keys(start) and load_bundle(out)[0] is not None
print(f"{'PASS' if ok else 'FAIL'} {name} bf16 one step on CUDA: loss {loss}, same file keys as a plain save: {keys(out) == keys(start)}")
sys.exit(0 if ok else 1)
PYEOF
}
for engine in zero3 fsdp; do
    case $engine in
        zero3) flags=(--deepspeed configs/zero3.json) ;;
        fsdp) flags=(--fsdp --fsdp_config configs/fsdp.json) ;;
    esac
    if timeout 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m voco_llama.cli train \
        "${COMMON[@]}" --output_dir "$W/$engine" "${flags[@]}" > "$OUT/train_$engine.log" 2>&1; then
        check "$engine" "$W/$engine" || status=1
    else
        echo "FAIL $engine bf16 one step on CUDA: voco train exited non-zero; last lines:"
        tail -15 "$OUT/train_$engine.log"; status=1
    fi
done

say "done (exit $status)"
exit $status
