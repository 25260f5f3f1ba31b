"""`voco eval`: LLaVA answer files, compress once / ask many, sharding, resume only what the same
run started, text-only and mixed questions, LLaVA's ScienceQA file."""

import json

import pytest
from PIL import Image

from voco_llama.cli import main
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model
from voco_llama.eval.evaluate import answered_ids, get_chunk, run_eval

from ..conftest import interrupt_voco


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
    summary = run_eval(pipe, d / "q.jsonl", d / "voco.jsonl", d, route="cache", max_new_tokens=4, batch_size=2)
    assert summary["answered"] == 5 and summary["images_compressed"] == 2 and summary["cache_reuses"] == 3
    answers = lines(d / "voco.jsonl")
    assert [a["question_id"] for a in answers] == [0, 1, 2, 3, 4]
    assert set(answers[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    # the cache path answers exactly what the single masked pass answers
    run_eval(pipe, d / "q.jsonl", d / "masked.jsonl", d, route="masked", max_new_tokens=4, batch_size=3)
    assert [a["text"] for a in lines(d / "masked.jsonl")] == [a["text"] for a in answers]


def test_resume_repairs_a_torn_line_and_never_duplicates(setup):
    d, pipe = setup
    out = d / "resume.jsonl"
    run_eval(pipe, d / "q.jsonl", out, d, route="none", max_new_tokens=3)
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n" + full[2][:15])  # killed mid-write of the third line
    summary = run_eval(pipe, d / "q.jsonl", out, d, route="none", max_new_tokens=3)
    assert summary["skipped_already_answered"] == 2 and summary["answered"] == 3
    assert [a["question_id"] for a in lines(out)] == [0, 1, 2, 3, 4]
    assert run_eval(pipe, d / "q.jsonl", out, d, route="none", max_new_tokens=3)["answered"] == 0


def test_chunks_cover_the_file_like_llava():
    items = list(range(10))
    chunks = [get_chunk(items, 3, i) for i in range(3)]
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_cli_missing_image_exits_2(setup, tmp_path, capsys):
    d, pipe = setup
    model = tmp_path / "m"
    assert main(["init", "--out", str(model)]) == 0
    (tmp_path / "q.jsonl").write_text(json.dumps({"question_id": 1, "image": "gone.png", "text": "Q?"}) + "\n")
    assert main(eval_args(model, tmp_path)) == 2 and "gone.png" in capsys.readouterr().err


def eval_args(model, tmp_path, *extra):
    return [
        "eval",
        "--model",
        str(model),
        "--question-file",
        str(tmp_path / "q.jsonl"),
        "--image-folder",
        str(tmp_path),
        "--answers-file",
        str(tmp_path / "a.jsonl"),
        "--max-new-tokens",
        "2",
        *extra,
    ]


def test_resume_only_the_run_that_started_the_file(setup, tiny_model_dir, tmp_path, capsys):
    # Issue 17: a re-run with another model or route kept the old answers ("answered 0, skipped 96").
    d, _ = setup
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    (tmp_path / "q.jsonl").write_text((d / "q.jsonl").read_text())
    # a model trained for K in {1, 2}: --num-voco 1 is a K it takes, but not the one this file was started with
    model, other = tiny_model_dir(num_voco=2, num_voco_choices=(1, 2)), tiny_model_dir(num_voco=2, seed=1)
    assert main(eval_args(model, tmp_path, "--route", "masked")) == 0
    first = (tmp_path / "a.jsonl").read_text()
    meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    assert (meta["route"], meta["num_voco"], meta["max_new_tokens"]) == ("masked", 2, 2)
    capsys.readouterr()
    for extra in (["--route", "cache"], ["--route", "masked", "--num-voco", "1"]):
        assert main(eval_args(model, tmp_path, *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("voco: error: ") and "started by another run" in err and "--overwrite" in err
        assert len(err.strip().splitlines()) == 1
    assert main([*eval_args(other, tmp_path, "--route", "masked")]) == 2
    assert "model_fingerprint" in capsys.readouterr().err
    assert (tmp_path / "a.jsonl").read_text() == first  # nothing appended, nothing lost
    assert main(eval_args(model, tmp_path, "--route", "masked")) == 0  # the same run resumes
    assert json.loads(capsys.readouterr().out)["skipped_already_answered"] == 5
    assert main(eval_args(other, tmp_path, "--route", "cache", "--overwrite")) == 0
    assert json.loads(capsys.readouterr().out)["answered"] == 5
    assert len(lines(tmp_path / "a.jsonl")) == 5
    assert json.loads((tmp_path / "a.jsonl.meta.json").read_text())["route"] == "cache"
    # an answers file nobody recorded (an older run, another tool) is not appended to
    (tmp_path / "a.jsonl.meta.json").unlink()
    assert main(eval_args(other, tmp_path, "--route", "cache")) == 2
    assert "no a.jsonl.meta.json" in capsys.readouterr().err


def test_earlier_route_spellings_resume_the_same_run(setup, tiny_model_dir, tmp_path, capsys):
    """`--mode voco` (the flag's and route's earlier names) is `--route cache`, and a file whose
    sidecar an earlier version wrote ("mode": "voco") resumes under it."""
    d, _ = setup
    for name in ("a.png", "b.png", "q.jsonl"):
        (tmp_path / name).write_bytes((d / name).read_bytes())
    model, sidecar = tiny_model_dir(num_voco=2), tmp_path / "a.jsonl.meta.json"
    assert main(eval_args(model, tmp_path, "--route", "cache")) == 0
    first = (tmp_path / "a.jsonl").read_text()
    capsys.readouterr()
    for old in (["--mode", "voco"], ["--route", "voco"], ["--mode", "cache"]):
        assert main(eval_args(model, tmp_path, *old)) == 0
        assert json.loads(capsys.readouterr().out)["skipped_already_answered"] == 5
    meta = json.loads(sidecar.read_text())
    earlier = {("mode" if k == "route" else k): ("voco" if k == "route" else v) for k, v in meta.items()}
    sidecar.write_text(json.dumps(earlier))
    assert main(eval_args(model, tmp_path)) == 0  # the default route, cache
    assert json.loads(capsys.readouterr().out)["skipped_already_answered"] == 5
    assert json.loads(sidecar.read_text()) == meta and (tmp_path / "a.jsonl").read_text() == first
    sidecar.write_text(json.dumps(earlier))
    assert main(eval_args(model, tmp_path, "--route", "masked")) == 2  # an old cache run is still not a masked one
    assert "route 'cache' -> 'masked'" in capsys.readouterr().err
    assert main(eval_args(model, tmp_path, "--route", "bogus")) == 2
    err = capsys.readouterr().err
    assert err.startswith("voco: error: eval: argument --route: unknown route 'bogus'") and len(err.splitlines()) == 1


@pytest.mark.parametrize("flag, value", [("--max-new-tokens", "0"), ("--batch-size", "0"), ("--num-voco", "-1")])
def test_eval_refuses_counts_below_1(tmp_path, tiny_model_dir, capsys, flag, value):
    (tmp_path / "q.jsonl").write_text(json.dumps({"question_id": 1, "text": "Q?"}) + "\n")
    assert main([*eval_args(tiny_model_dir(), tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voco: error: ") and flag in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.jsonl").exists()


def test_text_only_image_and_video_questions_in_one_batch(setup, tmp_path):
    # Issue 17: a question without "image" (as ScienceQA has), or image and video questions in one
    # batch, raised KeyError. Runs of one kind now share a batch; the file order is kept.
    d, pipe = setup
    frames = tmp_path / "clip"
    frames.mkdir()
    for i, colour in enumerate(((200, 20, 20), (20, 200, 20), (20, 20, 200))):
        Image.new("RGB", (40, 32), colour).save(frames / f"{i:03d}.png")
    (tmp_path / "a.png").write_bytes((d / "a.png").read_bytes())
    questions = [
        {"question_id": 0, "image": "a.png", "text": "What colour?"},
        {"question_id": 1, "text": "Which is a mammal?\nA. cat\nB. fish"},
        {"question_id": 2, "video": "clip", "text": "Which way?"},
        {"question_id": 3, "image": "a.png", "text": "What shape?"},
        {"question_id": 4, "text": "Is the sky blue?"},
    ]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    for route in ("cache", "masked"):
        out = tmp_path / f"{route}.jsonl"
        summary = run_eval(pipe, tmp_path / "q.jsonl", out, tmp_path, route=route, num_frames=3, max_new_tokens=3)
        assert summary["answered"] == 5
        got = lines(out)
        assert [a["question_id"] for a in got] == [0, 1, 2, 3, 4]
        assert [a["prompt"] for a in got] == [q["text"] for q in questions]  # model_vqa_loader's prompt
        for i in (1, 4):  # answered from the text alone, as the none route answers it
            assert got[i]["text"] == pipe.ask(questions[i]["text"], route="none", max_new_tokens=3).text
        assert (
            got[0]["text"]
            == pipe.ask("What colour?", images=[tmp_path / "a.png"], route="cache", max_new_tokens=3).text
        )
    assert summary["images_compressed"] == 0  # masked compresses nothing


def test_llava_scienceqa_question_file(setup, tmp_path):
    # model_vqa_science.py's input (llava_test_CQM-A.json): ids are strings, and the answer's prompt
    # opens with "<image>" exactly for image questions -- what eval_science_qa.py reads.
    d, pipe = setup
    (tmp_path / "a.png").write_bytes((d / "a.png").read_bytes())
    human = "<image>\nWhich colour?\nA. red\nB. blue"
    records = [
        {"id": "4", "image": "a.png", "conversations": [{"from": "human", "value": human}]},
        {"id": "11", "conversations": [{"from": "human", "value": "Which is a mammal?\nA. cat\nB. fish"}]},
    ]
    (tmp_path / "test.json").write_text(json.dumps(records))
    out = tmp_path / "sqa.jsonl"
    run_eval(pipe, tmp_path / "test.json", out, tmp_path, max_new_tokens=2, single_pred_prompt=True)
    got = lines(out)
    instruction = "\nAnswer with the option's letter from the given choices directly."
    assert [a["question_id"] for a in got] == ["4", "11"]
    assert got[0]["prompt"] == "<image>\nWhich colour?\nA. red\nB. blue" + instruction
    assert got[1]["prompt"] == "Which is a mammal?\nA. cat\nB. fish" + instruction
    asked = pipe.ask("Which colour?\nA. red\nB. blue" + instruction, images=[tmp_path / "a.png"], max_new_tokens=2)
    assert got[0]["text"] == asked.text


def test_ctrl_c_is_one_line_saying_what_was_kept_exit_130(tiny_model_dir, tmp_path):
    Image.new("RGB", (40, 32), (200, 20, 20)).save(tmp_path / "a.png")
    n = 3000  # far more than get answered before the signal
    questions = [{"question_id": i, "image": "a.png", "text": f"Question {i}?"} for i in range(n)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    answers = tmp_path / "a.jsonl"

    def two_batches_written():
        return answers.exists() and answers.read_text().count("\n") >= 2

    argv = eval_args(tiny_model_dir(), tmp_path, "--batch-size", "1")
    code, err = interrupt_voco(argv, two_batches_written)
    kept = len(answered_ids(answers))
    assert code == 130
    assert err.splitlines() == [
        f"voco: interrupted: {answers}: {kept} of {n} answers kept; the same command resumes"
    ], err
    assert 2 <= kept < n and len(lines(answers)) == kept


def test_an_error_after_answers_is_one_line_without_the_progress_bar(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    Image.new("RGB", (40, 32), (200, 20, 20)).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    questions = [{"question_id": i, "image": img, "text": "Q?"} for i, img in enumerate(["a.png", "a.png", "bad.png"])]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    argv = eval_args(tiny_model_dir(), tmp_path, "--batch-size", "1")
    done = subprocess.run([sys.executable, "-m", "voco_llama.cli", *argv], capture_output=True, text=True)
    assert done.returncode == 2
    err = done.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith(f"voco: error: {tmp_path / 'bad.png'}: unreadable"), done.stderr
    assert len(lines(tmp_path / "a.jsonl")) == 2  # the answers before it are kept


def test_an_id_asked_twice_with_two_texts_is_answered_twice_and_resumed(setup, tmp_path):
    # LLaVA's MME question file: two questions per "subtask/image.png" id (the same id and text twice
    # is refused: tests/test_cli_errors.py)
    d, pipe = setup
    texts = ["Is the square red? Please answer yes or no.", "Is the square blue? Please answer yes or no."]
    questions = [{"question_id": "color/a.png", "image": "a.png", "text": t} for t in texts]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    answers = tmp_path / "a.jsonl"
    run = dict(image_folder=d, max_new_tokens=2)
    assert run_eval(pipe, tmp_path / "q.jsonl", answers, **run)["answered"] == 2
    assert [a["prompt"] for a in lines(answers)] == texts
    kept = answers.read_text().splitlines()
    answers.write_text(kept[0] + "\n")  # as if killed after the first
    summary = run_eval(pipe, tmp_path / "q.jsonl", answers, **run)
    assert (summary["answered"], summary["skipped_already_answered"]) == (1, 1)
    assert [a["prompt"] for a in lines(answers)] == texts
