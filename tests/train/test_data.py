"""Training data: normalisation, labels, compression groups, truncation, validation, CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from voco_llama.core.conversation import get_template
from voco_llama.core.processing import InputError
from voco_llama.core.tokenizer import build_tokenizer
from voco_llama.train.data import (
    IGNORE_INDEX,
    RecordEncoder,
    VoCoDataCollator,
    VoCoInstructionDataset,
    check_data,
    draw_num_voco,
    normalize_record,
)

N, K = 4, 2  # vision tokens and VoCo tokens per image
SYSTEM = get_template("vicuna_v1").system
RED, BLUE = (200, 10, 10), (10, 10, 200)


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [f"{SYSTEM} USER: What is in the image? ASSISTANT: a red square</s>", "a caption\n"] * 4
    return build_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def config(tokenizer):
    return config_for(tokenizer)


def config_for(tokenizer):
    return SimpleNamespace(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        voco_token_id=tokenizer.convert_tokens_to_ids("<voco>"),
        num_voco=K,
        num_vision_tokens=N,
        vision_config=SimpleNamespace(image_size=32),
    )


@pytest.fixture(scope="module")
def processor():
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 20), RED).save(images / "red.png")
    Image.new("RGB", (24, 24), BLUE).save(images / "blue.png")
    return images


def write_json(tmp_path, records, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def conv(*turns):
    return [{"from": role, "value": value} for role, value in zip(("human", "gpt") * len(turns), turns)]


def make_dataset(tmp_path, folder, records, tokenizer, processor, config, **kwargs):
    return VoCoInstructionDataset(
        write_json(tmp_path, records), tokenizer, processor, config, image_folder=folder, **kwargs
    )


def supervised_segments(tokenizer, item):
    """Decoded runs of consecutive supervised tokens."""
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    segments, current = [], []
    for token, label in zip(ids, labels):
        if label == IGNORE_INDEX:
            if current:
                segments.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        segments.append(current)
    return [tokenizer.decode(s) for s in segments]


def groups(ids, config):
    """[(start, end)] of the runs of image/VoCo tokens, checking each is N image then K VoCo."""
    found, i = [], 0
    while i < len(ids):
        if ids[i] in (config.image_token_id, config.voco_token_id):
            j = i
            while j < len(ids) and ids[j] in (config.image_token_id, config.voco_token_id):
                j += 1
            assert ids[i:j] == [config.image_token_id] * N + [config.voco_token_id] * K
            found.append((i, j))
            i = j
        else:
            i += 1
    return found


def test_multiturn_vicuna_labels(tmp_path, folder, tokenizer, processor, config):
    record = {"id": "r1", "image": "red.png", "conversations": conv("<image>\nq1", "a1", "q2", "a2")}
    item = make_dataset(tmp_path, folder, [record], tokenizer, processor, config)[0]
    ids = item["input_ids"].tolist()

    # Only the two answers and their </s> are supervised. The byte-level token carrying the space
    # before an answer ("Ġa") overlaps the answer, so it is supervised (as Llama's "▁a1" in LLaVA).
    assert [s.removeprefix(" ") for s in supervised_segments(tokenizer, item)] == ["a1</s>", "a2</s>"]
    assert ids[0] == tokenizer.bos_token_id and item["labels"][0] == IGNORE_INDEX
    [(start, end)] = groups(ids, config)
    assert (item["labels"][start:end] == IGNORE_INDEX).all()
    # The text around the group is the vicuna_v1 rendering.
    text = tokenizer.decode(ids[1:start]) + "<image>" + tokenizer.decode(ids[end:])
    assert text == f"{SYSTEM} USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>"
    assert item["pixel_values"].shape == (1, 3, 32, 32)


def test_image_at_end_moved_to_start(tmp_path, folder, tokenizer, processor, config):
    at_end = {"id": "e", "image": "red.png", "conversations": conv("What is it?\n<image>", "red")}
    at_start = {"id": "s", "image": "red.png", "conversations": conv("<image>\nWhat is it?", "red")}
    assert normalize_record(at_end)[0] == [("<image>\nWhat is it?", "red")]
    ds = make_dataset(tmp_path, folder, [at_end, at_start], tokenizer, processor, config)
    assert torch.equal(ds[0]["input_ids"], ds[1]["input_ids"])
    assert torch.equal(ds[0]["labels"], ds[1]["labels"])


def test_leading_gpt_and_trailing_question_dropped():
    record = {"id": "g", "conversations": [{"from": "gpt", "value": "hi"}, *conv("q", "a", "unanswered")]}
    assert normalize_record(record) == ([("q", "a")], [])


def test_plain_template(tmp_path, folder, tokenizer, processor, config):
    record = {"id": "p", "image": "red.png", "conversations": conv("<image>\nDescribe it.", "a caption")}
    item = make_dataset(tmp_path, folder, [record], tokenizer, processor, config, template="plain")[0]
    ids = item["input_ids"].tolist()
    # "<image>" + caption + "\n", with BOS; only the caption and its "\n" are supervised.
    assert ids[0] == tokenizer.bos_token_id
    assert groups(ids, config) == [(1, 1 + N + K)]
    assert tokenizer.decode(ids[1 + N + K :]) == "a caption\n"
    assert supervised_segments(tokenizer, item) == ["a caption\n"]


def test_mixed_batch_and_collator(tmp_path, folder, tokenizer, processor, config):
    records = [
        {"id": "img", "image": "red.png", "conversations": conv("<image>\nWhat is it?", "a red square")},
        {"id": "txt", "conversations": conv("Say hello.", "hello")},
        {
            "id": "two",
            "image": ["red.png", "blue.png"],
            "conversations": conv("<image>\n<image>\nCompare.", "red, blue"),
        },
    ]
    ds = make_dataset(tmp_path, folder, records, tokenizer, processor, config)
    items = [ds[i] for i in range(3)]
    assert items[1]["pixel_values"] is None
    assert ds.lengths == [len(it["input_ids"]) for it in items]
    assert [n > 0 for n in ds.modality_lengths] == [True, False, True]

    batch = VoCoDataCollator(tokenizer.pad_token_id)(items)
    longest = max(ds.lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    assert batch["attention_mask"].sum(1).tolist() == ds.lengths
    assert batch["pixel_values"].shape == (3, 3, 32, 32)  # 1 + 0 + 2 images, in row order
    assert torch.equal(batch["pixel_values"][1:], items[2]["pixel_values"])
    for row, n in enumerate(ds.lengths):  # right padding
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert torch.equal(batch["input_ids"][row, :n], items[row]["input_ids"])

    left = VoCoDataCollator(tokenizer.pad_token_id, padding_side="left")([items[0], items[1]])
    assert left["attention_mask"][1, -1] == 1 and torch.equal(
        left["input_ids"][1, -ds.lengths[1] :], items[1]["input_ids"]
    )
    assert "pixel_values" not in VoCoDataCollator(tokenizer.pad_token_id)([items[1]])


def test_several_images_become_groups_in_order(tmp_path, folder, tokenizer, processor, config):
    record = {
        "id": "two",
        "image": ["blue.png", "red.png"],
        "conversations": conv("Compare <image> <image>", "blue, red"),
    }
    item = make_dataset(tmp_path, folder, [record], tokenizer, processor, config)[0]
    found = groups(item["input_ids"].tolist(), config)
    assert len(found) == 2 and found[0][1] < found[1][0]
    # Image order follows the "image" list: blue first, then red (channel 2 vs channel 0 brightest).
    centre = item["pixel_values"][:, :, 16, 16]
    assert centre[0].argmax() == 2 and centre[1].argmax() == 0


def test_truncation_never_cuts_a_group(tokenizer, config):
    record = {"id": "t", "image": "red.png", "conversations": conv("<image>\nWhat is it?", "a red square " * 5)}
    full = RecordEncoder(tokenizer, config, model_max_length=10_000).encode(record)
    [(_, group_end)] = groups(full.input_ids, config)
    for limit in range(1, len(full.input_ids) + 1):
        try:
            out = RecordEncoder(tokenizer, config, model_max_length=limit).encode(record)
        except ValueError as err:
            assert limit <= group_end or "no answer token" in str(err)
            continue
        assert len(out.input_ids) == len(out.labels) == min(limit, len(full.input_ids)) > group_end
        assert out.input_ids == full.input_ids[:limit] and out.labels == full.labels[:limit]
        assert len(groups(out.input_ids, config)) == 1  # complete (groups() checks N + K)
        assert any(label != IGNORE_INDEX for label in out.labels)
    # the shortest accepted length keeps the group and the first answer token
    first_answer = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    assert RecordEncoder(tokenizer, config, model_max_length=first_answer + 1).encode(record).input_ids
    with pytest.raises(ValueError, match="no answer token"):
        RecordEncoder(tokenizer, config, model_max_length=first_answer).encode(record)


BAD = {
    "missing": ({"image": "nowhere.png", "conversations": conv("<image>\nq", "a")}, "missing_image"),
    "unreadable": ({"image": "broken.jpg", "conversations": conv("<image>\nq", "a")}, "unreadable_image"),
    "roles": ({"conversations": conv("q", "a")[:1] + conv("q", "a")}, "roles"),
    "no_answer": ({"conversations": conv("q")}, "no_answer"),
    "empty": ({"conversations": conv("q", " ")}, "empty_turn"),
    "count": ({"image": "red.png", "conversations": conv("<image>\n<image>\nq", "a")}, "image_count"),
    "no_image": ({"conversations": conv("<image>\nq", "a")}, "image_count"),
    "middle": ({"image": "red.png", "conversations": conv("look <image> here", "a")}, "image_position"),
    "in_answer": ({"image": "red.png", "conversations": conv("<image>\nq", "a <image>")}, "image_position"),
    "too_long": ({"image": ["red.png"] * 5, "conversations": conv("<image>" * 5 + "q", "a")}, "too_long"),
    "no_supervision": ({"image": "red.png", "conversations": conv("<image>\n" + "q " * 40, "a")}, "no_supervision"),
}
GOOD = [
    {"id": "good_image", "image": "red.png", "conversations": conv("<image>\nWhat is it?", "a red square")},
    {"id": "good_text", "conversations": conv("Say hello.", "hello")},
    {"id": "good_gpt_first", "conversations": [{"from": "gpt", "value": "hi"}, *conv("q", "a")]},
]


def bad_data(tmp_path, folder):
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return write_json(tmp_path, GOOD + [{"id": name, **record} for name, (record, _) in BAD.items()])


def test_check_data_finds_each_defect(tmp_path, folder, tokenizer, config):
    report = check_data(bad_data(tmp_path, folder), folder, tokenizer, config, model_max_length=60)
    assert {b.id: b.reason for b in report.bad} == {name: reason for name, (_, reason) in BAD.items()}
    assert (report.total, report.good, report.image_records, report.text_records) == (len(GOOD) + len(BAD), 3, 1, 2)
    assert str(report.bad[0]).startswith("missing: missing image")
    assert report.counts["image_position"] == 2


def test_dataset_refuses_or_skips_bad_records(tmp_path, folder, tokenizer, processor, config):
    path = bad_data(tmp_path, folder)
    with pytest.raises(ValueError, match=f"{len(BAD) - 1} bad record.*first: missing: missing image"):
        VoCoInstructionDataset(path, tokenizer, processor, config, image_folder=folder, model_max_length=60)
    ds = VoCoInstructionDataset(
        path, tokenizer, processor, config, image_folder=folder, model_max_length=60, skip_bad=True
    )
    # By default the dataset only checks that images exist; an undecodable one fails loudly when loaded.
    assert ds.ids == [r["id"] for r in GOOD] + ["unreadable"]
    assert len(ds.bad_records) == len(BAD) - 1 and "unreadable_image" not in ds.bad_counts
    with pytest.raises(InputError, match="record unreadable"):
        ds[len(GOOD)]
    ds = VoCoInstructionDataset(
        path, tokenizer, processor, config, image_folder=folder, model_max_length=60, skip_bad=True, open_images=True
    )
    assert ds.ids == [r["id"] for r in GOOD] and ds.bad_counts["unreadable_image"] == 1
    assert len(ds) == len(GOOD) and len(ds.bad_records) == len(BAD)


def test_unparseable_json(tmp_path, tokenizer, config):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": 1,')
    with pytest.raises(InputError, match="bad.json: not valid JSON") as err:
        check_data(path, tmp_path, tokenizer, config)
    assert "\n" not in str(err.value)


def run_cli(argv):
    from voco_llama.cli import main

    return main(argv)


@pytest.fixture
def model_dir(tmp_path, tokenizer, config):
    path = tmp_path / "model"
    tokenizer.save_pretrained(path)
    (path / "config.json").write_text(
        json.dumps(
            {
                "image_token_index": config.image_token_id,
                "voco_token_id": config.voco_token_id,
                "num_voco": K,
                "vision_config": {"image_size": 32, "patch_size": 16},  # (32 // 16) ** 2 = 4 = N
            }
        )
    )
    return path


def test_cli_exit_codes(tmp_path, folder, model_dir, capsys):
    common = ["data", "check", "--image_folder", str(folder), "--model", str(model_dir), "--model_max_length", "60"]
    assert run_cli(common + ["--data_path", str(bad_data(tmp_path, folder))]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(BAD) + 1 and "missing: missing image" in out[0] and "11 bad" in out[-1]

    assert run_cli(common + ["--data_path", str(write_json(tmp_path, GOOD, "good.json"))]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("3 good (1 with images, 2 text-only), 0 bad")

    assert run_cli(common + ["--data_path", str(tmp_path / "absent.json")]) == 2
    assert "absent.json: data file not found" in capsys.readouterr().err

    # Without a model: ids from the tokenizer, N and K from the flags.
    no_model = [
        "data",
        "check",
        "--image_folder",
        str(folder),
        "--tokenizer",
        str(model_dir),
        "--model_max_length",
        "60",
    ]
    sizes = ["--num_vision_tokens", str(N), "--num_voco", str(K)]
    assert run_cli(no_model + sizes + ["--data_path", str(tmp_path / "good.json")]) == 0


class RecordingProcessor:
    """The real processor, remembering the PIL images it was given."""

    def __init__(self, processor):
        self.processor, self.seen = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, images, **kwargs):
        self.seen += images
        return self.processor(images=images, **kwargs)


def test_pad_fills_with_clip_mean(tmp_path, folder, tokenizer, processor, config):
    spy = RecordingProcessor(processor)
    record = {"id": "wide", "image": "red.png", "conversations": conv("<image>\nq", "a")}  # 40x20
    make_dataset(tmp_path, folder, [record], tokenizer, spy, config, image_aspect_ratio="pad")[0]
    [padded] = spy.seen
    assert padded.size == (40, 40)
    assert padded.getpixel((0, 0)) == padded.getpixel((39, 39)) == (122, 116, 104)
    assert padded.getpixel((20, 20)) == RED


def test_mixture_of_k_gives_each_record_its_drawn_k_reproducibly(tmp_path, folder, tokenizer, processor):
    """A model trained for several K: each record's groups carry the K drawn for its place in the file,
    the same on every construction with the seed (a resumed run sees the same rows), whatever is skipped."""
    mixture = SimpleNamespace(**{**vars(config_for(tokenizer)), "num_voco": 1, "num_voco_choices": [1, 2, 4]})
    records = [
        {"id": f"r{i}", "image": "red.png", "conversations": conv("<image>\nWhat is it?", "a red square")}
        for i in range(24)
    ]
    records[5] = {"id": "bad", "image": "missing.png", "conversations": conv("<image>\nWhat is it?", "red")}
    ds = make_dataset(tmp_path, folder, records, tokenizer, processor, mixture, skip_bad=True, seed=3)
    drawn = draw_num_voco([1, 2, 4], len(records), 3)
    assert ds.num_vocos == drawn[:5] + drawn[6:]  # by place in the file: the skipped record shifts nobody
    assert set(drawn) == {1, 2, 4}
    items = [ds[i] for i in range(len(ds))]
    for item, k in zip(items, ds.num_vocos):
        ids = item["input_ids"].tolist()
        assert ids.count(mixture.image_token_id) == N and ids.count(mixture.voco_token_id) == k
        assert (item["labels"][item["input_ids"] == mixture.voco_token_id] == IGNORE_INDEX).all()
    assert ds.lengths == [len(it["input_ids"]) for it in items]  # lengths measured at each record's K
    again = make_dataset(tmp_path, folder, records, tokenizer, processor, mixture, skip_bad=True, seed=3)
    assert again.num_vocos == ds.num_vocos and torch.equal(again[7]["input_ids"], items[7]["input_ids"])
    other = make_dataset(tmp_path, folder, records, tokenizer, processor, mixture, skip_bad=True, seed=4)
    assert other.num_vocos != ds.num_vocos
    # the collator pads rows of different K into one batch like any rows of different lengths
    batch = VoCoDataCollator(tokenizer.pad_token_id)(items[:6])
    voco_per_row = (batch["input_ids"] == mixture.voco_token_id).sum(1).tolist()
    assert voco_per_row == ds.num_vocos[:6] and len(set(voco_per_row)) > 1
    # a fixed-K model's records all get its K
    fixed = make_dataset(tmp_path, folder, records[:5], tokenizer, processor, config_for(tokenizer))
    assert fixed.num_vocos == [K] * 5


def test_draw_num_voco_is_uniform():
    drawn = draw_num_voco([1, 2, 4, 8, 16], 20_000, 0)
    counts = [drawn.count(k) for k in (1, 2, 4, 8, 16)]
    # 4,000 expected each; one binomial standard error is 57
    assert all(abs(c - 4000) < 4 * 57 for c in counts), counts


def test_data_check_prints_no_transformers_warning(tmp_path, tiny_model_dir):
    # issue 27 item 9: transformers' "You are using a model of type voco_llava ..." came on every run
    import subprocess
    import sys

    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "img.png")
    record = {"id": "a", "image": "img.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]}
    record["conversations"].append({"from": "gpt", "value": "red"})
    (tmp_path / "d.json").write_text(json.dumps([record]))
    argv = ["data", "check", "--data_path", str(tmp_path / "d.json"), "--image_folder", str(tmp_path)]
    for source in (["--model", str(tiny_model_dir())], ["--tokenizer", str(tiny_model_dir())]):
        done = subprocess.run([sys.executable, "-m", "voco_llama.cli", *argv, *source], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert done.stdout.startswith(f"{tmp_path / 'd.json'}: 1 records, 1 good")
