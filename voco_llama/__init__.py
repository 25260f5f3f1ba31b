"""VoCo-LLaMA vision compression for LLaVA-style models on Hugging Face transformers."""

from .attention import label_tokens, position_ids, voco_attention_mask
from .cache import VoCoCache
from .inference import VoCoPipeline
from .model import VoCoLlavaConfig, VoCoLlavaForConditionalGeneration

__all__ = [
    "VoCoCache",
    "VoCoLlavaConfig",
    "VoCoLlavaForConditionalGeneration",
    "VoCoPipeline",
    "label_tokens",
    "position_ids",
    "voco_attention_mask",
]
