"""VoCo-LLaMA vision compression for LLaVA-style models on Hugging Face transformers."""

from .core.attention import label_tokens, layout_positions, voco_attention_mask
from .core.cache import VoCoCache
from .core.modeling import VoCoLlavaConfig, VoCoLlavaForConditionalGeneration
from .core.pipeline import VoCoPipeline

__all__ = [
    "VoCoCache",
    "VoCoLlavaConfig",
    "VoCoLlavaForConditionalGeneration",
    "VoCoPipeline",
    "label_tokens",
    "layout_positions",
    "voco_attention_mask",
]
