"""VoCo-LLaMA vision compression for LLaVA-style models on Hugging Face transformers."""

import importlib
import logging
import sys

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


class _RightCpuGuess(logging.Filter):
    """DeepSpeed (optional; accelerate imports it on every save_pretrained once installed) logs on
    stdout, once per process, that it fell back to its CPU accelerator. Where torch sees no GPU that
    guess is right, and the line only corrupts a command's output (JSON answers, tables): drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        torch = sys.modules.get("torch")
        cpu_only = torch is not None and not torch.cuda.is_available()
        return not (cpu_only and record.getMessage().startswith("Setting accelerator to CPU"))


logging.getLogger("DeepSpeed").addFilter(_RightCpuGuess())


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
