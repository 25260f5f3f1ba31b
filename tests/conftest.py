"""Shared fixtures: tiny models built from configs (nothing is downloaded).

`tiny_model(**overrides)` builds a fresh (model, tokenizer, image_processor) from the "tiny"
preset (`voco_llama.core.presets.build_model`; overrides such as num_voco=4, kv_heads=2,
position_layout="natural", compressor="avgpool", seed=1). `tiny_model_dir(**overrides)` saves
one such bundle once per test session and returns its folder: treat it as read-only.
"""

from __future__ import annotations

import pytest

from voco_llama.core.presets import build_model, save_bundle


@pytest.fixture
def tiny_model():
    def build(**overrides):
        model, tokenizer, image_processor = build_model("tiny", **overrides)
        return model.eval(), tokenizer, image_processor

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    saved = {}

    def directory(**overrides):
        key = tuple(sorted(overrides.items()))
        if key not in saved:
            name = "tiny-" + "-".join(f"{k}={v}" for k, v in key) if key else "tiny"
            saved[key] = save_bundle(tmp_path_factory.mktemp("models") / name, *build_model("tiny", **overrides))
        return saved[key]

    return directory
