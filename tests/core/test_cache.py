"""The VoCo cache file: size, round trip, placement anywhere, refusal of wrong or damaged files."""

import json
import os
import stat
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

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
        prompt = model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)
        logits, query = prompt.logits, prompt.query_labels
        full = model(**enc, pixel_values=pixels).logits
    reference = full.gather(1, query.order[..., None].expand(-1, -1, full.shape[-1]))
    assert (logits - reference)[query.valid].abs().max() < 1e-4


def test_wrong_number_of_images_is_a_clear_error(tiny):
    model, tok, _, cache = tiny
    enc = encode_prompts([question_prompt("What?")], tok, model.config)
    with pytest.raises(InputError, match="1 images but the cache holds 3"):
        model.prefill(enc["input_ids"], enc["attention_mask"], cache=cache)


def rewrite(source, target, edit, reseal=False):
    """Copy a cache file with its header edited; `reseal` recomputes the checksum (a forger's edit)."""
    with safe_open(str(source), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    if reseal:
        meta["sha256"] = VoCoCache._checksum({k: v for k, v in meta.items() if k != "sha256"}, tensors)
    save_file(tensors, str(target), metadata=meta)
    return target


def test_the_header_is_covered_by_the_checksum(tiny, tmp_path):
    """An edited `positions` would re-rotate the keys elsewhere and silently change every answer."""
    model, _, _, cache = tiny
    good = cache.save(tmp_path / "good.voco")
    shifted = rewrite(
        good, tmp_path / "shifted.voco", lambda m: m.update(positions=json.dumps([p + 1 for p in cache.positions]))
    )
    with pytest.raises(InputError, match="shifted.voco: VoCo cache is corrupted or edited"):
        VoCoCache.load(shifted, expected_fingerprint=model.fingerprint())
    for field, value in (("layout", "natural"), ("num_vision", "17"), ("fingerprint", "0" * 64)):
        edited = rewrite(good, tmp_path / f"{field}.voco", lambda m, f=field, v=value: m.update({f: v}))
        with pytest.raises(InputError, match="checksum mismatch"):
            VoCoCache.load(edited)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(positions="[16, 17"), "field 'positions' is malformed"),
        (lambda m: m.update(positions='{"a": 1}'), "'positions' is not a list of integers"),
        (lambda m: m.update(num_voco="four"), "field 'num_voco' is malformed"),
        (lambda m: m.pop("layout"), "has no 'layout' field"),
        (lambda m: m.pop("positions"), "has no 'positions' field"),
        (lambda m: m.update(positions="[1, 2]"), "header is inconsistent"),
        (lambda m: m.update(layout="spiral"), "header is inconsistent"),
    ],
)
def test_a_bad_header_field_is_named(tiny, tmp_path, edit, message):
    _, _, _, cache = tiny
    bad = rewrite(cache.save(tmp_path / "good.voco"), tmp_path / "bad.voco", edit)
    with pytest.raises(InputError, match=message):
        VoCoCache.load(bad)


def test_a_resealed_header_that_does_not_fit_the_tensors_is_refused(tiny, tmp_path):
    _, _, _, cache = tiny
    bad = rewrite(cache.save(tmp_path / "good.voco"), tmp_path / "bad.voco", lambda m: m.update(num_groups="5"), True)
    with pytest.raises(InputError, match="tensors do not match its header"):
        VoCoCache.load(bad)


def test_a_cache_of_the_old_format_is_refused_with_what_to_do(tiny, tmp_path):
    _, _, _, cache = tiny
    old = rewrite(cache.save(tmp_path / "good.voco"), tmp_path / "old.voco", lambda m: m.update(format="voco-cache/1"))
    with pytest.raises(InputError, match=r"old.voco: VoCo cache of format 'voco-cache/1'.*compress again"):
        VoCoCache.load(old)


def test_cache_files_follow_the_umask(tiny, tmp_path):
    _, _, _, cache = tiny
    previous = os.umask(0o022)
    try:
        path = cache.save(tmp_path / "c.voco")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
