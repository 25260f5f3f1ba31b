"""A byte-level BPE tokenizer trained with `tokenizers`, for models built from scratch.

No tokenizer can be downloaded here, so the tiny preset and the synthetic world train their own.
Byte-level means any text round-trips; the special tokens are the ones a LLaVA-1.5 tokenizer has
plus `<image>` and `<voco>`, so prompts render exactly as they would with Vicuna's tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .conversation import IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"


def build_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, extra_special: tuple[str, ...] = (IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER)
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; BOS is prepended like Llama's tokenizer does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD, *extra_special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens=list(extra_special),
        padding_side="left",
    )
