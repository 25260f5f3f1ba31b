"""`voco eval`: LLaVA answer files, compress once / ask many, sharding, resume."""

import json

import pytest
from PIL import Image

from voco_llama.cli import main
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model
from voco_llama.eval.evaluate import get_chunk, run_eval


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    for name, colour in (("a.png", (200, 20, 20)), ("b.png", (20, 20, 200))):
        Image.new("RGB", (40, 32), colour).save(d / name)
    questions = [
        {"question_id": i, "image": img, "text": f"Question {i}?\nAnswer the question using a single word or phrase."}
        for i, img in enumerate(["a.png", "b.png", "a.png", "a.png", "b.png"])
    ]
    (d / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    pipe = VoCoPipeline(*build_model("tiny", num_voco=2))
    return d, pipe


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_answers_file_format_and_cache_reuse(setup):
    d, pipe = setup
    summary = run_eval(pipe, d / "q.jsonl", d / "voco.jsonl", d, mode="voco", max_new_tokens=4, batch_size=2)
    assert summary["answered"] == 5 and summary["images_compressed"] == 2 and summary["cache_reuses"] == 3
    answers = lines(d / "voco.jsonl")
    assert [a["question_id"] for a in answers] == [0, 1, 2, 3, 4]
    assert set(answers[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    # the cache path answers exactly what the single masked pass answers
    run_eval(pipe, d / "q.jsonl", d / "masked.jsonl", d, mode="masked", max_new_tokens=4, batch_size=3)
    assert [a["text"] for a in lines(d / "masked.jsonl")] == [a["text"] for a in answers]


def test_resume_repairs_a_torn_line_and_never_duplicates(setup):
    d, pipe = setup
    out = d / "resume.jsonl"
    run_eval(pipe, d / "q.jsonl", out, d, mode="none", max_new_tokens=3)
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n" + full[2][:15])  # killed mid-write of the third line
    summary = run_eval(pipe, d / "q.jsonl", out, d, mode="none", max_new_tokens=3)
    assert summary["skipped_already_answered"] == 2 and summary["answered"] == 3
    assert [a["question_id"] for a in lines(out)] == [0, 1, 2, 3, 4]
    assert run_eval(pipe, d / "q.jsonl", out, d, mode="none")["answered"] == 0


def test_chunks_cover_the_file_like_llava():
    items = list(range(10))
    chunks = [get_chunk(items, 3, i) for i in range(3)]
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_cli_missing_image_exits_2(setup, tmp_path, capsys):
    d, pipe = setup
    model = tmp_path / "m"
    assert main(["init", "--out", str(model)]) == 0
    (tmp_path / "q.jsonl").write_text(json.dumps({"question_id": 1, "image": "gone.png", "text": "Q?"}) + "\n")
    code = main(
        [
            "eval",
            "--model",
            str(model),
            "--question-file",
            str(tmp_path / "q.jsonl"),
            "--image-folder",
            str(tmp_path),
            "--answers-file",
            str(tmp_path / "a.jsonl"),
        ]
    )
    assert code == 2 and "gone.png" in capsys.readouterr().err
