"""`voco ask` against the model's context: a prompt that does not fit is refused with the lengths,
an answer stops where the context ends."""

from __future__ import annotations

import pytest
import torch

from voco_llama.core.errors import InputError
from voco_llama.core.presets import build_model
from voco_llama.core.processing import encode_prompts, question_prompt


def test_prompt_and_answer_stay_within_the_context():
    model, tok, _ = build_model("tiny")
    model.config.text_config.max_position_embeddings = 64
    cache = model.compress(torch.randn(1, 3, 32, 32))

    def generate(question, new_tokens):
        batch = encode_prompts([question_prompt(question)], tok, model.config)
        # eos -1 never comes: the answer runs to its limit
        return batch, model.generate(**batch, cache=cache, max_new_tokens=new_tokens, eos_token_id=-1)

    batch, out = generate("red circle", 200)
    used = int(batch["attention_mask"].sum()) - model.config.num_vision_tokens  # compact: the group costs K
    assert out.sequences.shape[1] == 64 - used
    with pytest.raises(InputError, match=r"the prompt takes \d+ positions; the model's context is 64"):
        generate(" ".join(["red circle left"] * 40), 8)
