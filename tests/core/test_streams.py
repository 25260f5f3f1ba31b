"""The VoCo rule as causal streams (streams.py) against the dense 4D mask (the reference).

Both paths run on models with identical weights; logits of every real token and every
parameter's gradient must agree. fp32 on CPU: 1e-5. For a CUDA box (scripts/gpu_check.sh):
VOCO_TEST_DEVICE=cuda VOCO_TEST_DTYPE=bfloat16 runs the same tests in bf16, where the tolerance is
stated per tensor as 3e-2 x its largest reference magnitude (bf16 keeps 8 mantissa bits: one
rounding is up to 3.9e-3 relative, and the two paths round in different orders over 2 layers).

The FlashAttention-2 path packs every stream into one `flash_attn_varlen_func` call. flash-attn
needs CUDA, so on CPU these tests substitute `reference_varlen` below: the same cu_seqlens
contract written in plain torch, one sequence at a time. That tests our packing for real (which
tokens go to which sequence, in which order, where the outputs go back); on a CUDA box with
flash-attn installed the real kernel runs instead, and `test_reference_varlen_is_flash_attn`
checks the reference against it.
"""

import copy
import os

import pytest
import torch
from transformers.utils import is_flash_attn_2_available

from voco_llama.core import modeling, streams
from voco_llama.core.attention import label_tokens
from voco_llama.core.modeling import _last_valid
from voco_llama.core.presets import build_model
from voco_llama.core.processing import encode_prompts, question_prompt

DEVICE = torch.device(os.environ.get("VOCO_TEST_DEVICE", "cpu"))
DTYPE = getattr(torch, os.environ.get("VOCO_TEST_DTYPE", "float32"))
REAL_FLASH = DEVICE.type == "cuda" and DTYPE != torch.float32 and is_flash_attn_2_available()


def close(got, want, what):
    """fp32: |got - want| <= 1e-5; half precision: <= 3e-2 x max |want| (see the module doc)."""
    diff = (got.float() - want.float()).abs().max().item() if got.numel() else 0.0
    tol = 1e-5 if DTYPE == torch.float32 else 3e-2 * want.float().abs().max().item()
    assert diff <= tol, f"{what}: max |diff| {diff:.3g} > {tol:.3g}"


def reference_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw):
    """flash_attn_varlen_func's contract in plain torch: q [total_q, H, d], k/v [total_k, Hk, d]
    (Hk divides H), sequence i is rows cu[i]:cu[i+1] (int32), max_seqlen the longest; `causal`
    aligns a sequence's query block with the end of its keys (FA2 >= 2.1)."""
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32 and kw.get("dropout_p", 0.0) == 0.0
    lengths_q, lengths_k = cu_seqlens_q.diff(), cu_seqlens_k.diff()
    assert int(lengths_q.max()) == max_seqlen_q and int(lengths_k.max()) == max_seqlen_k
    assert int(cu_seqlens_q[-1]) == len(q) and int(cu_seqlens_k[-1]) == len(k) == len(v)
    scale = kw.get("softmax_scale") or q.shape[-1] ** -0.5
    out = []
    for i in range(len(lengths_q)):
        qi = q[cu_seqlens_q[i] : cu_seqlens_q[i + 1]].transpose(0, 1).float()
        ki, vi = (
            x[cu_seqlens_k[i] : cu_seqlens_k[i + 1]].repeat_interleave(q.shape[1] // k.shape[1], 1).transpose(0, 1)
            for x in (k, v)
        )
        scores = qi @ ki.float().transpose(1, 2) * scale
        if kw.get("causal"):
            lq, lk = qi.shape[1], ki.shape[1]
            allowed = torch.arange(lk, device=q.device)[None] <= torch.arange(lq, device=q.device)[:, None] + lk - lq
            scores = scores.masked_fill(~allowed, float("-inf"))
        out.append((scores.softmax(-1) @ vi.float()).transpose(0, 1).to(q.dtype))
    return torch.cat(out)


def pair(kernel="sdpa", monkeypatch=None, **overrides):
    """(streams model, dense-mask model with the same weights, tokenizer)."""
    model, tok, _ = build_model("tiny", **overrides)
    model = model.to(DEVICE, DTYPE).eval()
    reference = copy.deepcopy(model)
    reference.set_attention_path("mask")
    if kernel == "flash_attention_2":
        if REAL_FLASH:
            model.set_attn_implementation({"text_config": "flash_attention_2"})
        else:
            # transformers would refuse the name without flash-attn; route the text model by hand
            model.text_model.config._attn_implementation_internal = streams.STREAM_IMPLEMENTATIONS[kernel]
            monkeypatch.setattr(streams, "_flash_varlen_func", lambda: reference_varlen)
    assert model.text_model.config._attn_implementation == streams.STREAM_IMPLEMENTATIONS[kernel]
    assert reference.text_model.config._attn_implementation == "sdpa"
    return model, reference, tok


def no_dense_masks(monkeypatch):
    """Record (queries, keys) of every mask the model builds."""
    rows = []

    def spy(query, key, rule="voco", dtype=None):
        rows.append((query.kind.shape[1], key.kind.shape[1]))
        return real(query, key, rule, dtype)

    real = modeling.voco_attention_mask
    monkeypatch.setattr(modeling, "voco_attention_mask", spy)
    return rows


def training_batch(tok, model, questions, padding="left"):
    prompts = [question_prompt(q, num_images=None, history=h) for q, h in questions]
    enc = encode_prompts(prompts, tok, model.config)
    if padding == "right":  # move each row's tokens to the start
        real = enc["attention_mask"].bool()
        order = torch.sort((~real).int(), dim=1, stable=True).indices
        enc = {k: v.gather(1, order) for k, v in enc.items()}
    return with_labels(enc, model)


def with_labels(enc, model):
    """Every text token is a target, except the first of a row: it would be predicted from a
    padding position (under left padding), whose output no rule defines."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    first = torch.nn.functional.pad(mask, (1, 0))[:, :-1] == 0
    ignore = first | (mask == 0) | (ids == model.config.image_token_id) | (ids == model.config.voco_token_id)
    return {
        "input_ids": ids.to(DEVICE),
        "attention_mask": mask.to(DEVICE),
        "labels": ids.masked_fill(ignore, -100).to(DEVICE),
    }


def step(model, batch, pixels, rule=None):
    """Logits of the real tokens and every parameter's gradient after one loss.backward()."""
    model.zero_grad(set_to_none=True)
    out = model(**batch, pixel_values=pixels, attention_rule=rule)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return out.logits[batch["attention_mask"].bool()].detach(), grads


def assert_same_step(model, reference, batch, pixels, rule=None, masks=None):
    """`masks`: the list `no_dense_masks` fills; the stream model's step must add nothing to it."""
    before = len(masks) if masks is not None else 0
    logits, grads = step(model, batch, pixels, rule)
    assert masks is None or masks[before:] == [], "the stream path built a dense mask"
    ref_logits, ref_grads = step(reference, batch, pixels, rule)
    close(logits, ref_logits, "logits")
    assert grads.keys() == ref_grads.keys()
    # every LM and projector weight is trained (the tower's last layer is unused: LLaVA reads layer -2)
    image_parts = ("vision_tower", "multi_modal_projector")
    assert {n for n, _ in model.named_parameters() if n.split(".")[1] not in image_parts} <= grads.keys()
    assert pixels is None or {n for n, _ in model.named_parameters() if "projector" in n} <= grads.keys()
    assert pixels is None or any("vision_tower" in n for n in grads)
    for name in ref_grads:
        close(grads[name], ref_grads[name], f"grad {name}")
    assert max(g.abs().max().item() for g in ref_grads.values()) > 0


# 1 image, 3 images, no image, and a second turn after an answered first one
ROWS = [
    ("<image>\nWhat colour is it?", None),
    ("<image>\nFirst, <image> then <image>: which is bigger?", None),
    ("Say something about circles.", None),
    ("And the shape?", [("<image>\nWhat colour is it?", "Red.")]),
]


def pixels_for(n, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(DEVICE, DTYPE)


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("layout", ["compact", "natural"])
@pytest.mark.parametrize("num_voco", [1, 4])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_training_step_equals_dense_mask(kv_heads, num_voco, layout, padding, monkeypatch):
    model, reference, tok = pair(kv_heads=kv_heads, num_voco=num_voco, position_layout=layout)
    batch = training_batch(tok, model, ROWS, padding)
    assert (batch["attention_mask"] == 0).any()
    assert_same_step(model, reference, batch, pixels_for(5), masks=no_dense_masks(monkeypatch))


@pytest.mark.parametrize("kernel", ["sdpa", "flash_attention_2"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_rows_with_different_k_equal_dense_mask(kernel, padding, monkeypatch):
    """A mixture-of-K training batch: every image at its own K (1 to 16), rows of different K side by
    side and different K within a row; groups of unequal length share the group stream."""
    model, reference, tok = pair(kernel, monkeypatch, kv_heads=2, num_voco=1)
    model.config.num_voco_choices = reference.config.num_voco_choices = [1, 2, 4, 8, 16]
    prompts = [question_prompt(q, num_images=None, history=h) for q, h in ROWS]
    enc = encode_prompts(prompts, tok, model.config, num_voco=[16, 1, 4, 8, 2])
    if padding == "right":
        order = torch.sort((~enc["attention_mask"].bool()).int(), dim=1, stable=True).indices
        enc = {k: v.gather(1, order) for k, v in enc.items()}
    voco = (enc["input_ids"] == model.config.voco_token_id).sum(1).tolist()
    assert voco == [16, 1 + 4 + 8, 0, 2]
    assert_same_step(model, reference, with_labels(enc, model), pixels_for(5), masks=no_dense_masks(monkeypatch))


@pytest.mark.parametrize("rule", ["causal", "isolated"])
def test_other_rules_equal_dense_mask(rule, monkeypatch):
    model, reference, tok = pair()
    batch = training_batch(tok, model, ROWS, "right")
    assert_same_step(model, reference, batch, pixels_for(5), rule, masks=no_dense_masks(monkeypatch))


@pytest.mark.parametrize("layout", ["compact", "natural"])
def test_video_rows_of_8_frames_equal_dense_mask(layout, monkeypatch):
    model, reference, tok = pair(num_voco=2, position_layout=layout)
    rows = [("<video>\nWhich way did it move?", None), ("<video>\nDid it stop?", None)]
    prompts = [question_prompt(q, num_images=8) for q, _ in rows]
    enc = encode_prompts(prompts + ["No video, just text."], tok, model.config)
    batch = with_labels(enc, model)
    assert int(label_tokens(enc["input_ids"], enc["attention_mask"], *_ids(model)).group.max()) == 8
    assert_same_step(model, reference, batch, pixels_for(16), masks=no_dense_masks(monkeypatch))


def _ids(model):
    return model.config.image_token_id, model.config.voco_token_id


def test_flash_varlen_packing_training_step(monkeypatch):
    """The FlashAttention-2 path (on CPU: through `reference_varlen`) equals the dense mask."""
    for kv_heads, num_voco, padding in ((4, 1, "left"), (2, 4, "right")):
        model, reference, tok = pair("flash_attention_2", monkeypatch, kv_heads=kv_heads, num_voco=num_voco)
        masks = no_dense_masks(monkeypatch)
        for rule in ("voco", "causal", "isolated"):
            assert_same_step(model, reference, training_batch(tok, model, ROWS, padding), pixels_for(5), rule, masks)


@pytest.mark.parametrize("kernel", ["sdpa", "flash_attention_2"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_compress_and_answer_from_caches_equal_dense_mask(kernel, kv_heads, monkeypatch):
    """compress (groups alone), prefill from caches (cached VoCo K/V in the main stream), decode
    steps, and the single pass from pixels: the same numbers as the dense-mask model's."""
    model, reference, tok = pair(kernel, monkeypatch, kv_heads=kv_heads, num_voco=4)
    enc = encode_prompts([question_prompt(q, num_images=None, history=h) for q, h in ROWS], tok, model.config)
    ids, mask = enc["input_ids"].to(DEVICE), enc["attention_mask"].to(DEVICE)
    pixels = pixels_for(5)

    forced = torch.randint(10, 500, (len(ids), 4), generator=torch.Generator().manual_seed(1)).to(DEVICE)

    def run(m):
        cache = m.compress(pixels)
        from_cache, single = m.prefill(ids, mask, cache=cache), m.prefill(ids, mask, pixel_values=pixels)
        decoded = [decode_steps(m, ids, mask, forced, **kw) for kw in ({"cache": cache}, {"pixel_values": pixels})]
        answers = [m.answer(ids, mask, max_new_tokens=5, **kw) for kw in ({"cache": cache}, {"pixel_values": pixels})]
        from_cache, single = (p.logits[p.query_labels.valid] for p in (from_cache, single))
        return cache, from_cache, single, decoded, answers

    masks = no_dense_masks(monkeypatch)
    with torch.no_grad():
        cache, from_cache, single, decoded, answers = run(model)
        # sdpa answers from caches with the rule's rows (queries x keys, queries fewer than keys);
        # compression and the single pass build no mask, nor does flash ever
        assert masks and all(q < kv for q, kv in masks) if kernel == "sdpa" else not masks, masks
        ref_cache, ref_from_cache, ref_single, ref_decoded, ref_answers = run(reference)
    for got, want in zip(cache.keys + cache.values, ref_cache.keys + ref_cache.values):
        close(got, want, "cached K/V")
    close(from_cache, ref_from_cache, "logits from caches")
    close(single, ref_single, "logits of the single pass")
    for got, want in zip(decoded, ref_decoded):
        close(got, want, "decode-step logits")
    if DTYPE == torch.float32:  # in half precision a near tie may pick another token, and then all differs
        for got, want in zip(answers, ref_answers):
            assert torch.equal(got.sequences, want.sequences)
            close(got.logprobs, want.logprobs, "generated log-probs")


def decode_steps(model, ids, mask, tokens, **prefill):
    """Logits [B, steps, V] of decode steps fed `tokens` (the same for both paths), as `answer` runs them."""
    prompt = model.prefill(ids, mask, **prefill)
    last = _last_valid(prompt.query_labels.valid)
    position = prompt.query_positions.gather(1, last[:, None]) + 1
    key, order = prompt.key_labels, prompt.next_order
    out = []
    for step in range(tokens.shape[1]):
        step_logits, key = model.decode_step(tokens[:, step], key, prompt.past, position + step, order + step, "voco")
        out.append(step_logits)
    return torch.stack(out, 1)


def test_plan_of_a_hand_labelled_row():
    """BOS ctx [V V V C C] ctx [V V V C C] ctx ctx, 2 tokens of left padding (test_attention's ROW)."""
    img, voc, pad = 4, 5, 0
    row = [pad, pad, 7, 8, img, img, img, voc, voc, 9, img, img, img, voc, voc, 9, 9]
    ids = torch.tensor([row])
    labels = label_tokens(ids, (ids != pad).long(), img, voc)
    plan = streams.plan_streams(labels, labels, "voco", "sdpa")
    assert plan.shapes == [(1, 9), (2, 5)]
    main_q, group_q = plan.query_index.split([9, 10])
    main_k, group_k = (x.view(-1, w) for x, w in zip(plan.key_index.split([9, 10]), (9, 5)))
    # main stream: the 9 context and VoCo tokens in order, ending at the last context token
    assert main_k.tolist() == [[2, 3, 7, 8, 9, 13, 14, 15, 16]]
    # group stream: two groups of one size, so no padding
    assert group_k.tolist() == [[4, 5, 6, 7, 8], [10, 11, 12, 13, 14]]
    # context outputs come from the main stream (rect row 0), group outputs from the group rects
    assert plan.out_source[[2, 3, 9, 15, 16]].tolist() == [0, 1, 4, 7, 8]
    assert plan.out_source[[4, 8, 10, 14]].tolist() == [9 + 0, 9 + 4, 9 + 5, 9 + 9]
    assert plan.out_valid.flatten().tolist() == [False, False] + [True] * 15
    assert plan.pairs == 9 * 10 // 2 + 2 * 15
    varlen = streams.plan_streams(labels, labels, "voco", "flash_attention_2")
    assert varlen.cu_seqlens_k.tolist() == [0, 9, 14, 19] and varlen.max_seqlen_k == 9
    # answering: the last 2 context tokens against everything before them, the 4 VoCo keys included
    query = labels.select(torch.tensor([[15, 16]]), torch.ones(1, 2, dtype=torch.bool))
    ask = streams.plan_streams(query, labels, "voco", "flash_attention_2")
    assert ask.shapes == [] and ask.cu_seqlens_k.tolist() == [0, 9]
    assert ask.key_index.tolist() == [2, 3, 7, 8, 9, 13, 14, 15, 16]
    assert ask.query_index.tolist() == [0] * 7 + [0, 1] and ask.out_source.tolist() == [7, 8]
    assert ask.out_valid is None  # no padding query: no where() to apply
    with pytest.raises(ValueError, match="last keys"):
        streams.plan_streams(query, labels.select(torch.arange(5)[None], labels.valid[:, :5]), "voco", "sdpa")
    assert main_q.tolist() == main_k.flatten().tolist() and group_q.tolist() == group_k.flatten().tolist()


def test_stock_calls_on_a_routed_model_are_refused_or_stock():
    """No mask function is registered for the stream names, so a 2D padding mask would be lost:
    such a call fails loudly; a 4D mask runs stock sdpa."""
    model, tok, _ = build_model("tiny")
    ids = torch.tensor([[3, 7, 8, 9]])
    with pytest.raises(ValueError, match="no plan"):
        model.text_model(input_ids=ids, attention_mask=torch.ones_like(ids))
    labels = model.labels_for(ids, None)
    dense = model.attention_mask_for(labels, labels, "voco")
    with torch.no_grad():
        routed = model.text_model(input_ids=ids, attention_mask=dense).last_hidden_state
        model.set_attention_path("mask")
        stock = model.text_model(input_ids=ids, attention_mask=dense).last_hidden_state
    assert torch.equal(routed, stock)
    model.set_attention_path("streams")
    model.set_attn_implementation("eager")
    assert model.text_model.config._attn_implementation == "eager" and model.attention_kernel == "eager"
    model.set_attn_implementation("sdpa")
    assert model.text_model.config._attn_implementation == "voco_streams_sdpa"


@pytest.mark.skipif(not REAL_FLASH, reason="needs flash-attn on CUDA (scripts/gpu_check.sh)")
def test_reference_varlen_is_flash_attn():
    flash = streams._flash_varlen_func()
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    lengths_k, lengths_q = [7, 1, 130, 33], [7, 1, 1, 33]  # a decode step's 1 query against 130 keys
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0)], dtype=torch.int32, device=DEVICE)
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0)], dtype=torch.int32, device=DEVICE)
    q = torch.randn(sum(lengths_q), 8, 64, generator=gen, device=DEVICE, dtype=DTYPE)
    k, v = (torch.randn(sum(lengths_k), 2, 64, generator=gen, device=DEVICE, dtype=DTYPE) for _ in range(2))
    args = (q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k))
    close(flash(*args, causal=True), reference_varlen(*args, causal=True), "flash vs reference")


def test_gradient_checkpointing_carries_the_plan(monkeypatch):
    """The reference recipe trains with gradient checkpointing: the recomputed layers get the plan too."""
    model, reference, tok = pair(num_voco=2)
    for m in (model, reference):
        m.train()
        m.gradient_checkpointing_enable()
    batch = training_batch(tok, model, ROWS, "right")
    assert_same_step(model, reference, batch, pixels_for(5), masks=no_dense_masks(monkeypatch))


@pytest.mark.parametrize("kernel", ["sdpa", "flash_attention_2"])
def test_text_only_rows_run_in_place(kernel, monkeypatch):
    """Unpadded text-only rows are one causal stream each, the row itself: no gathers, same numbers."""
    model, reference, tok = pair(kernel, monkeypatch)
    rows = [("Say something about circles.", None), ("And squares?", None)]
    batch = training_batch(tok, model, rows)
    keep = batch["attention_mask"].all(0)
    batch = {k: v[:, keep] for k, v in batch.items()}
    labels = model.labels_for(batch["input_ids"], batch["attention_mask"])
    plan = streams.plan_streams(labels, labels, "voco", kernel)
    assert plan.identity and plan.out_valid is None
    assert_same_step(model, reference, batch, None, masks=no_dense_masks(monkeypatch))
