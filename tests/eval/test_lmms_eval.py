"""The plugin and the toy tasks under the real lmms-eval (skipped where it is not installed)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip(
    "lmms_eval", reason="lmms-eval is not installed (`make lmms`: the [lmms] extra, then lmms-eval --no-deps)"
)

from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.demo.toyworld import generate_world
from voco_llama.eval.evaluate import run_eval
from voco_llama.eval.lmms import VoCoLlava
from voco_llama.eval.lmms_tasks import TASKS_DIR
from voco_llama.eval.lmms_tasks import utils as task_utils
from voco_llama.eval.scorers import score

LIMIT = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("toy") / "world", num_train_images=4, num_eval_images=24)


@pytest.fixture
def offline(world, tmp_path, monkeypatch):
    env = {
        "VOCO_TOY_WORLD": str(world.root),
        "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "datasets"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def first_questions(world, bench, out_dir):
    """The first LIMIT questions of a bench (what `--limit` runs) and their answer-key lines."""
    questions = world.questions(bench).read_text().splitlines()[:LIMIT]
    ids = {json.loads(q)["question_id"] for q in questions}
    key = [line for line in world.answer_key(bench).read_text().splitlines() if json.loads(line)["question_id"] in ids]
    (out_dir / f"{bench}.q.jsonl").write_text("\n".join(questions) + "\n")
    (out_dir / f"{bench}.key.jsonl").write_text("\n".join(key) + "\n")
    return out_dir / f"{bench}.q.jsonl", out_dir / f"{bench}.key.jsonl"


def test_lmms_eval_scores_equal_voco_eval_and_voco_score(world, offline, tiny_model_dir, tmp_path):
    model = tiny_model_dir(num_voco=1)
    benches = ("gqa", "pope", "mmbench")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmms_eval",
            "--model",
            "voco_llava",
            "--model_args",
            f"pretrained={model}",
            "--tasks",
            ",".join(f"voco_toy_{b}" for b in benches),
            "--include_path",
            str(TASKS_DIR),
            "--limit",
            str(LIMIT),
            "--output_path",
            str(tmp_path / "lmms"),
            "--log_samples",
        ],
        env={**os.environ, **offline, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "Error during evaluation" not in run.stderr, run.stderr[-3000:]
    (results_file,) = (tmp_path / "lmms").rglob("*results*.json")
    results = json.loads(results_file.read_text())["results"]
    pipe = VoCoPipeline.from_pretrained(model)
    for bench in benches:
        questions, key = first_questions(world, bench, tmp_path)
        answers = tmp_path / f"{bench}.answers.jsonl"
        run_eval(pipe, questions, answers, world.images_dir, route="cache", max_new_tokens=16, batch_size=1)
        ours = score(bench, answers, key)["score"]
        assert results[f"voco_toy_{bench}"]["voco_score,none"] == pytest.approx(ours, abs=1e-9), bench
        # and answer for answer: the plugin says what `voco eval` says
        (samples,) = (tmp_path / "lmms").rglob(f"*samples_voco_toy_{bench}.jsonl")
        said = [json.loads(line)["filtered_resps"] for line in samples.read_text().splitlines()]
        assert said == [json.loads(line)["text"] for line in answers.read_text().splitlines()], bench


def test_multiple_choice_picks_the_most_likely_option_in_lmms_evals_own_scoring(
    world, offline, tiny_model_dir, reference_loss
):
    # lmms-eval takes the argmin of what loglikelihood returns: a loss. (Its evaluator cannot run a
    # multiple-choice task in 0.7.3, for any model: unwrap_generation_output turns each (loss,
    # greedy) pair into a string; so the task's own process_results is called here directly.)
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    task = get_task_dict(["voco_toy_seed_mc"], manager)["voco_toy_seed_mc"]
    docs = task.test_docs()
    lm = VoCoLlava(pretrained=str(tiny_model_dir(num_voco=1)))
    lm.task_dict = {"voco_toy_seed_mc": {"test": docs}}
    pipe = VoCoPipeline(lm.model, lm.tokenizer, lm.pipe.image_processor)
    for doc_id in range(3):
        doc = docs[doc_id]
        meta = {"task": "voco_toy_seed_mc", "doc_id": doc_id, "repeats": 1, "split": "test"}
        requests = task.construct_requests(doc_id=doc_id, ctx=task.doc_to_text(doc), metadata=meta)
        results = lm.loglikelihood(requests)
        image = task_utils.doc_to_visual(doc)[0]
        losses = [reference_loss(pipe, doc["text"], image, letter) for letter in task_utils.LETTERS]
        assert [loss for loss, _ in results] == pytest.approx(losses, abs=1e-4)
        likely, unlikely = min(range(4), key=losses.__getitem__), max(range(4), key=losses.__getitem__)
        assert task.process_results({**doc, "answer": task_utils.LETTERS[likely]}, results)["acc"] == 1.0
        assert task.process_results({**doc, "answer": task_utils.LETTERS[unlikely]}, results)["acc"] == 0.0
