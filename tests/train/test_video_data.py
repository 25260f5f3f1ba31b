"""Video records in training data: `<video>` becomes one compression group per sampled frame."""

from __future__ import annotations

import json
from types import SimpleNamespace

import av
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from voco_llama.core.conversation import get_template
from voco_llama.core.tokenizer import build_tokenizer
from voco_llama.train.data import IGNORE_INDEX, VoCoDataCollator, VoCoInstructionDataset, check_data, normalize_record

N, K = 4, 2  # vision tokens and VoCo tokens per image / frame
SYSTEM = get_template("vicuna_v1").system


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [f"{SYSTEM} USER: Which way did it move? ASSISTANT: left</s>", "a caption\n"] * 4
    return build_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def config(tokenizer):
    return SimpleNamespace(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        voco_token_id=tokenizer.convert_tokens_to_ids("<voco>"),
        num_voco=K,
        num_vision_tokens=N,
    )


@pytest.fixture(scope="module")
def processor():
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def frame(i: int) -> Image.Image:
    return Image.new("RGB", (32, 32), (20 * i % 255, 255 - 10 * i, 7 * i % 255))


def write_mp4(path, n: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            container.mux(stream.encode(av.VideoFrame.from_image(frame(i))))
        container.mux(stream.encode())


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    (root / "clip").mkdir(parents=True)
    for i in range(12):
        frame(i).save(root / "clip" / f"{i:03d}.png")
    (root / "empty").mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "red.png")
    write_mp4(root / "clip.mp4", 10)
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


def conv(*turns):
    return [{"from": role, "value": value} for role, value in zip(("human", "gpt") * len(turns), turns)]


MIXED = [
    {"id": "img", "image": "red.png", "conversations": conv("<image>\nWhat colour?", "red")},
    {
        "id": "folder",
        "video": "clip",
        "conversations": conv("<video>\nWhich way did it move?", "left", "And then?", "up"),
    },
    {"id": "mp4", "video": "clip.mp4", "conversations": conv("Which way did it move?\n<video>", "right")},
    {"id": "txt", "conversations": conv("Say hello.", "hello")},
]


def write_json(tmp_path, records, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def count_groups(ids: list[int], config) -> int:
    """Number of compression groups, checking each is N image tokens then K VoCo tokens."""
    n, i = 0, 0
    while i < len(ids):
        if ids[i] == config.image_token_id:
            assert ids[i : i + N + K] == [config.image_token_id] * N + [config.voco_token_id] * K
            n, i = n + 1, i + N + K
        else:
            assert ids[i] != config.voco_token_id
            i += 1
    return n


def test_mixed_image_video_text_dataset_and_batch(tmp_path, media, tokenizer, processor, config):
    ds = VoCoInstructionDataset(
        write_json(tmp_path, MIXED), tokenizer, processor, config, image_folder=media, num_frames=4, open_images=True
    )
    items = [ds[i] for i in range(len(ds))]
    assert [count_groups(it["input_ids"].tolist(), config) for it in items] == [1, 4, 4, 0]
    assert [None if it["pixel_values"] is None else it["pixel_values"].shape[0] for it in items] == [1, 4, 4, None]
    assert ds.lengths == [len(it["input_ids"]) for it in items]
    assert [n > 0 for n in ds.modality_lengths] == [True, True, True, False]
    assert ds.frame_counts == {"clip": 4, "clip.mp4": 4}

    # Labels cover only the answers (and their </s>), never a frame's group or the question.
    for item, answers in zip(items, (["red"], ["left", "up"], ["right"], ["hello"])):
        ids, labels = item["input_ids"], item["labels"]
        assert (labels[(ids == config.image_token_id) | (ids == config.voco_token_id)] == IGNORE_INDEX).all()
        supervised = tokenizer.decode(ids[labels != IGNORE_INDEX].tolist()).replace(" ", "")
        assert supervised == "".join(f"{a}</s>" for a in answers)

    # The folder's 12 frames are sampled uniformly (0, 4, 7, 11), in time order, one row per group.
    expected = ds.image_processor([frame(i) for i in (0, 4, 7, 11)], return_tensors="pt")["pixel_values"]
    assert torch.allclose(items[1]["pixel_values"], expected, atol=1e-5)

    batch = VoCoDataCollator(tokenizer.pad_token_id)(items)
    assert batch["input_ids"].shape == (4, max(ds.lengths))
    assert batch["pixel_values"].shape == (1 + 4 + 4, 3, 32, 32)
    assert int((batch["input_ids"] == config.voco_token_id).sum()) == (1 + 4 + 4) * K
    assert torch.equal(batch["pixel_values"][1:5], items[1]["pixel_values"])


def test_video_tag_expands_like_images(tmp_path, media, tokenizer, processor, config):
    counts = {"clip": 3}
    record = {"id": "v", "video": "clip", "conversations": conv("What happened?\n<video>", "it moved")}
    turns, groups = normalize_record(record, counts)
    assert turns == [("<image>\n<image>\n<image>\nWhat happened?", "it moved")]
    assert [(g.video, g.index) for g in groups] == [("clip", 0), ("clip", 1), ("clip", 2)]
    # A video record reads the same as the record with its frames given as images.
    as_images = {
        "id": "i",
        "image": ["red.png"] * 3,
        "conversations": conv("<image><image><image>What happened?", "it moved"),
    }
    ds = VoCoInstructionDataset(
        write_json(tmp_path, [record, as_images]), tokenizer, processor, config, image_folder=media, num_frames=3
    )
    assert torch.equal(ds[0]["input_ids"], ds[1]["input_ids"]) and torch.equal(ds[0]["labels"], ds[1]["labels"])


def test_video_folder_and_shorter_videos(tmp_path, media, tokenizer, processor, config):
    record = {"id": "v", "video": "clip.mp4", "conversations": conv("<video>\nq", "a")}
    images = tmp_path / "no_videos_here"
    images.mkdir()
    ds = VoCoInstructionDataset(
        write_json(tmp_path, [record]),
        tokenizer,
        processor,
        config,
        image_folder=images,
        video_folder=media,
        num_frames=16,
    )
    assert ds[0]["pixel_values"].shape[0] == 10  # a 10-frame video gives all its 10 frames


BAD = {
    "missing": ({"video": "nowhere.mp4", "conversations": conv("<video>\nq", "a")}, "missing_video"),
    "unreadable": ({"video": "broken.mp4", "conversations": conv("<video>\nq", "a")}, "unreadable_video"),
    "no_frames": ({"video": "empty", "conversations": conv("<video>\nq", "a")}, "video_frames"),
    "no_tag": ({"video": "clip", "conversations": conv("q", "a")}, "video_count"),
    "two_tags": ({"video": "clip", "conversations": conv("<video><video>\nq", "a")}, "video_count"),
    "tag_without_video": ({"conversations": conv("<video>\nq", "a")}, "video_count"),
    "middle": ({"video": "clip", "conversations": conv("look <video> here", "a")}, "image_position"),
    "in_answer": ({"video": "clip", "conversations": conv("q", "a <video>")}, "image_position"),
    "both": ({"video": "clip", "image": "red.png", "conversations": conv("<video>\n<image>\nq", "a")}, "malformed"),
    "not_a_path": ({"video": 3, "conversations": conv("<video>\nq", "a")}, "malformed"),
}


def test_check_data_reports_bad_video_records(tmp_path, media, tokenizer, config):
    path = write_json(tmp_path, MIXED + [{"id": name, **record} for name, (record, _) in BAD.items()])
    report = check_data(path, media, tokenizer, config, num_frames=4)
    assert {b.id: b.reason for b in report.bad} == {name: reason for name, (_, reason) in BAD.items()}
    by_id = {b.id: str(b) for b in report.bad}
    assert by_id["missing"] == "missing: missing video: nowhere.mp4"
    assert by_id["unreadable"].startswith("unreadable: unreadable video: broken.mp4")
    assert by_id["no_frames"] == "no_frames: bad video frame count: empty has no frames"
    assert (report.image_records, report.video_records, report.text_records) == (1, 2, 1)
    assert "1 with images, 2 with videos, 1 text-only" in report.summary()
    # The dataset refuses the same records, or drops them with skip_bad.
    with pytest.raises(ValueError, match="first: missing: missing video"):
        VoCoInstructionDataset(path, tokenizer, None, config, image_folder=media, num_frames=4)
    ds = VoCoInstructionDataset(path, tokenizer, None, config, image_folder=media, num_frames=4, skip_bad=True)
    assert ds.ids == [r["id"] for r in MIXED]


def test_cli_video_folder_and_num_frames(tmp_path, media, tokenizer, capsys):
    import argparse

    from voco_llama.train.data import register_cli

    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    images = tmp_path / "images"
    images.mkdir()
    path = write_json(tmp_path, [MIXED[2], MIXED[3]])
    parser = argparse.ArgumentParser(prog="voco")
    register_cli(parser.add_subparsers(dest="command", required=True))
    argv = [
        "data",
        "check",
        "--data_path",
        str(path),
        "--image_folder",
        str(images),
        "--tokenizer",
        str(tok_dir),
        "--num_vision_tokens",
        str(N),
        "--num_voco",
        str(K),
        "--num_frames",
        "4",
    ]
    args = parser.parse_args(argv + ["--video_folder", str(media)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith("2 good (0 with images, 1 with videos, 1 text-only), 0 bad")
    args = parser.parse_args(argv)  # videos looked up in --image_folder: missing
    assert args.func(args) == 1
    assert capsys.readouterr().out.startswith("mp4: missing video: clip.mp4")
