"""Every verb on a folder converted from a VoCo-LLaMA reference checkpoint (`voco convert
--voco-llama-reference`): ask (from a cache file, from pixels through the cache, the single masked
pass, full attention, no image), compress, chat, eval, serve and bench, each answer equal to
`voco ask`'s; a video (several images in one prompt) is refused in one line; its caches record
the layout and a model of the other layout refuses them."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.core.test_convert_reference import save_reference_checkpoint
from tests.serve.kit import Server, image_part, user
from voco_llama.apps.chat import ChatSession, run_chat
from voco_llama.cli import main
from voco_llama.core.cache import VoCoCache
from voco_llama.core.pipeline import VoCoPipeline

QUESTION = "What is it?"
KEY = "test-key"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    save_reference_checkpoint(d / "ref")
    assert main(["convert", "--voco-llama-reference", str(d / "ref"), "--out", str(d / "model")]) == 0
    (d / "frames").mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / f"img{i}.png")
        Image.fromarray(pixels).save(d / "frames" / f"{i:03d}.png")
    return d


def ask(capsys, d, *argv) -> dict:
    capsys.readouterr()
    assert main(["ask", "--model", str(d / "model"), "--question", QUESTION, "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("voco: error: "), err
    return err[0]


def test_ask_compress_chat_eval_on_a_converted_folder(setup, capsys):
    d = setup
    tokens = ["--max-new-tokens", "6"]
    compress = ["compress", "--model", str(d / "model"), "--image", str(d / "img0.png")]
    assert main([*compress, "--out", str(d / "c.voco")]) == 0
    capsys.readouterr()
    cache = VoCoCache.load(d / "c.voco")
    assert cache.layout == "reference" and cache.num_voco == 2
    from_file = ask(capsys, d, "--cache", str(d / "c.voco"), *tokens)
    from_pixels = ask(capsys, d, "--image", str(d / "img0.png"), *tokens)
    masked = ask(capsys, d, "--image", str(d / "img0.png"), "--path", "masked", *tokens)
    assert from_file["token_ids"] == from_pixels["token_ids"] == masked["token_ids"]
    assert np.abs(np.subtract(from_file["logprobs"], masked["logprobs"])).max() < 1e-4
    for route in ("full", "none"):
        image = ["--image", str(d / "img0.png")] if route == "full" else []
        assert len(ask(capsys, d, *image, "--route", route, *tokens)["token_ids"]) > 0
    # several images in one prompt: the reference layout has one
    assert main(["ask", "--model", str(d / "model"), "--video", str(d / "frames"), "--question", QUESTION]) == 2
    assert "the reference layout holds one image per prompt; this prompt has 2" in one_error(capsys)

    out = io.StringIO()
    chat = ChatSession(VoCoPipeline.from_pretrained(d / "model"), max_new_tokens=6, out=out)
    chat.load(cache_file=str(d / "c.voco"))
    assert run_chat(chat, io.StringIO(QUESTION + "\n")) == 0
    assert [answer for _, answer in chat.history] == [from_file["answer"]]

    (d / "q.jsonl").write_text(json.dumps({"question_id": 7, "image": "img0.png", "text": QUESTION}) + "\n")
    argv = ["eval", "--model", str(d / "model"), "--question-file", str(d / "q.jsonl"), "--image-folder", str(d)]
    assert main([*argv, "--answers-file", str(d / "a.jsonl"), "--max-new-tokens", "6"]) == 0
    [answer] = [json.loads(line) for line in (d / "a.jsonl").read_text().splitlines()]
    assert answer["question_id"] == 7 and answer["text"] == from_file["answer"]


def test_serve_answers_as_ask_does(setup, capsys):
    d = setup
    offline = ask(capsys, d, "--image", str(d / "img1.png"), "--max-new-tokens", "6")
    server = Server(["--model", str(d / "model"), "--api-key", KEY])
    try:
        image = Image.open(d / "img1.png").convert("RGB")
        reply = server.client.chat.completions.create(
            model=server.name, messages=user(image_part(image), QUESTION), max_tokens=6, temperature=0
        )
    finally:
        server.stop()
    assert reply.choices[0].message.content == offline["answer"]
    assert reply.usage.completion_tokens == len(offline["token_ids"])


def test_bench_runs_on_a_converted_folder(setup, capsys):
    d = setup
    assert main(["bench", "--model", str(d / "model"), "--quick", "--out", str(d / "bench")]) == 0
    result = json.loads((d / "bench" / "bench.json").read_text())
    assert [row["frames"] for row in result["sweep_frames"]] == [1]  # one image per prompt in this layout
