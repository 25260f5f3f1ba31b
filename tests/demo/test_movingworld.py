"""The synthetic moving world: determinism, formats, answers from the ground truth, balance, and
questions that need more than one frame."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import CLIPImageProcessor

from voco_llama.core.tokenizer import build_tokenizer
from voco_llama.core.video import read_video, sample_indices
from voco_llama.demo.movingworld import (
    ANSWER_CYCLES,
    CORNERS,
    QUESTION_TYPES,
    generate_moving_world,
    moving_world_texts,
)
from voco_llama.demo.toyworld import SHORT_ANSWER
from voco_llama.eval.scorers import score
from voco_llama.train.data import VoCoInstructionDataset

SIZE, FRAMES = 64, 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_moving_world(tmp_path_factory.mktemp("moving"), seed=0, num_train_clips=20, num_eval_clips=20)


@pytest.fixture(scope="module")
def clips(world):
    return json.loads(world.clips_json.read_text())["clips"]


def cell(x, y):
    return min(2, y * 3 // SIZE) * 3 + min(2, x * 3 // SIZE)


def name(obj):
    return next(f"{s[2]} {obj['shape']}" for s in obj["track"] if s is not None)


def derive(clip, frames):
    """The answer, re-derived from the stored tracks seen only at `frames`."""
    objects, q = clip["objects"], clip["question"]
    by_name = {name(o): o for o in objects}
    by_shape = {o["shape"]: o for o in objects}
    seen = lambda o: [o["track"][f] for f in frames]  # noqa: E731
    if m := re.fullmatch(r"Which way did the (.+) move\?", q):
        (x0, y0, _), (x1, y1, _) = seen(by_name[m[1]])[0], seen(by_name[m[1]])[-1]
        if abs(x1 - x0) > abs(y1 - y0):
            return "right" if x1 > x0 else "left"
        return "down" if y1 > y0 else "up"
    if m := re.fullmatch(r"Did the (.+) appear before the (.+)\?", q):
        start = {n: next(i for i, s in enumerate(seen(by_name[n])) if s is not None) for n in (m[1], m[2])}
        assert start[m[1]] != start[m[2]]
        return "yes" if start[m[1]] < start[m[2]] else "no"
    if m := re.fullmatch(r"How many times did the (\w+) change color\?", q):
        colors = [s[2] for s in seen(by_shape[m[1]])]
        return ("zero", "one", "two", "three")[sum(a != b for a, b in zip(colors, colors[1:]))]
    if m := re.fullmatch(r"What color was the (\w+) at the end\?", q):
        return seen(by_shape[m[1]])[-1][2]
    m = re.fullmatch(r"Did the (.+) disappear\?", q)
    return "yes" if seen(by_name[m[1]])[-1] is None else "no"


def test_answers_follow_from_the_tracks_even_in_8_sampled_frames(clips):
    assert {c["type"] for c in clips} == set(QUESTION_TYPES)
    for clip in clips:
        for f in clip["objects"][0]["track"], *(o["track"] for o in clip["objects"]):
            assert len(f) == FRAMES
        assert derive(clip, range(FRAMES)) == clip["answer"]
        assert derive(clip, sample_indices(FRAMES, 8)) == clip["answer"]  # what the dataset samples
        shapes = [o["shape"] for o in clip["objects"]]
        assert len(set(shapes)) == len(shapes)  # "the square" names one object


def test_a_single_frame_does_not_answer(clips):
    mid = (FRAMES - 1) // 2
    for clip in clips:
        objects, q = clip["objects"], clip["question"]
        if clip["type"] == "direction":
            [mover] = [o for o in objects if o["track"][0] != o["track"][-1]]
            (x0, y0, _), (xm, ym, _), (x1, y1, _) = mover["track"][0], mover["track"][mid], mover["track"][-1]
            dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[clip["answer"]]
            assert (x1 - x0) * dx + (y1 - y0) * dy >= 10  # moved at least 10 px the stated way
            assert (x1 - x0) * dy == (y1 - y0) * dx == 0  # and not at all across it
            # In the middle frame the mover is in the centre cell and the others in corners, whatever
            # the direction: that frame alone cannot tell left from right or up from down.
            assert cell(xm, ym) == 4
            assert all(cell(*o["track"][mid][:2]) in CORNERS for o in objects if o is not mover)
        elif clip["type"] == "first_appeared":
            named = [o for o in objects if name(o) in q]
            assert len(named) == 2 and all(o["track"][0] is None and o["track"][mid] is not None for o in named)
        elif clip["type"] == "final_color":
            [subject] = [o for o in objects if o["shape"] in q]
            assert subject["track"][0][2] != clip["answer"] and subject["track"][mid][2] != clip["answer"]
        elif clip["type"] == "disappeared":
            [subject] = [o for o in objects if name(o) in q]
            assert subject["track"][0] is not None and subject["track"][mid] is not None


def test_answers_are_balanced(clips):
    for split in ("train", "eval"):
        for kind in QUESTION_TYPES:
            chosen = [c for c in clips if c["split"] == split and c["type"] == kind]
            answers = [c["answer"] for c in chosen]
            counts = Counter(answers)
            assert set(counts) <= set(ANSWER_CYCLES[kind])
            everyone = [counts[a] for a in ANSWER_CYCLES[kind]]
            assert max(everyone) - min(everyone) <= 1, (split, kind, counts)


def test_deterministic(world, tmp_path):
    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}

    small = dict(seed=3, num_train_clips=3, num_eval_clips=2, num_frames=8)
    a, b = generate_moving_world(tmp_path / "a", **small), generate_moving_world(tmp_path / "b", **small)
    assert files(a.root) == files(b.root)
    assert files(generate_moving_world(tmp_path / "c", **{**small, "seed": 4}).root) != files(a.root)
    generate_moving_world(tmp_path / "a", **{**small, "num_train_clips": 1})  # regenerating removes stale clips
    assert sorted(p.name for p in a.videos_dir.iterdir()) == ["eval_00000", "eval_00001", "train_000000"]
    assert len(read_video(a.video_path("eval_00000"), num_frames=None)) == 8


def test_files_load_as_training_data_and_as_a_bench(world, clips, tmp_path):
    tokenizer = build_tokenizer(moving_world_texts(world), vocab_size=400)
    config = SimpleNamespace(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        voco_token_id=tokenizer.convert_tokens_to_ids("<voco>"),
        num_voco=1,
        num_vision_tokens=4,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ds = VoCoInstructionDataset(
        world.train_json, tokenizer, processor, config, video_folder=world.videos_dir, num_frames=8, open_images=True
    )
    assert len(ds) == 20 and not ds.bad_records
    for i in (0, 1, 7):
        item = ds[i]
        assert item["pixel_values"].shape == (8, 3, 32, 32)
        assert int((item["input_ids"] == config.voco_token_id).sum()) == 8

    questions = [json.loads(line) for line in world.questions.read_text().splitlines()]
    keys = [json.loads(line) for line in world.answer_key.read_text().splitlines()]
    truth = {c["id"]: c for c in clips}
    assert len(questions) == len(keys) == 20
    for q, k in zip(questions, keys):
        assert set(q) == {"question_id", "video", "text", "category"} and q["text"].endswith(SHORT_ANSWER)
        assert (world.videos_dir / q["video"] / "000.png").is_file()
        assert k == {
            "question_id": q["question_id"],
            "answer": truth[q["video"]]["answer"],
            "category": truth[q["video"]]["type"],
            "video": q["video"],
        }
    # A model that answers every question right scores 100 with the GQA exact-match scorer.
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"question_id": k["question_id"], "text": k["answer"].capitalize() + "."}) + "\n" for k in keys
        )
    )
    result = score("gqa", answers, world.answer_key)
    assert result["score"] == 100.0 and set(result["categories"]) == set(QUESTION_TYPES)
    # and one that always gives the same answer per question type is at chance
    blind = {
        kind: Counter(k["answer"] for k in keys if k["category"] == kind).most_common(1)[0][0]
        for kind in QUESTION_TYPES
    }
    answers.write_text(
        "".join(json.dumps({"question_id": k["question_id"], "text": blind[k["category"]]}) + "\n" for k in keys)
    )
    assert score("gqa", answers, world.answer_key)["score"] <= 50


def test_contrast_questions_are_answered_by_the_tracks_and_change_nothing_else(world, clips, tmp_path):
    """`contrast_questions=True`: each training clip (direction aside: nothing else moves) is also asked its
    story's question about another object, or with the options swapped; the clips themselves are the same."""
    contrast = generate_moving_world(
        tmp_path / "x", seed=0, num_train_clips=20, num_eval_clips=20, contrast_questions=True
    )
    assert json.loads(contrast.clips_json.read_text())["clips"] == clips
    assert contrast.questions.read_bytes() == world.questions.read_bytes()
    by_id = {c["id"]: c for c in clips}
    asked = Counter()
    for record in json.loads(contrast.train_json.read_text()):
        clip, turns = by_id[record["id"]], record["conversations"]
        pairs = [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns), 2)]
        questions = [
            (q.replace("<video>", "").replace(SHORT_ANSWER, "").strip(), a) for q, a in pairs if SHORT_ANSWER in q
        ]
        story = [(q, a) for q, a in questions if q == clip["question"]]
        assert story == [(clip["question"], clip["answer"])]
        others = [(q, a) for q, a in questions if q != clip["question"]]
        assert len(others) == (
            clip["type"] != "direction" and (clip["type"] != "disappeared" or clip["answer"] == "yes")
        )
        for question, answer in others:
            assert derive({**clip, "question": question}, range(FRAMES)) == answer, (clip["id"], question)
            asked[clip["type"]] += 1
    assert set(asked) == set(QUESTION_TYPES) - {"direction"}


def test_the_demo_tokenizer_keeps_every_moving_world_word_whole(world, tmp_path):
    """The image demo's tokenizer (which the video demo continues with) is built before any moving world
    exists; `moving_world_vocabulary` must still make each word of a moving world one token."""
    from voco_llama.demo.stages import build_demo_tokenizer
    from voco_llama.demo.toyworld import ensure_world

    image_world = ensure_world(tmp_path / "w", seed=0, num_train_images=20, num_eval_images=8, image_size=32)
    tokenizer = build_demo_tokenizer(image_world)
    words = {w for text in moving_world_texts(world) for w in re.findall(r"[A-Za-z]+", text)}
    split = sorted(w for w in words if len(tokenizer.tokenize(" " + w)) > 1 and len(tokenizer.tokenize(w)) > 1)
    assert not split, f"split into pieces: {split}"
    assert {"left", "down", "disappear", "appear", "before"} <= words
