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
from voco_llama.demo.stages import build_demo_tokenizer
from voco_llama.demo.toyworld import ensure_world
from voco_llama.demo.video_report import CONTEXT_WINDOW
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
    tokenizer = build_demo_tokenizer(world)
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


def test_frames_sampled_accuracies_recompute_and_goals_follow_the_table(run):
    report, world = _report(run), load_moving_world(run / "video" / "world")
    preset = PRESETS["smoke"].video
    by_frames = report["accuracy_by_frames_sampled"]
    assert [int(f) for f in by_frames] == list(preset.accuracy_frames)
    for f, row in by_frames.items():
        slug = "voco-k1" if int(f) == preset.num_frames else f"voco-k1-{f}-frames"
        summary = score("gqa", run / "video" / "answers" / slug / "moving.jsonl", world.answer_key)
        assert row["accuracy"] == summary["score"]
        p, n = summary["score"] / 100, summary["n_questions"]
        assert row["se"] == pytest.approx(100 * (p * (1 - p) / n) ** 0.5)
    assert by_frames[str(preset.num_frames)] == report["accuracy"]["VoCo K=1"]
    curve = report["voco_k1_curve"]  # smoke: 2 steps, a checkpoint every step
    assert list(curve) == ["1", "2"] and curve["2"] == report["accuracy"]["VoCo K=1"]
    step1 = score("gqa", run / "video" / "answers" / "voco-k1-step1" / "moving.jsonl", world.answer_key)
    assert curve["1"]["categories"] == {c: v["accuracy"] for c, v in step1["categories"].items()}
    accuracy, goals = report["accuracy"], report["goals"]
    for name in goals["required_margins_points"]:
        assert goals["margins_points"][name] == accuracy["VoCo K=1"]["accuracy"] - accuracy[name]["accuracy"]
    met = all(goals["margins_points"][n] >= need for n, need in goals["required_margins_points"].items())
    assert goals["voco_beats_baselines"] is met
    difference = accuracy["VoCo K=2"]["accuracy"] - accuracy["VoCo K=1"]["accuracy"]
    assert goals["k2_at_least_k1"] is (difference >= -goals["k2_noise_points"])
    md = (run / "video" / "report.md").read_text()
    assert (
        "VoCo K=1 per frame beats one full frame and text only by 15 points and avg-pool per frame by 5: "
        + ("MET" if met else "NOT MET")
    ) in md


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
    for png in (run / "video" / "scaling.png", run / "video" / "frames.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
    md = (run / "video" / "report.md").read_text()
    for name in ANSWER_DIRS:
        assert f"| {name} |" in md
    assert "| 256 | " in md and "256 frames at K=1 fit a 2048-token context: MET" in md
    probe = _report(run)["probe"]
    assert set(probe["features"]) == {"VoCo cache", "pooled vision", "vision tokens"}
    assert probe["frames"] == 4 * PRESETS["smoke"].video.train_clips  # 4 frames of every training clip
    for name, row in probe["features"].items():
        assert f"| {name} | {row['dims']} | {row['colour presence'][0]:.1f} |" in md


def test_rerun_reuses_finished_stages(run, capsys):
    video = run / "video"
    files = [*video.glob("models/*/model.safetensors"), *video.glob("answers/*/moving.jsonl"), video / "scaling.json"]
    before = {p: p.stat().st_mtime_ns for p in files}
    report = _report(run)
    capsys.readouterr()
    assert main(["demo", "--video", "--preset", "smoke", "--out", str(run)]) == 0
    assert len(before) == 4 + 5 + 2 + 1 + 1  # models, rows, other frame counts, curve step 1, scaling
    assert {p: p.stat().st_mtime_ns for p in files} == before
    again = _report(run)
    assert again["accuracy"] == report["accuracy"] and again["scaling"] == report["scaling"]
    out = capsys.readouterr().out
    assert "voco train" not in out and "scaling F=" not in out and "generating the moving world" not in out


def _h264_or_mpeg4(av):
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError, by version
            continue
    return None


def test_ask_answers_an_encoded_mp4_from_per_frame_caches(run, tmp_path, capsys):
    """An eval clip encoded to mp4 by libavcodec (PyAV): `voco ask --video clip.mp4` decodes it, compresses
    each sampled frame alone and answers from the caches -- the same answer as one masked pass over
    every frame's tokens."""
    av = pytest.importorskip("av")
    from voco_llama.core.video import read_video

    codec = _h264_or_mpeg4(av)
    if codec is None:
        pytest.skip("this PyAV build has no H.264 or MPEG-4 encoder, so no mp4 can be made here")
    world = load_moving_world(run / "video" / "world")
    question = read_questions(world.questions)[0]
    pngs = sorted((world.videos_dir / question["video"]).glob("*.png"))
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        with Image.open(pngs[0]) as first:
            stream.width, stream.height = first.size
        stream.pix_fmt = "yuv420p"
        for png in pngs:
            with Image.open(png) as frame:
                container.mux(stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))))
        container.mux(stream.encode())
    decoded = read_video(path, None)
    assert len(decoded) == len(pngs)
    import numpy as np

    for frame, png in zip(decoded, pngs):  # lossy, but the same picture
        with Image.open(png) as original:
            error = np.abs(np.asarray(frame, float) - np.asarray(original.convert("RGB"), float)).mean()
        assert error < 12, f"{png.name}: mean absolute error {error:.1f} of 255 after encoding"
    model = run / "video" / "models" / "voco-k1"
    frames = str(PRESETS["smoke"].video.num_frames)
    argv = ["ask", "--model", str(model), "--video", str(path), "--num-frames", frames, "--json"]
    argv += ["--question", question["text"], "--max-new-tokens", "3"]
    capsys.readouterr()
    assert main(argv) == 0
    from_caches = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(argv + ["--route", "masked"]) == 0
    masked = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_caches["route"] == "cache" and from_caches["token_ids"] == masked["token_ids"]
    assert max(abs(a - b) for a, b in zip(from_caches["logprobs"], masked["logprobs"])) < 1e-4
