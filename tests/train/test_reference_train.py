"""`voco train --voco_layout reference`: training rows as the reference code builds them
(llava/train/train_compress.py `preprocess_v1`: `<image>\\n<voco><voco>\\n` first, its system prompt,
every newline removed, `tokenizer_image_token`; labels: the answers and their `</s>` only), the same
tokens the answering side reads, and a run that continues a reference checkpoint."""

import json

import pytest
from PIL import Image

from tests.core.test_convert_reference import save_reference_checkpoint
from voco_llama.cli import main
from voco_llama.core.presets import build_model, load_bundle
from voco_llama.core.processing import encode_prompts, question_prompt
from voco_llama.train.data import IGNORE_INDEX, BadRecordError, RecordEncoder

RECORD = {
    "id": "r1",
    "image": "red.png",
    "conversations": [
        {"from": "human", "value": "What colour\nis it?\n<image>"},
        {"from": "gpt", "value": "red,\nall of it"},
        {"from": "human", "value": "Sure?"},
        {"from": "gpt", "value": "yes"},
    ],
}


@pytest.fixture(scope="module")
def reference_model():
    return build_model("tiny", num_voco=2, voco_layout="reference")


def supervised_text(tok, sample) -> list[str]:
    """The labelled stretches of a row, decoded."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tok.decode(current)), current.clear()
    return runs + ([tok.decode(current)] if current else [])


def test_rows_are_the_reference_codes_and_only_answers_are_labelled(reference_model):
    model, tok, _ = reference_model
    config = model.config
    encoder = RecordEncoder(tok, config)
    sample = encoder.encode(RECORD)
    group = config.group_ids(2)
    assert sample.input_ids[: len(group)] == group  # BOS, image, newline, <voco><voco>: what compress runs
    assert sample.input_ids.count(config.voco_token_id) == 2
    assert all(label == IGNORE_INDEX for label in sample.labels[: len(group)])  # no loss on the group
    assert supervised_text(tok, sample) == [" red,all of it</s>", " yes</s>"]
    text = tok.decode([t for t in sample.input_ids if t != config.image_token_id][len(group) - 16 :])
    assert text == (
        "\nA chat between a curious user and an artificial intelligence assistant of the image. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: What colouris it? "
        "ASSISTANT: red,all of it</s>USER: Sure? ASSISTANT: yes</s>"
    )
    # the first turn's tokens are the tokens `voco ask` reads for that question
    prompt = encode_prompts([question_prompt("What colour\nis it?")], tok, config)["input_ids"][0].tolist()
    assert sample.input_ids[: len(prompt)] == prompt

    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Hi\nthere"}, {"from": "gpt", "value": "a"}]}
    row = encoder.encode(text_only)
    assert config.voco_token_id not in row.input_ids
    assert tok.decode(row.input_ids[1:]).endswith(
        "assistant of the image. The assistant gives helpful, detailed, "
        "and polite answers to the user's questions. USER: Hi\nthere "
        "ASSISTANT: a</s>"
    )  # newlines kept without an image
    two = {**RECORD, "image": ["red.png", "red.png"]}
    two["conversations"] = [{"from": "human", "value": "<image><image>Same?"}, {"from": "gpt", "value": "yes"}]
    with pytest.raises(BadRecordError, match="the reference layout takes one per record"):
        encoder.encode(two)


def test_train_continues_a_reference_checkpoint_in_its_layout(tmp_path, capsys):
    save_reference_checkpoint(tmp_path / "ref")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32), (230, 20, 20)).save(tmp_path / "images" / "red.png")
    records = [{**RECORD, "id": f"r{i}"} for i in range(8)]
    (tmp_path / "data.json").write_text(json.dumps(records))
    out = tmp_path / "run"
    argv = ["train", "--model_name_or_path", str(tmp_path / "ref"), "--data_path", str(tmp_path / "data.json")]
    argv += ["--image_folder", str(tmp_path / "images"), "--output_dir", str(out), "--report_to", "none"]
    argv += ["--dataloader_num_workers", "0", "--disable_tqdm", "True", "--logging_steps", "1", "--save_strategy", "no"]
    argv += ["--per_device_train_batch_size", "4", "--num_train_epochs", "6", "--learning_rate", "1e-2"]
    assert main([*argv, "--voco_layout", "reference", "--position_layout", "compact"]) == 2
    assert "--position_layout does not go with --voco_layout reference" in capsys.readouterr().err
    assert main([*argv, "--voco_layout", "reference"]) == 0
    model, tok, _ = load_bundle(out)
    assert model.config.voco_layout == "reference" and model.config.num_voco == 2
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    curve = [entry["loss"] for entry in history if "loss" in entry]
    assert len(curve) == 12 and curve[-1] < 0.6 * curve[0], curve  # measured: 5.7 -> 2.5
    # and the trained folder answers from its cache
    capsys.readouterr()
    ask = ["ask", "--model", str(out), "--image", str(tmp_path / "images" / "red.png"), "--json"]
    assert main([*ask, "--question", "What colour\nis it?", "--max-new-tokens", "8"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["route"] == "cache" and len(answer["token_ids"]) > 0
