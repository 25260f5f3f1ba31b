"""`voco bench-train`: the three variants measured, and their attention FLOPs counted right."""

import torch

from voco_llama.bench.train import attention_flops
from voco_llama.cli import main
from voco_llama.core.presets import build_model


def test_attention_flops_of_one_image_row():
    model, _, _ = build_model("tiny")  # 16 vision tokens, K=1, 4 heads of 16, 2 layers
    n, seq = 16, 64
    ids = torch.randint(10, 400, (1, seq))
    ids[0, :n], ids[0, n] = model.config.image_token_id, model.config.voco_token_id
    per_pair = 4 * 16 * 4 * 2
    flops = attention_flops(model, ids, None)
    assert flops["causal"] == per_pair * seq * (seq + 1) // 2
    assert flops["mask"] == per_pair * seq * seq
    main_stream = seq - n  # the VoCo token and the text
    assert flops["streams"] == per_pair * ((n + 1) * (n + 2) // 2 + main_stream * (main_stream + 1) // 2)
    # the rule allows the same pairs but the VoCo token's query row in the main stream (1 pair)
    assert flops["rule"] == flops["streams"] - per_pair


def test_bench_train_prints_the_three_variants(capsys):
    assert main(["bench-train", "--seq", "64", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:5]]
    assert [row[:2] for row in rows] == [["64", "causal"], ["64", "streams"], ["64", "mask"]]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)  # ms/step, MB
    assert rows[0][4] == "1.00x" and rows[1][-1] == "voco_streams_sdpa" and rows[2][-1] == "sdpa"
    assert not any(line.startswith(("PASS", "FAIL")) for line in lines)  # goals start at 2048


def test_too_short_a_sequence_is_bad_input(capsys):
    assert main(["bench-train", "--seq", "10"]) == 2
    assert "--seq 10 is shorter than 1 image group(s) of 17 tokens" in capsys.readouterr().err
