"""The paired cluster bootstrap (demo/paired.py): its full-sample numbers are the scorers', and its errors
behave as paired, image-clustered errors must."""

import json
import math
import random

import numpy as np
import pytest

from voco_llama.core.errors import InputError
from voco_llama.demo.paired import image_stats, paired_bootstrap, score_from_stats
from voco_llama.demo.presets import get_preset
from voco_llama.demo.stats import binomial_se
from voco_llama.demo.toyworld import BENCHES, ensure_world
from voco_llama.eval.scorers import score
from voco_llama.eval.scorers.mmbench import prompt_options

LETTERS = "ABCD"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return ensure_world(tmp_path_factory.mktemp("paired") / "world", **get_preset("smoke").image.world)


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _right(bench: str, gold: str, prompt: str, rng: random.Random) -> str:
    """A right answer, in one of the forms each scorer's parse accepts."""
    if bench in ("pope", "mme"):
        return rng.choice({"yes": ["Yes", "yes", "yes, there is"], "no": ["No", "no.", "No."]}[gold])
    if bench == "mmbench":
        return rng.choice([gold, f"{gold}.", prompt_options(prompt)[gold]])
    if bench == "gqa":
        return rng.choice([gold, gold.capitalize() + "."])
    return gold


def _wrong(bench: str, gold: str, rng: random.Random) -> str:
    if bench in ("pope", "mme"):
        return rng.choice(["maybe", "no" if gold == "yes" else "yes"])  # "maybe": POPE "yes", MME "other"
    if bench in ("mmbench", "seed"):
        return LETTERS[(LETTERS.index(gold) + 1) % 4]
    return "nothing"


def write_answers(path, questions_path, key_path, bench, rng, right=0.6, missing=0.15):
    """A `voco eval`-style answer file: each question right, wrong or unanswered at random."""
    keys = {str(k["question_id"]): k for k in jsonl(key_path)}
    lines = []
    for q in jsonl(questions_path):
        key, draw = keys[str(q["question_id"])], rng.random()
        if draw > 1 - missing:
            continue
        text = _right(bench, key["answer"], q["text"], rng) if draw < right else _wrong(bench, key["answer"], rng)
        lines.append(
            {
                "question_id": q["question_id"],
                "prompt": q["text"],
                "text": text,
                "answer_id": f"a{q['question_id']}",
                "model_id": "test",
                "metadata": {},
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def row_files(tmp_path, world, name, seed, right=0.6, missing=0.15):
    rng = random.Random(seed)
    folder = tmp_path / name
    folder.mkdir()
    return {
        b: write_answers(folder / f"{b}.jsonl", world.questions(b), world.answer_key(b), b, rng, right, missing)
        for b in BENCHES
    }


@pytest.mark.filterwarnings("ignore::voco_llama.eval.answers.ScoringWarning")  # the missing answers
def test_full_sample_stats_give_the_scorers_numbers(tmp_path, world):
    scores, missing = {b: set() for b in BENCHES}, dict.fromkeys(BENCHES, 0)
    for seed in range(5):
        files = row_files(tmp_path, world, f"row{seed}", seed, right=0.5 + 0.1 * seed)
        for bench in BENCHES:
            summary = score(bench, files[bench], world.answer_key(bench))
            images, stats = image_stats(bench, files[bench], world.answer_key(bench))
            assert images == sorted(images) and len(images) == stats.shape[0] >= 1
            assert score_from_stats(bench, stats.sum(0)) == pytest.approx(summary["score"], abs=1e-9)
            if bench == "pope":
                learning = summary["metrics"]["mean_accuracy"]
                assert score_from_stats(bench, stats.sum(0), learning=True) == pytest.approx(learning, abs=1e-9)
            scores[bench].add(round(summary["score"], 6))
            missing[bench] += summary["n_missing"]
    assert all(len(s) >= 2 for s in scores.values()), scores  # the answer files really differ
    assert all(n > 0 for n in missing.values()), missing
    # vectorised over leading axes: each of a stack of sums scored as alone
    images, stats = image_stats("mme", files["mme"], world.answer_key("mme"))
    stack = np.stack([stats[:4].sum(0), stats.sum(0)])
    assert score_from_stats("mme", stack).tolist() == [
        score_from_stats("mme", stack[0]),
        score_from_stats("mme", stack[1]),
    ]


def _bounds(tmp_path, world):
    return {
        "Upper bound": row_files(tmp_path, world, "upper", 1, right=1.0, missing=0.0),
        "Lower bound": row_files(tmp_path, world, "lower", 2, right=0.0, missing=0.0),
    }


def test_a_row_against_itself_differs_by_exactly_zero(tmp_path, world):
    rows = {**_bounds(tmp_path, world), "m": row_files(tmp_path, world, "m", 3)}
    keys = {b: world.answer_key(b) for b in BENCHES}
    result = paired_bootstrap(
        rows, keys, learned=list(BENCHES), comparisons=[("m", "m"), ("m", "Upper bound")], resamples=300
    )
    same, other = result["comparisons"]
    assert same["difference"] == 0.0 and same["se"] == 0.0
    assert all(v == {"difference": 0.0, "se": 0.0} for v in same["scores"].values())
    assert other["se"] > 0.01 and other["difference"] < 0
    upper, lower, m = (result["rows"][n] for n in ("Upper bound", "Lower bound", "m"))
    assert upper["mean_retention"] == 1.0 and upper["mean_retention_se"] == 0.0
    assert lower["mean_retention"] == 0.0 and lower["mean_retention_se"] == 0.0
    assert 0 < m["mean_retention"] < 1 and m["mean_retention_se"] > 0.01
    images = {k["image"] for b in BENCHES for k in jsonl(world.answer_key(b))}
    assert result["n_images"] == len(images) > 8 and result["resamples"] == 300


def _gqa_key(path, images: list[list[str]]):
    """A generic GQA key: per image, its questions' gold answers."""
    lines, n = [], 0
    for i, golds in enumerate(images):
        for gold in golds:
            lines.append({"question_id": f"q{n}", "answer": gold, "category": "query", "image": f"eval_{i:05d}.png"})
            n += 1
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _gqa_answers(path, key_path, right: set[str]):
    lines = [
        {"question_id": k["question_id"], "prompt": "?", "text": k["answer"] if k["question_id"] in right else "none"}
        for k in jsonl(key_path)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _gqa_rows(tmp_path, key, **right: set[str]) -> dict:
    ids = [k["question_id"] for k in jsonl(key)]
    right = {"Upper bound": set(ids), "Lower bound": set(), **right}
    return {name: {"gqa": _gqa_answers(tmp_path / f"{name}.jsonl", key, r)} for name, r in right.items()}


COLOURS = ["red", "green", "blue", "yellow"]


def test_rows_that_differ_on_one_image_have_a_tiny_paired_error(tmp_path):
    rng = random.Random(0)
    key = _gqa_key(tmp_path / "key.jsonl", [[rng.choice(COLOURS), rng.choice(COLOURS)] for _ in range(400)])
    right_a = {f"q{n}" for n in range(800) if n < 2 or rng.random() < 0.6}  # image 0's two questions right
    rows = _gqa_rows(tmp_path, key, a=right_a, b=right_a - {"q0", "q1"})
    result = paired_bootstrap(rows, {"gqa": key}, learned=["gqa"], comparisons=[("a", "b")], resamples=1000)
    (comparison,) = result["comparisons"]
    a, b = result["rows"]["a"], result["rows"]["b"]
    assert comparison["scores"]["gqa"]["difference"] == pytest.approx(100 * 2 / 800, abs=1e-9)
    assert comparison["difference"] == pytest.approx(2 / 800, abs=1e-12)  # bounds 100 and 0: retention = score
    unpaired = math.hypot(a["mean_retention_se"], b["mean_retention_se"])
    assert 0 < comparison["se"] < 0.15 * unpaired
    assert 0 < comparison["scores"]["gqa"]["se"] < 0.15 * math.hypot(a["se"]["gqa"], b["se"]["gqa"])


def test_independent_images_give_the_binomial_error(tmp_path):
    rng = random.Random(1)
    key = _gqa_key(tmp_path / "key.jsonl", [[rng.choice(COLOURS)] for _ in range(400)])
    right = set(rng.sample([f"q{n}" for n in range(400)], 240))
    result = paired_bootstrap(_gqa_rows(tmp_path, key, m=right), {"gqa": key}, resamples=1000, seed=3)
    m = result["rows"]["m"]
    assert m["scores"]["gqa"] == pytest.approx(60.0)
    assert m["se"]["gqa"] == pytest.approx(binomial_se(60.0, 400), rel=0.15)  # 2.45 points
    assert m["mean_retention"] is None and result["comparisons"] == []


def test_duplicated_questions_leave_the_cluster_error_unchanged(tmp_path):
    rng = random.Random(2)
    golds = [[rng.choice(COLOURS) for _ in range(rng.randint(1, 3))] for _ in range(300)]
    once, twice = (tmp_path / "once", tmp_path / "twice")
    once.mkdir(), twice.mkdir()
    key1 = _gqa_key(once / "key.jsonl", golds)
    key2 = _gqa_key(twice / "key.jsonl", [[g for g in gs for _ in range(2)] for gs in golds])
    # the same answer to both copies: question p of the first key is q{2p} and q{2p+1} in the second
    ids1 = [k["question_id"] for k in jsonl(key1)]
    right1 = {q for q in ids1 if rng.random() < 0.55}
    right2 = {f"q{2 * ids1.index(q) + k}" for q in right1 for k in range(2)}
    se = {}
    for folder, key, right in ((once, key1, right1), (twice, key2, right2)):
        result = paired_bootstrap(_gqa_rows(folder, key, m=right), {"gqa": key}, resamples=1000)
        m = result["rows"]["m"]
        se[folder.name] = (
            m["scores"]["gqa"],
            m["se"]["gqa"],
            binomial_se(m["scores"]["gqa"], len(jsonl(key))),
        )
    (score1, cluster1, iid1), (score2, cluster2, iid2) = se["once"], se["twice"]
    assert score2 == pytest.approx(score1, abs=1e-9)
    assert cluster2 == pytest.approx(cluster1, rel=0.10)  # resampling images: the copies add nothing
    assert iid2 == pytest.approx(iid1 / math.sqrt(2), rel=1e-9)  # counting questions: a false sqrt(2)


def test_bad_input_is_refused_by_name(tmp_path, world):
    key = tmp_path / "key.jsonl"
    key.write_text(json.dumps({"question_id": 1, "answer": "red"}) + "\n")
    answers = _gqa_answers(tmp_path / "a.jsonl", key, {1})
    with pytest.raises(InputError, match=r"key.jsonl:1: no 'image'"):
        image_stats("gqa", answers, key)
    key.write_text(
        "".join(
            json.dumps({"question_id": n, "answer": "A", "group": "g", "image": f"{n}.png"}) + "\n" for n in range(2)
        )
    )
    answers = _gqa_answers(tmp_path / "a.jsonl", key, {0, 1})
    with pytest.raises(InputError, match="key.jsonl: MMBench group 'g' spans images 0.png and 1.png"):
        image_stats("mmbench", answers, key)
    rows = _bounds(tmp_path, world)
    keys = {b: world.answer_key(b) for b in BENCHES}
    with pytest.raises(InputError, match="no row 'VoCo K=1'"):
        paired_bootstrap(rows, keys, comparisons=[("VoCo K=1", "Upper bound")])
    del rows["Lower bound"]["seed"]
    with pytest.raises(InputError, match="row 'Lower bound' has no answers for seed"):
        paired_bootstrap(rows, keys)
