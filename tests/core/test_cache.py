"""The VoCo cache file: size, round trip, placement anywhere, refusal of wrong or damaged files."""

import json
import struct

import pytest
import torch

from voco_llama.core.cache import VoCoCache
from voco_llama.core.presets import build_model
from voco_llama.core.processing import InputError, encode_prompts, question_prompt


@pytest.fixture(scope="module")
def tiny():
    model, tok, _ = build_model("tiny", num_voco=4)
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        cache = model.compress(pixels)
    return model, tok, pixels, cache


def header_size(path):
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_only_voco_kv_is_kept_and_file_size_is_exact(tiny, tmp_path):
    model, _, _, cache = tiny
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    per_group = text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * 4 * 4  # K=4, fp32
    assert cache.nbytes == 3 * per_group
    assert all(k.shape == (3, text.num_key_value_heads, 4, head_dim) for k in cache.keys)
    path = cache.save(tmp_path / "c.safetensors")
    assert path.stat().st_size - header_size(path) == cache.nbytes
    assert header_size(path) < 2048  # "a small header"


def test_round_trip_and_selection(tiny, tmp_path):
    model, _, _, cache = tiny
    path = cache.save(tmp_path / "c.safetensors")
    loaded = VoCoCache.load(path, expected_fingerprint=model.fingerprint())
    assert loaded.positions == cache.positions and loaded.num_vision == cache.num_vision
    assert all(torch.equal(a, b) for a, b in zip(loaded.keys + loaded.values, cache.keys + cache.values))
    again = VoCoCache.cat([loaded[0], loaded[1:]])
    assert all(torch.equal(a, b) for a, b in zip(again.keys, cache.keys))
    assert not list(tmp_path.glob(".*.tmp")), "no temp file is left behind"


def test_cache_from_another_model_is_refused(tiny, tmp_path):
    _, _, _, cache = tiny
    other, *_ = build_model("tiny", num_voco=4, seed=1)
    path = cache.save(tmp_path / "c.safetensors")
    with pytest.raises(InputError, match="different model"):
        VoCoCache.load(path, expected_fingerprint=other.fingerprint())


def test_truncated_or_corrupted_file_is_refused(tiny, tmp_path):
    _, _, _, cache = tiny
    good = cache.save(tmp_path / "good.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) - 100])
    with pytest.raises(InputError, match="truncated.safetensors"):
        VoCoCache.load(truncated)
    corrupted = tmp_path / "corrupted.safetensors"
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="corrupted"):
        VoCoCache.load(corrupted)
    not_a_cache = tmp_path / "x.safetensors"
    not_a_cache.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="x.safetensors"):
        VoCoCache.load(not_a_cache)


def test_caches_can_be_placed_anywhere_in_any_order(tiny):
    """A group is translation invariant: the same cache answers at any offset in the prompt."""
    model, tok, pixels, cache = tiny
    prompts = [
        question_prompt(q, num_images=None)
        for q in (
            "<image>\nShort.",
            "A much longer preamble before the pictures arrive, then <image> and <image>, done.",
        )
    ]
    enc = encode_prompts(prompts, tok, model.config)
    with torch.no_grad():
        logits, query, *_ = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)
        full = model(**enc, pixel_values=pixels).logits
    reference = full.gather(1, query.order[..., None].expand(-1, -1, full.shape[-1]))
    assert (logits - reference)[query.valid].abs().max() < 1e-4


def test_wrong_number_of_images_is_a_clear_error(tiny):
    model, tok, _, cache = tiny
    enc = encode_prompts([question_prompt("What?")], tok, model.config)
    with pytest.raises(InputError, match="1 images but the cache holds 3"):
        model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)
