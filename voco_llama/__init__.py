"""VoCo-LLaMA vision compression for LLaVA-style models on Hugging Face transformers."""

import importlib

# Imported on first use, so that `voco --help` and the verbs that need no model never pay for torch.
_EXPORTS = {
    "VoCoCache": "core.cache",
    "VoCoLlavaConfig": "core.modeling",
    "VoCoLlavaForConditionalGeneration": "core.modeling",
    "VoCoPipeline": "core.pipeline",
    "label_tokens": "core.attention",
    "layout_positions": "core.attention",
    "voco_attention_mask": "core.attention",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
