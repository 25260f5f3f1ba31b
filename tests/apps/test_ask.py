"""`voco ask` against the model's context: a prompt that does not fit is refused with the lengths,
an answer stops where the context ends."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from voco_llama.cli import main
from voco_llama.core.errors import InputError
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model
from voco_llama.core.processing import encode_prompts, question_prompt


def test_prompt_and_answer_stay_within_the_context():
    model, tok, _ = build_model("tiny")
    model.config.text_config.max_position_embeddings = 64
    cache = model.compress(torch.randn(1, 3, 32, 32))

    def generate(question, new_tokens):
        batch = encode_prompts([question_prompt(question)], tok, model.config)
        # eos -1 never comes: the answer runs to its limit
        return batch, model.answer(**batch, cache=cache, max_new_tokens=new_tokens, eos_token_id=-1)

    batch, out = generate("red circle", 200)
    used = int(batch["attention_mask"].sum()) - model.config.num_vision_tokens  # compact: the group costs K
    assert out.sequences.shape[1] == 64 - used
    with pytest.raises(InputError, match=r"the prompt takes \d+ positions; the model's context is 64"):
        generate(" ".join(["red circle left"] * 40), 8)


def test_ask_from_cache_files_of_different_k_equals_the_masked_pass(tmp_path, tiny_model_dir, capsys):
    """`voco ask --cache video.voco photo.voco`: a K=1 group and a K=4 group in one prompt."""
    model = str(tiny_model_dir(num_voco_choices=(1, 2, 4)))
    images = []
    for i, rgb in enumerate(((200, 30, 30), (30, 30, 200))):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 32), rgb).save(images[-1])
    for image, k in zip(images, ("1", "4")):
        assert (
            main(["compress", "--model", model, "--image", str(image), "--out", f"{image}.voco", "--num-voco", k]) == 0
        )
    capsys.readouterr()
    question = "<image> or <image>: which is red?"
    argv = ["ask", "--model", model, "--question", question, "--json", "--max-new-tokens", "5"]
    assert main([*argv, "--cache", f"{images[0]}.voco", f"{images[1]}.voco"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = VoCoPipeline.from_pretrained(model).ask(
        question, images=images, route="masked", num_voco=[1, 4], max_new_tokens=5
    )
    assert got["token_ids"] == want.token_ids and got["token_ids"]
    assert max(abs(a - b) for a, b in zip(got["logprobs"], want.logprobs)) < 1e-4
