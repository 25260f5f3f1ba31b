"""Shared fixtures. Tiny models come from one builder, `voco_llama.core.presets.build_model("tiny",
**overrides)` (nothing is downloaded); tests call it directly when they need a model in memory.

`tiny_model_dir(**overrides)` saves one such bundle (model + tokenizer + image processor) once per
test session and returns its folder, for tests that load a model the way users do: read-only.
"""

from __future__ import annotations

import pytest

from voco_llama.core.presets import build_model, save_bundle


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
