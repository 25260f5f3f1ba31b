"""The reference code's layout and rule (`voco_layout="reference"`, github.com/Yxxxb/VoCo-LLaMA).

What is tested against what:
  * the cache path (pass 1 over [BOS, vision, newline, VoCo], pass 2 the text against the kept VoCo
    K/V) against our single masked pass, on both attention paths and eager;
  * both against `reference_logits` below: a stock transformers `LlamaForCausalLM` holding the same
    weights, eager attention, fed the mask as the reference code builds it, re-implemented here
    from its description (shared/PAPER.md, "What the reference code actually does"; its
    llava/model/language_model/llava_llama_1stg.py `make_voco_mask_llava`), token by token, without
    our attention module: a token up to the row's last VoCo token sees every real token up to
    itself; a token after it sees only real keys from the first VoCo token up to itself; a row
    without VoCo tokens is causal; positions are 0..n over the real tokens (left padding).
Random weights, fp32, max |logit diff| <= 1e-4, left-padded batches with a text-only row, and
decode steps of one token each (the step that crashes the reference code, its issue #21).
"""

import copy
import json

import pytest
import torch
from transformers import LlamaForCausalLM

from voco_llama.core.attention import label_tokens, voco_attention_mask
from voco_llama.core.errors import InputError
from voco_llama.core.presets import build_model, load_bundle, save_bundle
from voco_llama.core.processing import encode_prompts, question_prompt, reference_prompt

TOL = 1e-4
QUESTIONS = ["What colour is it?", "Is there a\nred square on the left of the image?"]
TEXT_ONLY = "Say one word."


def make(kv_heads=2, num_voco=2, attn="sdpa", path="streams", seed=0):
    model, tok, ip = build_model("tiny", seed=seed, kv_heads=kv_heads, num_voco=num_voco, voco_layout="reference")
    model.set_attn_implementation(attn)
    model.set_attention_path(path)
    return model.eval(), tok, ip


def reference_mask(input_ids, attention_mask, voco_id, prompt_length=None) -> torch.Tensor:
    """[B, 1, L, L] additive mask, written from the description, one query and key at a time. The
    VoCo tokens are those of the prompt (its first `prompt_length` columns), as the reference code
    finds them once before decoding (`voco_loc_back`): a generated `<voco>` is text."""
    batch, length = input_ids.shape
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        real = attention_mask[b].bool()
        vocos = [i for i in range(prompt_length or length) if real[i] and input_ids[b, i] == voco_id]
        for q in range(length):
            if not real[q]:
                allowed[b, q] = True  # padding rows: any finite softmax (their outputs are unused)
                continue
            for k in range(q + 1):
                if real[k]:
                    allowed[b, q, k] = not vocos or q <= vocos[-1] or k >= vocos[0]
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]


def stock_llama(model) -> LlamaForCausalLM:
    """transformers' own Llama with our model's language-model weights (its own copy of the config:
    switching it to eager must leave our model's attention path alone)."""
    llama = LlamaForCausalLM(copy.deepcopy(model.config.text_config))
    state = {k.replace("model.language_model.", "model."): v for k, v in model.state_dict().items()}
    llama.load_state_dict({k: v for k, v in state.items() if k in llama.state_dict()}, strict=True)
    llama.set_attn_implementation("eager")
    return llama.eval()


def reference_logits(model, llama, input_ids, attention_mask, pixel_values, prompt_length=None) -> torch.Tensor:
    """Logits of every token of the rows, the reference code's way (one pass, its mask)."""
    embeds = model.get_input_embeddings()(input_ids)
    is_image = input_ids == model.config.image_token_id
    if pixel_values is not None:
        features = torch.cat(model.get_image_features(pixel_values=pixel_values).pooler_output)
        embeds = embeds.masked_scatter(is_image[..., None], features.reshape(-1, embeds.shape[-1]))
    positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
    mask = reference_mask(input_ids, attention_mask, model.config.voco_token_id, prompt_length)
    return llama(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits


def prompts_of(questions, text_only=True):
    rows = [question_prompt(q) for q in questions]
    return rows + ([question_prompt(TEXT_ONLY, num_images=0)] if text_only else [])


def test_labels_give_the_reference_mask_and_rows_without_voco_are_causal():
    model, tok, _ = make()
    enc = encode_prompts(prompts_of(QUESTIONS), tok, model.config)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (mask == 0).any(), "the batch must include padding"
    labels = label_tokens(ids, mask, model.config.image_token_id, model.config.voco_token_id, "reference")
    ours = voco_attention_mask(labels, labels, "voco", dtype=torch.float32)
    assert torch.equal(ours, reference_mask(ids, mask, model.config.voco_token_id))
    row = ids[0][mask[0].bool()].tolist()
    # the image goes first: BOS, N image tokens, the newline, the K VoCo tokens, then the text
    group = model.config.group_ids(2)
    assert row[: len(group)] == group and row[0] == tok.bos_token_id
    assert row.count(model.config.voco_token_id) == 2 and len(group) == 1 + 16 + 1 + 2


def test_reference_prompt_is_the_reference_codes():
    # llava/eval/model_vqa_loader.py: f"<image>\n{voco}\n" + prompt.replace("\n", '').replace("<image>", '')
    got = reference_prompt(question_prompt("Is it red?\nAnswer yes or no."), 2)
    assert got == (
        "<image>\n<voco><voco>\nA chat between a curious user and an artificial intelligence assistant of the "
        "image. The assistant gives helpful, detailed, and polite answers to the user's questions. "
        "USER: Is it red?Answer yes or no. ASSISTANT:"
    )
    with pytest.raises(InputError, match="one image per prompt"):
        reference_prompt(question_prompt("<image> and <image>?", num_images=None), 2)


@pytest.mark.parametrize(
    "kv_heads,num_voco,attn,path",
    [(4, 2, "sdpa", "streams"), (2, 2, "sdpa", "streams"), (2, 2, "sdpa", "mask"), (2, 1, "eager", "mask")],
    ids=["mha-streams", "gqa-streams", "gqa-mask", "gqa-k1-eager"],
)
def test_cache_path_equals_masked_pass_and_the_reference_re_implementation(kv_heads, num_voco, attn, path):
    model, tok, _ = make(kv_heads=kv_heads, num_voco=num_voco, attn=attn, path=path)
    llama = stock_llama(model)
    assert model.attention_kernel == attn and model.config.attention_path == path  # left alone by the stock one
    torch.manual_seed(3)
    pixels = torch.randn(2, 3, 32, 32)
    enc = encode_prompts(prompts_of(QUESTIONS), tok, model.config)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    real = mask.bool()
    with torch.no_grad():
        expected = reference_logits(model, llama, ids, mask, pixels)
        masked = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        cache = model.compress(pixels)
        prompt = model.prefill(ids, mask, cache=cache)
        logits, query = prompt.logits, prompt.query_labels
    assert (masked - expected)[real].abs().max() <= TOL  # every real token, the group's included
    text = expected.gather(1, query.order[..., None].expand(-1, -1, expected.shape[-1]))
    assert (logits - text)[query.valid].abs().max() <= TOL
    assert cache.layout == "reference" and cache.positions == list(range(18, 18 + num_voco))
    # decoding: every step is one token against the KV cache; the reference recomputed from scratch
    steps = 4
    g_cache = model.answer(ids, mask, cache=cache, max_new_tokens=steps)
    g_masked = model.answer(ids, mask, pixel_values=pixels, max_new_tokens=steps)
    assert torch.equal(g_cache.sequences, g_masked.sequences)
    grown_ids = torch.cat([ids, g_cache.sequences[:, :-1]], dim=1)
    grown_mask = torch.cat([mask, torch.ones_like(g_cache.sequences[:, :-1])], dim=1)
    with torch.no_grad():
        step_logits = reference_logits(model, llama, grown_ids, grown_mask, pixels, ids.shape[1])[:, ids.shape[1] - 1 :]
    log_p = torch.log_softmax(step_logits, -1).gather(2, g_cache.sequences[..., None])[..., 0]
    live = torch.arange(steps)[None] < g_cache.lengths[:, None]
    assert torch.equal(step_logits.argmax(-1)[live], g_cache.sequences[live])
    assert (log_p - g_cache.logprobs)[live].abs().max() <= TOL


def test_one_text_token_after_the_voco_tokens():
    """Queries of one token (the text after the last VoCo token is a single token, left-padded
    beside a row of two): cache path and the reference agree, and so do the decode steps after it."""
    model, tok, _ = make()
    llama = stock_llama(model)
    torch.manual_seed(4)
    pixels = torch.randn(2, 3, 32, 32)
    group = model.config.group_ids(2)
    a, b = tok("cat dog", add_special_tokens=False).input_ids[:2]
    ids = torch.tensor([[tok.pad_token_id, *group, a], [*group, a, b]])
    mask = (ids != tok.pad_token_id).long()
    with torch.no_grad():
        expected = reference_logits(model, llama, ids, mask, pixels)
        prompt = model.prefill(ids, mask, cache=model.compress(pixels))
        logits, query = prompt.logits, prompt.query_labels
    assert query.valid.sum(1).tolist() == [1, 2]
    assert (logits[0, -1] - expected[0, -1]).abs().max() <= TOL
    assert (logits[1] - expected[1, -2:]).abs().max() <= TOL
    generated = model.answer(ids, mask, cache=model.compress(pixels), max_new_tokens=3)
    grown = torch.cat([ids, generated.sequences[:, :-1]], dim=1)
    grown_mask = torch.cat([mask, torch.ones_like(generated.sequences[:, :-1])], dim=1)
    with torch.no_grad():
        steps = reference_logits(model, llama, grown, grown_mask, pixels, ids.shape[1])[:, -3:]
    assert torch.equal(steps.argmax(-1), generated.sequences)
    log_p = torch.log_softmax(steps, -1).gather(2, generated.sequences[..., None])[..., 0]
    assert (log_p - generated.logprobs).abs().max() <= TOL


def test_variant_is_saved_in_config_json_and_caches_do_not_mix(tmp_path):
    model, tok, ip = make()
    folder = save_bundle(tmp_path / "ref", model, tok, ip)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["voco_layout"] == "reference" and saved["position_layout"] == "natural"
    assert saved["voco_head_ids"] == [tok.bos_token_id, model.config.image_token_id, *tok("\n").input_ids[1:]]
    loaded, *_ = load_bundle(folder)
    assert loaded.config.voco_layout == "reference" and loaded.config.group_ids(2) == model.config.group_ids(2)
    pixels = torch.randn(1, 3, 32, 32)
    ours = build_model("tiny", num_voco=2, position_layout="natural")[0].eval()
    ours.load_state_dict(model.state_dict())  # same weights, same fingerprint: only the layout differs
    enc = encode_prompts(prompts_of(QUESTIONS[:1], text_only=False), tok, model.config)
    with pytest.raises(InputError, match="layout 'natural'; this model runs layout 'reference'"):
        model.prefill(enc["input_ids"], enc["attention_mask"], cache=ours.compress(pixels))
    enc = encode_prompts(prompts_of(QUESTIONS[:1], text_only=False), tok, ours.config)
    with pytest.raises(InputError, match="layout 'reference'; this model runs layout 'natural'"):
        ours.prefill(enc["input_ids"], enc["attention_mask"], cache=model.compress(pixels))


def test_config_refuses_a_reference_layout_it_cannot_run():
    model, *_ = make()
    config = model.config.to_dict()
    for change, words in (
        ({"position_layout": "compact"}, "natural positions"),
        ({"voco_head_ids": [1, 2]}, "one image token"),
        ({"voco_layout": "llava"}, "belong to voco_layout 'reference'"),
    ):
        broken = type(model.config)(**{**config, **change})
        with pytest.raises(ValueError, match=words):
            broken.check_compressor()
