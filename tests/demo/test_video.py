"""`voco demo --video --preset smoke`: fine-tunes on video records, answers the moving world, measures
the scaling sweep; its report must be reproduced from its answer files and from the formulas.

The image demo's smoke run takes about a minute, so the fixture lays out what the video demo reads
from it -- DIR/world (the toy world with its tokenizer) and DIR/models/{base,voco-k1,voco-k2,avg-pool}
built at the smoke preset's sizes -- untrained: the video demo only reads these directories."""

import json
import shutil

import pytest
from PIL import Image

from voco_llama.cli import main
from voco_llama.core.cache import kv_bytes
from voco_llama.core.modeling import VoCoLlavaConfig
from voco_llama.core.presets import build_model, save_bundle
from voco_llama.core.processing import question_prompt
from voco_llama.demo.movingworld import QUESTION_TYPES, load_moving_world
from voco_llama.demo.presets import PRESETS
from voco_llama.demo.toyworld import build_world_tokenizer, ensure_world
from voco_llama.demo.video import CONTEXT_WINDOW
from voco_llama.eval.evaluate import read_questions
from voco_llama.eval.scorers import score

ANSWER_DIRS = {
    "VoCo K=1": "voco-k1",
    "VoCo K=2": "voco-k2",
    "Avg-pool per frame": "avg-pool-per-frame",
    "Middle frame (full tokens)": "middle-frame",
    "Text only": "text-only",
}
IMAGE_MODELS = {
    "base": dict(num_voco=0, attention_rule="causal"),
    "voco-k1": dict(num_voco=1),
    "voco-k2": dict(num_voco=2),
    "avg-pool": dict(compressor="avgpool"),
}


def _image_demo_layout(out):
    smoke = PRESETS["smoke"].image
    world = ensure_world(out / "world", seed=0, **smoke.world)
    tokenizer = build_world_tokenizer(world)
    for name, overrides in IMAGE_MODELS.items():
        save_bundle(out / "models" / name, *build_model("tiny", tokenizer=tokenizer, **{**smoke.model, **overrides}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("videodemo") / "run"
    _image_demo_layout(out)
    assert main(["demo", "--video", "--preset", "smoke", "--out", str(out)]) == 0
    return out


def _report(out):
    return json.loads((out / "video" / "report.json").read_text())


def test_accuracies_recompute_from_the_answer_files(run):
    report, world = _report(run), load_moving_world(run / "video" / "world")
    assert list(report["accuracy"]) == list(ANSWER_DIRS)
    n_questions = len(read_questions(world.questions))
    for name, slug in ANSWER_DIRS.items():
        answers = run / "video" / "answers" / slug / "moving.jsonl"
        assert len(answers.read_text().splitlines()) == n_questions
        summary = score("gqa", answers, world.answer_key)
        row = report["accuracy"][name]
        assert row["accuracy"] == summary["score"]
        assert row["categories"] == {c: v["accuracy"] for c, v in summary["categories"].items()}
        assert set(row["categories"]) == set(QUESTION_TYPES)


def test_report_follows_its_answer_files(run, tmp_path):
    """Rewrite one row's answers with the key's answers: a re-run must score that row 100%, and only it."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    world = load_moving_world(copy / "video" / "world")
    key = {r["question_id"]: r["answer"] for r in map(json.loads, world.answer_key.read_text().splitlines())}
    answers = copy / "video" / "answers" / "avg-pool-per-frame" / "moving.jsonl"
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    answers.write_text("".join(json.dumps({**a, "text": key[a["question_id"]]}) + "\n" for a in lines))
    assert main(["demo", "--video", "--preset", "smoke", "--out", str(copy)]) == 0
    after, before = _report(copy)["accuracy"], _report(run)["accuracy"]
    assert after["Avg-pool per frame"]["accuracy"] == 100.0
    assert {n: r for n, r in after.items() if n != "Avg-pool per frame"} == {
        n: r for n, r in before.items() if n != "Avg-pool per frame"
    }


def test_middle_frame_row_sees_only_the_middle_frame(run):
    world = load_moving_world(run / "video" / "world")
    clips = sorted(p for p in world.videos_dir.iterdir() if p.is_dir())
    for clip in clips:
        frames = sorted(clip.glob("*.png"))
        given = list((run / "video" / "middle" / clip.name).glob("*.png"))
        assert len(given) == 1
        assert given[0].read_bytes() == frames[(len(frames) - 1) // 2].read_bytes()


def test_scaling_numbers_follow_the_formulas(run):
    report = _report(run)
    preset = PRESETS["smoke"].video
    voco_dir, full_dir = run / "video" / "models" / "voco-k1", run / "video" / "models" / "middle-frame"
    voco_config, full_config = VoCoLlavaConfig.from_pretrained(voco_dir), VoCoLlavaConfig.from_pretrained(full_dir)
    k, n = voco_config.num_voco, full_config.num_vision_tokens
    assert (k, n, full_config.num_voco) == (1, 16, 0)  # smoke: 32 px frames, 8 px patches
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(voco_dir)
    question = read_questions(load_moving_world(run / "video" / "world").questions)[0]["text"]
    rows = report["scaling"]
    assert [r["frames"] for r in rows] == [8, 16, 32, 64, 128, 256]
    for r in rows:
        f = r["frames"]
        prompt = question_prompt(question, "vicuna_v1", num_images=f)
        text = len(tokenizer(prompt).input_ids) - f  # each <image> is one token before expansion
        assert r["text_tokens"] == text
        assert r["voco_positions"] == text + f * k
        assert r["full_positions"] == text + f * n
        assert r["voco_bytes"] == kv_bytes(voco_config, f * k, 4)
        assert r["full_bytes"] == kv_bytes(full_config, f * n, 4)
        assert r["voco_ttft_s"] > 0
    measured = [r["full_ttft_s"] is not None for r in rows]
    assert measured[0] and measured == sorted(measured, reverse=True)  # measured up to a size, then not
    last = rows[-1]
    assert last["voco_positions"] + preset.max_new_tokens <= CONTEXT_WINDOW and last["voco_fits_context"]
    assert not last["full_fits_context"]  # 256 x 16 tokens do not fit
    assert report["goals"]["k1_256_frames_fit_2048"] is True


def test_plot_and_markdown(run):
    png = run / "video" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    md = (run / "video" / "report.md").read_text()
    for name in ANSWER_DIRS:
        assert f"| {name} |" in md
    assert "| 256 | " in md and "256 frames at K=1 fit a 2048-token context: MET" in md


def test_rerun_reuses_finished_stages(run, capsys):
    video = run / "video"
    files = [*video.glob("models/*/model.safetensors"), *video.glob("answers/*/moving.jsonl"), video / "scaling.json"]
    before = {p: p.stat().st_mtime_ns for p in files}
    report = _report(run)
    capsys.readouterr()
    assert main(["demo", "--video", "--preset", "smoke", "--out", str(run)]) == 0
    assert len(before) == 4 + 5 + 1 and {p: p.stat().st_mtime_ns for p in files} == before
    again = _report(run)
    assert again["accuracy"] == report["accuracy"] and again["scaling"] == report["scaling"]
    out = capsys.readouterr().out
    assert "voco train" not in out and "scaling F=" not in out and "generating the moving world" not in out
