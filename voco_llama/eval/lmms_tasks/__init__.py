"""The toy world's benches as local lmms-eval tasks: ``voco_toy_{gqa,vqav2,pope,mme,mmbench,seed}``
(generate_until, scored by `voco score`'s rules) and ``voco_toy_seed_mc`` (multiple choice by
loglikelihood over the option letters).

    python -m lmms_eval --model voco_llava --model_args pretrained=DIR \\
        --include_path "$(python -c 'import voco_llama.eval.lmms_tasks as t; print(t.TASKS_DIR)')" \\
        --tasks voco_toy_gqa,voco_toy_pope

The questions, answer keys and images are read from the world `make demo` writes (runs/demo/world,
relative to the working directory) or from the folder in ``$VOCO_TOY_WORLD``. The YAML files load
``manifest.jsonl`` (one placeholder row: lmms-eval always loads a dataset first) and ``utils.py``
replaces it with the world's questions.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
