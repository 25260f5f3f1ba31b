"""Exactness of the two-stage cache against the single masked pass, and what text may depend on."""

import copy

import pytest
import torch
from PIL import Image

from voco_llama.core.errors import InputError
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model, load_bundle, save_bundle
from voco_llama.core.processing import encode_prompts, question_prompt

TOL = 1e-4


def make(kv_heads=2, num_voco=1, layout="compact", attn="sdpa", vision="clip", seed=0):
    model, tok, ip = build_model(
        "tiny", seed=seed, kv_heads=kv_heads, num_voco=num_voco, position_layout=layout, vision=vision
    )
    model.set_attn_implementation(attn)
    return model.eval(), tok, ip


def batch(tok, model, questions, num_voco=None):
    prompts = [question_prompt(q, num_images=None) for q in questions]
    return encode_prompts(prompts, tok, model.config, num_voco=num_voco)


def context_logits_of_masked_pass(model, enc, pixels, query):
    full = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels).logits
    return full.gather(1, query.order[..., None].expand(-1, -1, full.shape[-1]))


# one row with 1 image, one with 3 images: left padding in the batch
QUESTIONS = ["<image>\nWhat colour is it?", "<image>\nFirst, <image> then <image>: which is bigger?"]


@pytest.mark.parametrize("path", ["streams", "mask"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("num_voco", [1, 4])
@pytest.mark.parametrize("layout", ["compact", "natural"])
def test_cache_path_equals_masked_pass(kv_heads, num_voco, layout, path):
    model, tok, _ = make(kv_heads=kv_heads, num_voco=num_voco, layout=layout)
    model.set_attention_path(path)  # both ways of applying the rule (test_streams.py: they agree)
    torch.manual_seed(1)
    pixels = torch.randn(4, 3, 32, 32)
    enc = batch(tok, model, QUESTIONS)
    assert (enc["attention_mask"] == 0).any(), "the batch must include padding"
    with torch.no_grad():
        cache = model.compress(pixels)
        prompt = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)
        logits, query = prompt.logits, prompt.query_labels
        reference = context_logits_of_masked_pass(model, enc, pixels, query)
    assert cache.num_groups == 4 and cache.num_voco == num_voco
    diff = (logits - reference)[query.valid].abs().max().item()
    assert diff < TOL, diff
    # and the generated answers agree token for token
    g_cache = model.answer(enc["input_ids"], enc["attention_mask"], cache=cache, max_new_tokens=6)
    g_masked = model.answer(enc["input_ids"], enc["attention_mask"], pixel_values=pixels, max_new_tokens=6)
    assert torch.equal(g_cache.sequences, g_masked.sequences)
    assert (g_cache.logprobs - g_masked.logprobs).abs().max() < TOL


def test_prefill_result_is_named_and_transformers_generate_is_refused():
    model, tok, _ = make()
    enc = batch(tok, model, QUESTIONS)
    torch.manual_seed(1)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        prompt = model.prefill(enc["input_ids"], enc["attention_mask"], cache=model.compress(pixels))
    rows, context = enc["input_ids"].shape[0], int(prompt.query_labels.valid.sum(1).max())
    assert prompt.logits.shape == (rows, context, model.config.text_config.vocab_size)
    assert prompt.query_positions.shape == (rows, context)
    # the keys are the 4 groups' cached VoCo tokens (1 and 3 images per row, K=1) then the queries
    assert prompt.key_labels.kind.shape == (rows, 3 + context)
    assert len(prompt.past.layers) == model.config.text_config.num_hidden_layers
    assert prompt.past.layers[0].keys.shape[2] == 3 + context
    assert prompt.next_order == int(prompt.query_labels.order.max()) + 1
    # transformers' loop would run forward one token at a time without the prompt's labels
    with pytest.raises(NotImplementedError, match=r"model\.answer"):
        model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)


def test_eager_and_sdpa_agree_and_siglip_tower_works():
    torch.manual_seed(2)
    pixels = torch.randn(4, 3, 32, 32)
    outputs = []
    for attn in ("sdpa", "eager"):
        model, tok, _ = make(attn=attn)
        enc = batch(tok, model, QUESTIONS)
        with torch.no_grad():
            outputs.append(model(**enc, pixel_values=pixels).logits)
    real = enc["attention_mask"].bool()  # padding positions' logits are unused (zero on the stream path)
    assert (outputs[0] - outputs[1])[real].abs().max() < TOL
    model, tok, _ = make(vision="siglip")
    enc = batch(tok, model, QUESTIONS)
    with torch.no_grad():
        cache = model.compress(pixels)
        prompt = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)
        logits, query = prompt.logits, prompt.query_labels
        reference = context_logits_of_masked_pass(model, enc, pixels, query)
    assert (logits - reference)[query.valid].abs().max() < TOL


def test_text_depends_on_image_only_through_voco_tokens():
    model, tok, _ = make(num_voco=2)
    torch.manual_seed(3)
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    enc = batch(tok, model, ["<image>\nDescribe it.", "<image>\nDescribe it."])
    with torch.no_grad():
        cache_ab = model.compress(torch.cat([a, b]))
        cache_ba = model.compress(torch.cat([b, a]))
        ab = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache_ab).logits
        ba = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache_ba).logits
        assert (ab[0] - ab[1]).abs().max() > 1e-3, "different images must give different answers"
        assert torch.allclose(ab[0], ba[1], atol=1e-6, rtol=0) and torch.allclose(ab[1], ba[0], atol=1e-6, rtol=0)
        # ablation: text barred from VoCo tokens too -> the image cannot matter at all
        one = batch(tok, model, ["<image>\nDescribe it."])
        blind_a = model(**one, pixel_values=a, attention_rule="isolated").logits
        blind_b = model(**one, pixel_values=b, attention_rule="isolated").logits
        seen_a = model(**one, pixel_values=a).logits
        seen_b = model(**one, pixel_values=b).logits
    text = one["input_ids"][0] != model.config.image_token_id
    text &= one["input_ids"][0] != model.config.voco_token_id
    assert torch.equal(blind_a[0, text], blind_b[0, text])
    assert (seen_a[0, text] - seen_b[0, text]).abs().max() > 1e-3


def test_bundle_round_trip(tmp_path):
    model, tok, ip = make(num_voco=2, layout="natural")
    save_bundle(tmp_path / "m", model, tok, ip)
    loaded, tok2, ip2 = load_bundle(tmp_path / "m")
    assert loaded.config.num_voco == 2 and loaded.config.position_layout == "natural"
    assert loaded.config.voco_token_id == tok2.convert_tokens_to_ids("<voco>")
    assert loaded.fingerprint() == model.fingerprint()
    assert ip2.crop_size == ip.crop_size and list(ip2.image_mean) == list(ip.image_mean)
    torch.manual_seed(4)
    pixels = torch.randn(4, 3, 32, 32)
    enc = batch(tok, model, QUESTIONS)
    assert tok2(QUESTIONS[1]).input_ids == tok(QUESTIONS[1]).input_ids
    with torch.no_grad():
        assert torch.equal(model(**enc, pixel_values=pixels).logits, loaded(**enc, pixel_values=pixels).logits)


@pytest.mark.parametrize("compressor", ["avgpool", "qformer"])
def test_baseline_compressors_give_one_causal_token_per_image(compressor, tmp_path):
    model, tok, ip = build_model("tiny", compressor=compressor)
    assert model.config.num_vision_tokens == 1 and model.config.num_voco == 0
    enc = batch(tok, model, QUESTIONS)
    image_tokens = (enc["input_ids"] == model.config.image_token_id).sum(1)
    assert image_tokens.tolist() == [1, 3]
    torch.manual_seed(5)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(**enc, pixel_values=pixels).logits
        other = model(**enc, pixel_values=torch.randn(4, 3, 32, 32)).logits
    assert (logits - other).abs().max() > 1e-6, "text must see the compressed image token"
    with pytest.raises(ValueError, match="no VoCo cache"):
        model.compress(pixels)
    save_bundle(tmp_path / "b", model, tok, ip)
    loaded, *_ = load_bundle(tmp_path / "b")
    with torch.no_grad():
        assert torch.equal(loaded(**enc, pixel_values=pixels).logits, logits)


def test_init_std_sets_the_random_init_of_llm_and_tower():
    from voco_llama.core.presets import build_model

    def std(model):
        return (
            model.model.language_model.layers[0].self_attn.q_proj.weight.std().item(),
            model.model.vision_tower.embeddings.patch_embedding.weight.std().item(),
        )

    default, _, _ = build_model("tiny")
    wide, _, _ = build_model("tiny", init_std=0.08)
    assert wide.config.text_config.initializer_range == 0.08 == wide.config.vision_config.initializer_range
    assert std(default)[0] == pytest.approx(0.02, rel=0.15)
    assert std(wide)[0] == pytest.approx(0.08, rel=0.15) and std(wide)[1] > 2 * std(default)[1]


def test_qformer_query_is_initialised_when_a_voco_model_loads_as_a_qformer_baseline(tmp_path):
    """The demo's Q-Former row starts from a model without one: the new query must get a real init,
    not the uninitialised memory from_pretrained leaves for parameters it did not load."""
    save_bundle(tmp_path / "m", *build_model("tiny", init_std=0.05))
    for _ in range(3):
        model, _, _ = load_bundle(tmp_path / "m", compressor="qformer", num_voco=0, attention_rule="causal")
        query = model.model.compressor.query
        assert torch.isfinite(query).all()
        assert query.std().item() == pytest.approx(model.model.compressor.qformer.config.initializer_range, rel=0.5)


# ---- one model, several K (a model trained with --num_voco_choices) --------------------------------

CHOICES = [1, 2, 4, 8, 16]


def mixture(kv_heads=2, layout="compact"):
    model, tok, ip = make(kv_heads=kv_heads, layout=layout)
    model.config.num_voco_choices = CHOICES
    return model, tok, ip


@pytest.mark.parametrize("path", ["streams", "mask"])
@pytest.mark.parametrize("layout", ["compact", "natural"])
def test_every_k_of_the_trained_set_cache_path_equals_masked_pass(layout, path):
    model, tok, _ = mixture(layout=layout)
    model.set_attention_path(path)
    torch.manual_seed(3)
    pixels = torch.randn(4, 3, 32, 32)
    for k in CHOICES:
        enc = batch(tok, model, QUESTIONS, num_voco=k)
        with torch.no_grad():
            cache = model.compress(pixels, num_voco=k)
            prompt = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)
            logits, query = prompt.logits, prompt.query_labels
            reference = context_logits_of_masked_pass(model, enc, pixels, query)
        assert cache.num_voco == k
        diff = (logits - reference)[query.valid].abs().max().item()
        assert diff < TOL, (k, diff)


@pytest.mark.parametrize("path", ["streams", "mask"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_caches_of_different_k_in_one_prompt_equal_masked_pass(kv_heads, path):
    """A K=1 cache of 3 frames beside a K=4 cache of one image, across a padded batch: the answer equals
    the single masked pass over the same prompt with those K."""
    model, tok, _ = mixture(kv_heads=kv_heads)
    model.set_attention_path(path)
    torch.manual_seed(4)
    pixels = torch.randn(5, 3, 32, 32)
    video, image = model.compress(pixels[:3], num_voco=1), model.compress(pixels[3:4], num_voco=4)
    extra = model.compress(pixels[4:], num_voco=16)
    # row 1: three frames then the image; row 2: one image at K=16
    questions = ["<image><image><image>\nAnd in <image>, what moved?", "<image>\nWhat colour is it?"]
    ks = [1, 1, 1, 4, 16]
    enc = batch(tok, model, questions, num_voco=ks)
    with torch.no_grad():
        prompt = model.prefill(enc["input_ids"], enc["attention_mask"], cache=[video, image, extra])
        logits, query = prompt.logits, prompt.query_labels
        reference = context_logits_of_masked_pass(model, enc, pixels, query)
    diff = (logits - reference)[query.valid].abs().max().item()
    assert diff < TOL, diff
    g_cache = model.answer(**enc, cache=[video, image, extra], max_new_tokens=6)
    g_masked = model.answer(**enc, pixel_values=pixels, max_new_tokens=6)
    assert torch.equal(g_cache.sequences, g_masked.sequences)
    assert (g_cache.logprobs - g_masked.logprobs).abs().max() < TOL
    # a prompt whose <voco> counts do not match the caches' K is refused, naming the image
    wrong = batch(tok, model, questions, num_voco=[1, 1, 4, 1, 16])
    with pytest.raises(InputError, match="image 3 of the prompt carries 4 <voco> tokens; its cache has K=1"):
        model.prefill(wrong["input_ids"], wrong["attention_mask"], cache=[video, image, extra])


def test_pipeline_answers_from_caches_of_different_k():
    model, tok, ip = mixture()
    pipe = VoCoPipeline(model, tok, ip)
    images = [Image.new("RGB", (32, 32), rgb) for rgb in ((200, 20, 20), (20, 20, 200))]
    frame, photo = pipe.compress(images[:1], num_voco=1), pipe.compress(images[1:], num_voco=16)
    got = pipe.ask("<image> then <image>: which is bluer?", cache=[frame, photo], max_new_tokens=5)
    want = pipe.ask(
        "<image> then <image>: which is bluer?", images=images, route="masked", num_voco=[1, 16], max_new_tokens=5
    )
    assert got.token_ids == want.token_ids and got.token_ids
    assert max(abs(a - b) for a, b in zip(got.logprobs, want.logprobs)) < TOL


def test_only_trained_k_are_accepted_in_one_place():
    fixed, tok, _ = make(num_voco=2)
    pixels = torch.randn(1, 3, 32, 32)
    assert fixed.config.accepted_num_voco(None) == fixed.config.accepted_num_voco(2) == 2
    # a model trained at one K has never seen another: refused, at compression and in prompts
    message = r"^K=4: this model was trained at K=2 only \(voco train --num_voco_choices"
    with pytest.raises(InputError, match=message):
        fixed.compress(pixels, num_voco=4)
    with pytest.raises(InputError, match=message):
        batch(tok, fixed, QUESTIONS[:1], num_voco=4)
    model, tok, _ = mixture()
    assert [model.compress(pixels, num_voco=k).num_voco for k in CHOICES] == CHOICES
    assert model.compress(pixels).num_voco == 1  # num_voco stays the default K
    with pytest.raises(InputError, match=r"^K=3: this model was trained with K in \{1, 2, 4, 8, 16\}$"):
        model.compress(pixels, num_voco=3)
    with pytest.raises(InputError, match=r"^K=32: "):
        batch(tok, model, QUESTIONS, num_voco=[1, 2, 32, 4])
    # the set is checked when a model is made from its config
    for bad, why in (([2, 1], "sorted"), ([0, 1], "positive"), ([2, 4], "num_voco 1 is not among")):
        config = copy.deepcopy(model.config)
        config.num_voco_choices = bad
        with pytest.raises(ValueError, match=why):
            type(model)(config)


def test_trained_set_survives_save_and_load(tmp_path):
    model, tok, ip = mixture()
    save_bundle(tmp_path / "m", model, tok, ip)
    loaded, *_ = load_bundle(tmp_path / "m")
    assert (loaded.config.num_voco_choices, loaded.config.num_voco) == (CHOICES, 1)
    # loading it told another K makes that its default (the demo runs a K=16-only model at K=1 this way)
    assert load_bundle(tmp_path / "m", num_voco=8)[0].config.accepted_num_voco(None) == 8
