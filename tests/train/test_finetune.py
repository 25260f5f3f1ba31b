"""`voco train` end to end on tiny models (CPU): the reference flags, freezing, bad data, starting from
LLaVA parts, and kill-and-resume (the multi-process engines: test_engines.py)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from voco_llama.cli import main
from voco_llama.core.errors import InputError
from voco_llama.train.finetune import modality_length_grouped_indices

COLOURS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 230), "yellow": (240, 230, 20)}
# Answers of different token lengths, so token-weighted loss normalisation matters across batches.
ANSWERS = {"red": "red", "green": "green, a plain green square", "blue": "blue", "yellow": "yellow, all of it"}
QUESTION = "What colour is the image?"
REPO = Path(__file__).resolve().parents[2]


def image_record(i, colour):
    return {
        "id": f"img{i}",
        "image": f"{colour}.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"},
            {"from": "gpt", "value": ANSWERS[colour]},
        ],
    }


def text_record(i):
    return {
        "id": f"txt{i}",
        "conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": list(COLOURS)[i % 4]}],
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    (d / "images").mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (32, 32), rgb).save(d / "images" / f"{name}.png")
    records = [image_record(i, list(COLOURS)[i % 4]) for i in range(16)]
    (d / "data.json").write_text(json.dumps(records))
    (d / "mixed.json").write_text(json.dumps(records[:12] + [text_record(i) for i in range(4)]))
    assert main(["init", "--preset", "tiny", "--out", str(d / "model"), "--seed", "0"]) == 0
    return d


def base_args(world, out, data="data.json"):
    return [
        "--model_name_or_path",
        str(world / "model"),
        "--data_path",
        str(world / data),
        "--image_folder",
        str(world / "images"),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        "--disable_tqdm",
        "True",
        "--logging_steps",
        "1",
    ]


def losses(out):
    history = json.loads((Path(out) / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def weights(out):
    """The model's parameters by their in-memory names (the file keeps LLaVA's legacy key layout)."""
    from voco_llama.core.modeling import VoCoLlavaForConditionalGeneration

    return {k: v.detach() for k, v in VoCoLlavaForConditionalGeneration.from_pretrained(out).state_dict().items()}


# ---- the reference recipe's flags, at tiny sizes -----------------------------------------------

REFERENCE_FLAGS = [
    "--version",
    "v1",
    "--mm_projector_type",
    "mlp2x_gelu",
    "--mm_vision_select_layer",
    "-2",
    "--mm_use_im_start_end",
    "False",
    "--mm_use_im_patch_token",
    "False",
    "--image_aspect_ratio",
    "pad",
    "--group_by_modality_length",
    "True",
    "--bf16",
    "True",
    "--num_train_epochs",
    "8",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "1",
    "--evaluation_strategy",
    "no",
    "--save_strategy",
    "steps",
    "--save_steps",
    "16",
    "--save_total_limit",
    "1",
    "--learning_rate",
    "3e-3",
    "--weight_decay",
    "0.",
    "--warmup_ratio",
    "0.03",
    "--lr_scheduler_type",
    "cosine",
    "--tf32",
    "True",
    "--model_max_length",
    "2048",
    "--gradient_checkpointing",
    "True",
    "--lazy_preprocess",
    "True",
    "--num_voco",
    "2",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    # 12 image + 4 text-only records, modality-grouped batches of 4: 32 steps over 8 epochs
    assert main(["train", *base_args(world, out, "mixed.json"), *REFERENCE_FLAGS]) == 0
    return out


def test_reference_flags_train_loss_falls_and_the_bundle_answers(world, trained):
    from voco_llama.core.pipeline import VoCoPipeline
    from voco_llama.core.presets import load_bundle

    curve = losses(trained)
    assert len(curve) == 32
    # measured: ~6.3 -> ~1.8; a run that does not learn stays near 6
    assert curve[-1] < 0.5 * curve[0], curve
    assert sum(curve[-4:]) / 4 < sum(curve[:4]) / 4 - 2.0
    model, tokenizer, image_processor = load_bundle(trained)
    assert model.config.num_voco == 2 and model.config.attention_rule == "voco"
    answer = VoCoPipeline(model, tokenizer, image_processor).ask(
        QUESTION, images=[world / "images" / "red.png"], max_new_tokens=8
    )
    # the tiny model has learnt the answer format: a colour word, then </s>
    assert answer.token_ids and answer.token_ids[-1] == tokenizer.eos_token_id
    assert answer.text.split(",")[0] in COLOURS, answer.text
    # a checkpoint is a complete bundle too
    checkpoint = trained / "checkpoint-32"
    assert (checkpoint / "preprocessor_config.json").is_file() and (checkpoint / "optimizer.pt").is_file()
    assert load_bundle(checkpoint)[0].config.num_voco == 2


def test_vision_tower_frozen_llm_and_projector_trained(world, trained):
    before, after = weights(world / "model"), weights(trained)
    assert before.keys() == after.keys()
    tower = [k for k in before if ".vision_tower." in k]
    llm = [k for k in before if ".language_model." in k or k.startswith("lm_head")]
    projector = [k for k in before if "multi_modal_projector" in k]
    assert tower and llm and projector
    assert all(torch.equal(before[k], after[k]) for k in tower)
    assert min((before[k] - after[k]).abs().max().item() for k in projector) > 1e-3
    changed = [k for k in llm if (before[k] - after[k]).abs().max().item() > 1e-3]
    assert len(changed) == len(llm), set(llm) - set(changed)  # every LLM tensor moved


def test_modality_grouped_sampler_batches_one_modality():
    lengths = [10 + i for i in range(20)] + [-(5 + i) for i in range(12)]  # 20 image, 12 text-only records
    batch, world_size = 4, 2
    g = torch.Generator().manual_seed(0)
    order = modality_length_grouped_indices(lengths, batch, world_size, g)
    assert sorted(order) == list(range(32))
    batches = [order[i : i + batch] for i in range(0, 32, batch)]
    mixed = [b for b in batches if len({lengths[i] > 0 for i in b}) > 1]
    assert len(mixed) <= world_size  # only the final leftover megabatch may mix
    assert all(b in batches[-world_size:] for b in mixed)
    again = modality_length_grouped_indices(lengths, batch, world_size, torch.Generator().manual_seed(0))
    other = modality_length_grouped_indices(lengths, batch, world_size, torch.Generator().manual_seed(1))
    assert order == again and order != other


# ---- bad data ------------------------------------------------------------------------------------


def test_bad_data_refused_with_exit_2_and_skipped_on_request(world, tmp_path, capsys):
    records = json.loads((world / "data.json").read_text())
    records.append({**image_record(99, "red"), "id": "gone", "image": "missing.png"})
    records.append({"id": "twice", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]})
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(records))
    argv = [
        "train",
        *base_args(world, tmp_path / "out", "data.json"),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
    ]
    argv[argv.index(str(world / "data.json"))] = str(data)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 bad record(s) of 18" in err[0] and "--skip_bad_samples" in err[0], err
    assert not (tmp_path / "out").exists()

    # skipping is refused too while more than --max_bad_fraction (default 5%) of the records are bad: 2 of 18
    assert main([*argv, "--skip_bad_samples", "True"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 18 records bad (11.1%, more than --max_bad_fraction 0.05" in err[0], err
    assert not (tmp_path / "out").exists()

    # (and the upper-bound model: ordinary causal attention, recorded in the saved config)
    allowed = ["--skip_bad_samples", "True", "--max_bad_fraction", "0.2"]
    assert main([*argv, *allowed, "--attention_rule", "causal"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 bad record(s) of 18 (missing image: 1, roles not alternating: 1)" in out, out
    assert len(losses(tmp_path / "out")) == 2
    assert json.loads((tmp_path / "out" / "config.json").read_text())["attention_rule"] == "causal"


def test_wrong_image_folder_with_skip_bad_samples_is_refused(world, tmp_path, capsys):
    # an image folder holding only red.png: 12 of the 16 records lose their image
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "red.png").write_bytes((world / "images" / "red.png").read_bytes())
    argv = ["train", *base_args(world, tmp_path / "out"), "--max_steps", "1", "--skip_bad_samples", "True"]
    argv[argv.index(str(world / "images"))] = str(tmp_path / "images")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("voco: error: "), err
    assert "12 of 16 records bad (75.0%, more than --max_bad_fraction 0.05; missing image: 12)" in err[0], err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--max_bad_fraction", "1.5"]) == 2
    assert "--max_bad_fraction 1.5: expected a fraction in [0, 1]" in capsys.readouterr().err


def test_mixture_of_k_trains_one_model_that_accepts_its_set(world, tmp_path, capsys):
    from voco_llama.core.pipeline import VoCoPipeline
    from voco_llama.core.presets import load_bundle

    argv = ["train", *base_args(world, tmp_path / "mix"), "--max_steps", "3", "--per_device_train_batch_size", "4"]
    capsys.readouterr()
    assert main([*argv, "--num-voco-choices", "4,1,2"]) == 0  # the dashed spelling, any order
    assert "K drawn uniformly per record from [1, 2, 4]" in capsys.readouterr().out
    config = json.loads((tmp_path / "mix" / "config.json").read_text())
    assert (config["num_voco_choices"], config["num_voco"]) == ([1, 2, 4], 1)  # default: the set's smallest
    pipe = VoCoPipeline(*load_bundle(tmp_path / "mix"))
    for k in (1, 2, 4):
        assert pipe.compress([world / "images" / "red.png"], num_voco=k).num_voco == k
    with pytest.raises(InputError, match=r"^K=3: this model was trained with K in \{1, 2, 4\}$"):
        pipe.compress([world / "images" / "red.png"], num_voco=3)
    # continuing it trains with its set again: --num_voco must be in the set (or a new set given)
    again = ["train", *base_args(world, tmp_path / "again"), "--max_steps", "1"]
    again[again.index(str(world / "model"))] = str(tmp_path / "mix")
    assert main([*again, "--num_voco", "8"]) == 2
    assert "--num_voco 8: " in capsys.readouterr().err
    assert main([*again, "--num_voco", "2"]) == 0
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert (config["num_voco_choices"], config["num_voco"]) == ([1, 2, 4], 2)


# ---- starting from LLaVA parts --------------------------------------------------------------------


def test_start_from_llm_vision_tower_and_projector(world, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from voco_llama.core.presets import _DEFAULT_CORPUS, image_processor_for, load_bundle
    from voco_llama.core.tokenizer import build_tokenizer

    tok = build_tokenizer(_DEFAULT_CORPUS * 4, vocab_size=400, extra_special=())  # a Vicuna-like vocabulary
    torch.manual_seed(3)
    llm = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    tower = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    projector = {
        "model.mm_projector.0.weight": torch.randn(64, 32),
        "model.mm_projector.0.bias": torch.randn(64),
        "model.mm_projector.2.weight": torch.randn(64, 64) * 0.1,
        "model.mm_projector.2.bias": torch.randn(64),
    }
    llm.save_pretrained(tmp_path / "vicuna")
    tok.save_pretrained(tmp_path / "vicuna")
    tower.save_pretrained(tmp_path / "clip")
    image_processor_for("clip", 32).save_pretrained(tmp_path / "clip")
    torch.save(projector, tmp_path / "mm_projector.bin")

    out = tmp_path / "out"
    argv = [
        "train",
        *base_args(world, out),
        "--model_name_or_path",
        str(tmp_path / "vicuna"),
        "--vision_tower",
        str(tmp_path / "clip"),
        "--pretrain_mm_mlp_adapter",
        str(tmp_path / "mm_projector.bin"),
        "--mm_vision_select_layer",
        "-1",
        "--max_steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "0",
        "--num_voco",
        "2",
    ]
    assert main(argv) == 0
    curve = losses(out)
    assert len(curve) == 3 and all(0 < x < 20 for x in curve)
    model, tokenizer, _ = load_bundle(out)
    assert model.config.vision_feature_layer == -1 and model.config.num_voco == 2
    assert tokenizer.convert_tokens_to_ids("<voco>") == model.config.voco_token_id == len(tok) + 1
    got = model.state_dict()
    # learning rate 0: the trained bundle is exactly the assembled parts
    for k, v in tower.state_dict().items():
        assert torch.equal(got[f"model.vision_tower.{k}"], v), k
    assert torch.equal(got["model.multi_modal_projector.linear_1.weight"], projector["model.mm_projector.0.weight"])
    assert torch.equal(got["model.multi_modal_projector.linear_2.bias"], projector["model.mm_projector.2.bias"])
    for k, v in llm.state_dict().items():
        ours = got["lm_head.weight" if k == "lm_head.weight" else "model.language_model." + k[len("model.") :]]
        assert torch.equal(ours[: v.shape[0]], v), k


def test_rerun_over_a_trained_model_is_refused_before_any_work(world, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", *base_args(world, run), "--max_steps", "1"]) == 2  # checkpoint-32 is there too
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"voco: error: {run}: holds a trained model; pass --overwrite_output_dir to replace it "
        "(or --resume_from_checkpoint CHECKPOINT to continue from one of its checkpoints)"
    ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # asked for, the folder is trained afresh (its checkpoint not resumed): one step, new weights
    argv = ["--max_steps", "1", "--save_strategy", "no", "--overwrite_output_dir", "True"]
    assert main(["train", *base_args(world, run), *argv]) == 0
    assert len(losses(run)) == 1
    assert (run / "model.safetensors").read_bytes() != before[run / "model.safetensors"]


# ---- kill -9 and resume ---------------------------------------------------------------------------

RESUME_ATOL = 1e-6

# The killed run: the ordinary CLI, each step slowed down so the kill lands between checkpoints.
SLOW_TRAIN = textwrap.dedent("""
    import sys, time
    import voco_llama.train.finetune as train
    step = train.VoCoTrainer.training_step
    def slow(self, *args, **kwargs):
        time.sleep(0.5)
        return step(self, *args, **kwargs)
    train.VoCoTrainer.training_step = slow
    from voco_llama.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_then_resume_equals_an_uninterrupted_run(world, tmp_path):
    def argv(out):
        # random sampler (shuffled), 4 steps per epoch: resuming must also restore the data order
        return [
            "train",
            *base_args(world, out),
            "--max_steps",
            "10",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "2e-3",
            "--save_strategy",
            "steps",
            "--save_steps",
            "3",
            "--seed",
            "11",
        ]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_TRAIN, *argv(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    marker = out / "checkpoint-3" / "preprocessor_config.json"  # the last file a checkpoint gets
    deadline = time.time() + 90
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stderr.close()
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint-9").exists()

    assert main([*argv(out), "--resume_from_checkpoint", str(out / "checkpoint-3")]) == 0
    assert main(argv(tmp_path / "straight")) == 0
    resumed, straight = weights(out), weights(tmp_path / "straight")
    diff = max((resumed[k] - straight[k]).abs().max().item() for k in straight)
    print(f"killed at checkpoint-3 and resumed vs uninterrupted: max |dw| {diff:.3g}")
    assert diff < RESUME_ATOL, diff
    start = weights(world / "model")
    assert max((start[k] - straight[k]).abs().max().item() for k in straight) > 1e-3
    # the resumed run logged steps 4..10 with the same losses as the uninterrupted one
    assert losses(out)[-7:] == pytest.approx(losses(tmp_path / "straight")[-7:], rel=1e-5)


# ---- the 8-GPU recipe script and the DeepSpeed configs ----------------------------------------------


def test_recipe_script_passes_the_reference_recipe_to_voco_train():
    from voco_llama.train.finetune import parse

    env = {**os.environ, "DRY_RUN": "1", "REPORT_TO": "none"}
    cmd = subprocess.run(
        ["bash", str(REPO / "scripts" / "finetune_voco_llama.sh")], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert cmd[:5] == ["deepspeed", "--num_gpus", "8", "--module", "voco_llama.cli"] and cmd[5] == "train"
    argv = cmd[6:]
    zero = Path(argv[argv.index("--deepspeed") + 1])
    assert json.loads(zero.read_text())["zero_optimization"]["stage"] == 3
    # (parsed with --deepspeed, TrainingArguments would register a process-wide ZeRO-3 config that every later
    # from_pretrained in this test process would obey; the engines themselves run in test_engines.py)
    del argv[argv.index("--deepspeed") : argv.index("--deepspeed") + 2]
    model, data, training = parse(argv)
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * 8 == 128
    assert (training.per_device_train_batch_size, training.gradient_accumulation_steps) == (8, 2)
    assert training.learning_rate == 2e-5 and training.weight_decay == 0 and training.num_train_epochs == 2
    assert training.lr_scheduler_type.value == "cosine" and training.warmup_steps == 0.03
    assert training.model_max_length == 2048 and training.gradient_checkpointing and training.group_by_modality_length
    assert training.eval_strategy.value == "no"
    assert model.version == "v1" and model.mm_vision_select_layer == -2 and model.num_voco == 1
    assert model.pretrain_mm_mlp_adapter.endswith("mm_projector.bin") and data.image_aspect_ratio == "pad"
    assert (
        parse(["--model_name_or_path", "m", "--data_path", "d", "--evaluation_strategy", "steps"])[
            2
        ].eval_strategy.value
        == "steps"
    )  # LLaVA's old flag name
    # 4 GPUs keep the global batch at 128
    env["NUM_GPUS"] = "4"
    cmd = subprocess.run(
        ["bash", str(REPO / "scripts" / "finetune_voco_llama.sh")], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert cmd[cmd.index("--gradient_accumulation_steps") + 1] == "4"
    # ZeRO-2, and FSDP2 full shard (launched with torchrun)
    env["ENGINE"] = "zero2"
    cmd = subprocess.run(
        ["bash", str(REPO / "scripts" / "finetune_voco_llama.sh")], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert json.loads(Path(cmd[cmd.index("--deepspeed") + 1]).read_text())["zero_optimization"]["stage"] == 2
    env["ENGINE"] = "fsdp"
    cmd = subprocess.run(
        ["bash", str(REPO / "scripts" / "finetune_voco_llama.sh")], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert cmd[:2] == ["torchrun", "--nproc_per_node"] and "--deepspeed" not in cmd
    fsdp = parse(cmd[cmd.index("train") + 1 :])[2]
    assert fsdp.fsdp is True and fsdp.fsdp_config["version"] == 2 and fsdp.fsdp_config["reshard_after_forward"]
    for name, stage in (("zero2.json", 2), ("zero3.json", 3)):
        config = json.loads((REPO / "configs" / name).read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert config["train_micro_batch_size_per_gpu"] == config["gradient_accumulation_steps"] == "auto"
        assert config["bf16"]["enabled"] == "auto"
