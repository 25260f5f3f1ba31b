"""The VoCo-LLaMA model: transformers' LLaVA plus `<voco>` tokens, the VoCo rule and a real cache.

`VoCoLlavaForConditionalGeneration` is a `LlavaForConditionalGeneration` (any HF vision tower,
the `mlp2x_gelu` projector, any HF causal LM), so Trainer, PEFT, accelerate and DeepSpeed work
as they do for LLaVA. What it adds:
  * `forward` turns the token sequence into labels and applies the VoCo attention rule and the
    position layout (attention.py) -- one pass, used for training. With sdpa or FlashAttention-2
    the rule runs as exact causal streams (streams.py, no mask; `attention_path="streams"`, the
    default); with eager, or `attention_path="mask"`, as the dense 4D mask (the reference);
  * `compress(pixel_values)` runs each image's group [vision, VoCo] alone and returns a
    `VoCoCache` with only the VoCo tokens' keys and values (pass 1 of the paper's Fig. 4);
  * `answer(..., cache=...)` answers from caches (pass 2): context tokens attend to the cached
    VoCo keys, re-rotated to where each group sits in the prompt. Without a cache it runs the
    single masked pass (the reference code's way) or, with rule "causal", the full-token model.
    (transformers' `generate` is refused by name: its loop does not carry the rule's token labels.)
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Literal

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    DynamicCache,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)
from transformers import initialization as hf_init
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

from .attention import CONTEXT, VOCO, TokenLabels, label_tokens, layout_positions, voco_attention_mask
from .cache import VoCoCache, cache_list, group_num_voco
from .errors import InputError
from .streams import PLAN_KWARG, STREAM_IMPLEMENTATIONS, plan_streams, stream_kernel

COMPRESSORS = ("voco", "avgpool", "qformer")


@strict
class VoCoLlavaConfig(LlavaConfig):
    """LlavaConfig plus the VoCo settings.

    num_voco: K VoCo tokens after each image (the default K, for a model trained with several).
    num_voco_choices: the K a model trained with a mixture of K accepts (`voco train
    --num_voco_choices 1,2,4,8,16`), sorted; None: the model was trained at num_voco alone, the
    only K it accepts (`accepted_num_voco`). voco_token_id: the `<voco>` token.
    position_layout: "compact" (default; F frames cost F*K positions) or "natural".
    attention_rule: the rule the model trains under ("voco", or "causal" for the upper bound).
    compressor: "voco", or a 1-token baseline of the paper's Table 1 ("avgpool": mean-pool then a
    linear layer, LLaMA-VID's content token; "qformer": one learnable query through a BLIP-2
    Q-Former). Baselines use no VoCo tokens and plain causal attention.
    attention_path: how the rule is applied on sdpa / flash_attention_2: "streams" (exact causal
    streams, no mask; the default) or "mask" (the dense 4D mask, the reference; eager always uses it).
    voco_layout: "llava" (ours) or "reference", for checkpoints trained with the reference code
    (github.com/Yxxxb/VoCo-LLaMA): the image first, one group up to the last VoCo token, natural
    positions (attention.py); voco_head_ids: then the prompt's tokens before its first VoCo token,
    the image written as one image token (BOS, <image>, the newline's tokens), read from the
    tokenizer by `voco convert --voco-llama-reference` (processing.py `reference_head_ids`)."""

    model_type = "voco_llava"
    num_voco: int = 1
    num_voco_choices: list[int] | None = None
    voco_token_id: int = 32001
    position_layout: Literal["compact", "natural"] = "compact"
    attention_rule: Literal["voco", "causal", "isolated"] = "voco"
    compressor: str = "voco"
    attention_path: Literal["streams", "mask"] = "streams"
    voco_layout: Literal["llava", "reference"] = "llava"
    voco_head_ids: list[int] | None = None

    def check_compressor(self) -> None:
        if self.voco_layout == "reference":
            head = self.voco_head_ids or []
            if self.compressor != "voco" or self.attention_rule != "voco" or self.position_layout != "natural":
                raise ValueError("voco_layout 'reference' takes compressor 'voco', rule 'voco', natural positions")
            if head.count(self.image_token_id) != 1 or self.voco_token_id in head:
                raise ValueError(f"voco_head_ids {head!r}: expected the tokens before <voco>, with one image token")
        elif self.voco_head_ids is not None:
            raise ValueError("voco_head_ids belong to voco_layout 'reference'")
        if self.compressor not in COMPRESSORS:
            raise ValueError(f"unknown compressor {self.compressor!r}; expected one of {COMPRESSORS}")
        if self.compressor != "voco" and (self.num_voco != 0 or self.attention_rule != "causal"):
            raise ValueError(f"compressor {self.compressor!r} takes num_voco=0 and attention_rule='causal'")
        choices = self.num_voco_choices
        if choices is not None:
            if self.compressor != "voco":
                raise ValueError(f"compressor {self.compressor!r} has no VoCo tokens: num_voco_choices must be None")
            if (
                not choices
                or any(type(k) is not int or k < 1 for k in choices)
                or list(choices) != sorted(set(choices))
            ):
                raise ValueError(f"num_voco_choices {choices!r}: expected distinct positive integers, sorted")
            if self.num_voco not in choices:
                raise ValueError(f"num_voco {self.num_voco} is not among num_voco_choices {list(choices)}")

    def accepted_num_voco(self, num_voco: int | None = None) -> int:
        """The K to use for `num_voco` (None: the default K), refused when the model was never trained
        with it: the one place this rule is written (compression, prompt encoding, every verb)."""
        k = self.num_voco if num_voco is None else num_voco
        if k == self.num_voco or (self.num_voco_choices is not None and k in self.num_voco_choices):
            return k
        trained = (
            f"with K in {{{', '.join(map(str, self.num_voco_choices))}}}"
            if self.num_voco_choices is not None
            else f"at K={self.num_voco} only (voco train --num_voco_choices trains one model for several K)"
        )
        raise InputError(f"K={k}: this model was trained {trained}")

    @property
    def cache_layout(self) -> str:
        """What a cache of this model records as its layout: the position layout, or "reference"."""
        return "reference" if self.voco_layout == "reference" else self.position_layout

    def group_ids(self, num_voco: int) -> list[int]:
        """One compression group's tokens as pass 1 runs them: N image tokens then K VoCo tokens,
        after the head (BOS, the image, the newline) under the reference layout."""
        head = self.voco_head_ids if self.voco_layout == "reference" else [self.image_token_id]
        n = self.num_vision_tokens
        ids = [t for token in head for t in ([token] * n if token == self.image_token_id else [token])]
        return ids + [self.voco_token_id] * num_voco

    @property
    def num_patches(self) -> int:
        """Vision tokens the tower gives per image: patches, plus CLS when the strategy keeps it."""
        vision = self.vision_config
        n = (vision.image_size // vision.patch_size) ** 2
        if self.vision_feature_select_strategy == "full" and vision.model_type.startswith("clip"):
            n += 1
        return n

    @property
    def num_vision_tokens(self) -> int:
        """N: tokens an image occupies in the LLM's sequence (1 for the pooling baselines)."""
        return self.num_patches if self.compressor == "voco" else 1


AutoConfig.register("voco_llava", VoCoLlavaConfig)
# Our checkpoints use LLaVA's weight names, so llava-hf saves (old and new key layouts) load as ours.
register_checkpoint_conversion_mapping("voco_llava", get_checkpoint_conversion_mapping("llava"), overwrite=True)


@dataclass
class Prefill:
    """What running a prompt leaves for decoding (`prefill`, `prefill_context`)."""

    logits: torch.Tensor  # [B, Q, V] at the query tokens
    query_labels: TokenLabels  # [B, Q] the tokens run (answering from caches: the prompt's context tokens)
    key_labels: TokenLabels  # [B, KV] every token in `past`, the queries last
    past: DynamicCache  # per-layer K/V of the key tokens, to decode from
    query_positions: torch.Tensor  # [B, Q] position ids of the query tokens

    @property
    def next_order(self) -> int:
        """Order (TokenLabels.order) of the first token decoded after the prompt."""
        return int(self.key_labels.order.max()) + 1


@dataclass
class Generation:
    sequences: torch.Tensor  # [batch, new_tokens], padded with pad/eos after a row ended
    logprobs: torch.Tensor  # [batch, new_tokens] log p of each chosen token (greedy: its max)
    lengths: torch.Tensor  # [batch] generated tokens per row, EOS included


class BaselineCompressor(nn.Module):
    """The paper's 1-token baselines, applied to the projected vision tokens [n, N, D] -> [n, 1, D]."""

    def __init__(self, config: VoCoLlavaConfig):
        super().__init__()
        width = config.text_config.hidden_size
        self.kind = config.compressor
        if self.kind == "qformer":
            qformer_config = Blip2QFormerConfig(
                hidden_size=width,
                num_hidden_layers=2,
                num_attention_heads=config.text_config.num_attention_heads,
                intermediate_size=4 * width,
                encoder_hidden_size=width,
                cross_attention_frequency=1,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )
            self.qformer = Blip2QFormerModel(qformer_config)
            self.query = nn.Parameter(torch.randn(1, 1, width) * qformer_config.initializer_range)
        self.proj = nn.Linear(width, width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "avgpool":
            return self.proj(features.mean(dim=1, keepdim=True))
        out = self.qformer(query_embeds=self.query.expand(len(features), -1, -1), encoder_hidden_states=features)
        return self.proj(out.last_hidden_state.to(features.dtype))


def _init_compressor(module: nn.Module) -> None:
    # from_pretrained leaves parameters it did not load as torch.empty until _init_weights sees them;
    # the generic _init_weights knows Linear/LayerNorm but not a bare nn.Parameter like the query.
    if isinstance(module, BaselineCompressor) and module.kind == "qformer":
        hf_init.normal_(module.query, std=module.qformer.config.initializer_range)


class VoCoLlavaModel(LlavaModel):
    """LlavaModel whose image features go through a baseline compressor when one is configured."""

    def __init__(self, config: VoCoLlavaConfig):
        super().__init__(config)
        self.compressor = BaselineCompressor(config) if config.compressor != "voco" else None

    def _init_weights(self, module):
        super()._init_weights(module)
        _init_compressor(module)

    def get_image_features(self, pixel_values, **kwargs):
        out = super().get_image_features(pixel_values=pixel_values, **kwargs)
        if self.compressor is not None:
            out.pooler_output = list(self.compressor(torch.stack(out.pooler_output)))
        return out


class VoCoLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = VoCoLlavaConfig
    config: VoCoLlavaConfig

    def __init__(self, config: VoCoLlavaConfig):
        config.check_compressor()
        LlavaPreTrainedModel.__init__(self, config)
        self.model = VoCoLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        self._route_attention()

    def _init_weights(self, module):
        super()._init_weights(module)
        _init_compressor(module)

    # ---- the rule, applied -------------------------------------------------------------------

    @property
    def text_model(self):
        return self.model.language_model

    def labels_for(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> TokenLabels:
        config = self.config
        return label_tokens(input_ids, attention_mask, config.image_token_id, config.voco_token_id, config.voco_layout)

    def layout_for(self, rule: str) -> str:
        # Compact positions overlap vision and context positions: only sound when groups are isolated.
        return "natural" if rule == "causal" else self.config.position_layout

    def set_attn_implementation(self, attn_implementation, **kwargs):
        super().set_attn_implementation(attn_implementation, **kwargs)
        self._route_attention()

    def set_attention_path(self, path: str) -> None:
        """ "streams" or "mask" (see VoCoLlavaConfig.attention_path), for this model from now on."""
        if path not in ("streams", "mask"):
            raise ValueError(f"unknown attention path {path!r}; expected streams or mask")
        self.config.attention_path = path
        self._route_attention()

    def _route_attention(self) -> None:
        # The text model's layers pick their attention function by this name, so the streams path
        # is a name registered with AttentionInterface; the kernel the user chose stays readable in it.
        text = self.text_model.config
        kernel = stream_kernel(text._attn_implementation) or text._attn_implementation
        streams = self.config.attention_path == "streams" and kernel in STREAM_IMPLEMENTATIONS
        text._attn_implementation_internal = STREAM_IMPLEMENTATIONS[kernel] if streams else kernel

    @property
    def attention_kernel(self) -> str:
        """The text model's kernel: "sdpa", "eager" or "flash_attention_2", whichever path applies the rule."""
        impl = self.text_model.config._attn_implementation
        return stream_kernel(impl) or impl

    def attention_mask_for(self, query_labels: TokenLabels, key_labels: TokenLabels, rule: str) -> torch.Tensor:
        kernel = self.attention_kernel
        if kernel == "eager":
            return voco_attention_mask(query_labels, key_labels, rule, dtype=self.dtype)
        if kernel == "sdpa":
            return voco_attention_mask(query_labels, key_labels, rule)
        raise NotImplementedError(
            f"attention implementation {kernel!r} cannot take the VoCo mask; use attention_path='streams' "
            "(the default) or load with attn_implementation='sdpa' or 'eager'"
        )

    def attention_inputs(self, query_labels: TokenLabels, key_labels: TokenLabels, rule: str) -> dict:
        """The text-model keyword arguments that apply `rule` to queries against keys (the keys end
        with the queries): a stream plan and no mask when the text model is routed to streams, else
        the dense mask. On sdpa, queries against earlier keys (answering from caches: the prompt's
        text, then one token per decode step) keep the rule's rows of the mask, queries x keys: small,
        and cheaper there than gathering every cached key into a stream (measured: +1.5-2 ms of a
        20 ms CPU answer). FlashAttention-2, which takes no mask, runs those as streams too."""
        kernel = stream_kernel(self.text_model.config._attn_implementation)
        against_cache = query_labels.kind.shape[1] < key_labels.kind.shape[1]
        if kernel is None or (kernel == "sdpa" and against_cache):
            return {"attention_mask": self.attention_mask_for(query_labels, key_labels, rule)}
        return {"attention_mask": None, PLAN_KWARG: plan_streams(query_labels, key_labels, rule, kernel)}

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, attention_rule=None, **kwargs):
        """LLaVA's forward under the VoCo rule. A 2D padding mask becomes the rule: a stream plan
        or the dense 4D mask (`attention_inputs`)."""
        if input_ids is not None and (attention_mask is None or attention_mask.dim() == 2):
            rule = attention_rule or self.config.attention_rule
            labels = self.labels_for(input_ids, attention_mask)
            if position_ids is None:
                position_ids = layout_positions(labels, self.layout_for(rule))
            kwargs.update(self.attention_inputs(labels, labels, rule))
            return super().forward(input_ids=input_ids, position_ids=position_ids, **kwargs)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)

    # ---- pass 1: compression ----------------------------------------------------------------

    def fingerprint(self) -> str:
        """Identifies the weights a cache was made with: the LM's shape plus a strided sample of
        every parameter (cheap even at 7B, and any fine-tuning step changes it)."""
        text = self.config.text_config
        shape = (text.num_hidden_layers, text.hidden_size, text.num_key_value_heads, text.vocab_size)
        digest = hashlib.sha256(repr(shape).encode())
        for name, param in sorted(self.named_parameters()):
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64]
            digest.update(name.encode())
            digest.update(sample.to(torch.bfloat16).float().cpu().numpy().tobytes())  # dtype-independent
        return digest.hexdigest()

    @torch.no_grad()
    def compress(self, pixel_values: torch.Tensor, num_voco: int | None = None, batch_size: int = 8) -> VoCoCache:
        """Run each image's group (`VoCoLlavaConfig.group_ids`) on its own; keep VoCo K/V."""
        if self.config.compressor != "voco":
            raise ValueError(f"compressor {self.config.compressor!r} has no VoCo cache; answer with route 'full'")
        k = self.config.accepted_num_voco(num_voco)
        n = self.config.num_vision_tokens
        ids = torch.tensor([self.config.group_ids(k)], device=self.device)
        labels = self.labels_for(ids, None)
        length = ids.shape[1]
        positions = torch.arange(length, device=self.device)[None]
        group_embed = self.get_input_embeddings()(ids)
        is_vision = ids[0] == self.config.image_token_id
        keys, values = [], []
        for start in range(0, pixel_values.shape[0], batch_size):
            pixels = pixel_values[start : start + batch_size].to(self.device, self.dtype)
            features = torch.stack(self.get_image_features(pixel_values=pixels).pooler_output)
            embeds = group_embed.expand(len(features), -1, -1).clone()
            embeds[:, is_vision] = features.to(embeds.dtype)
            rows = labels.expand(len(features))
            out = self.text_model(
                inputs_embeds=embeds,
                **self.attention_inputs(rows, rows, "voco"),
                position_ids=positions.expand(len(features), -1),
                past_key_values=DynamicCache(),
                use_cache=True,
            )
            keys.append([layer.keys[:, :, length - k :] for layer in out.past_key_values.layers])
            values.append([layer.values[:, :, length - k :] for layer in out.past_key_values.layers])
        return VoCoCache(
            keys=[torch.cat(chunks) for chunks in zip(*keys)],
            values=[torch.cat(chunks) for chunks in zip(*values)],
            positions=list(range(length - k, length)),
            num_vision=n,
            fingerprint=self.fingerprint(),
            layout=self.config.cache_layout,
        )

    # ---- pass 2: answering ------------------------------------------------------------------

    def _place_cache(self, labels: TokenLabels, positions: torch.Tensor, cache: VoCoCache | list[VoCoCache]):
        """The cached VoCo K/V laid out per row in prompt order, keys re-rotated to their places.
        `cache`: one cache or a list (their groups in order, each group with its own K)."""
        caches = cache_list(cache)
        if len({(c.fingerprint, c.num_vision) for c in caches}) > 1:
            raise InputError("the caches of one prompt were made by different models")
        # compact and natural caches re-rotate into each other; the reference layout's group is another thing
        ours = self.config.cache_layout
        for c in caches:
            if (c.layout == "reference") != (ours == "reference"):
                raise InputError(f"a cache made under layout {c.layout!r}; this model runs layout {ours!r}")
        ks = torch.tensor(group_num_voco(caches), device=self.device)
        is_voco = (labels.kind == VOCO) & labels.valid
        groups_per_row = labels.group.amax(dim=1)
        if int(groups_per_row.sum()) != len(ks):
            raise InputError(f"prompt has {int(groups_per_row.sum())} images but the cache holds {len(ks)}")
        # <voco> tokens of each group in the prompt, in prompt order, against the K of its cached group
        per_group = torch.zeros(len(labels.group), int(groups_per_row.max()) + 1, dtype=torch.long, device=self.device)
        per_group = per_group.scatter_add(1, labels.group, is_voco.long())[:, 1:]
        in_prompt = per_group[torch.arange(per_group.shape[1], device=self.device) < groups_per_row[:, None]]
        if not torch.equal(in_prompt, ks):
            bad = int((in_prompt != ks).nonzero()[0])
            raise InputError(
                f"image {bad + 1} of the prompt carries {int(in_prompt[bad])} <voco> tokens; "
                f"its cache has K={int(ks[bad])}"
            )
        index, valid = _pack(is_voco)
        voco_labels = labels.select(index, valid)
        rank = (torch.cumsum(is_voco.long(), dim=1) - 1).gather(1, index)  # VoCo token count before, in row
        row_tokens = is_voco.sum(1)
        first_token = torch.cumsum(row_tokens, 0) - row_tokens  # flat index of each row's first cached token
        flat = torch.where(valid, first_token[:, None] + rank, 0)  # into the [sum of K over groups] tokens
        source_positions = torch.tensor(
            [p for c in caches for _ in range(c.num_groups) for p in c.positions], device=self.device
        )
        delta = positions.gather(1, index) - source_positions[flat]
        layers = []
        for layer in range(caches[0].num_layers):
            # per cache [groups, heads, K, d] -> [groups * K, heads, d], then every cache's tokens in order
            k, v = (
                torch.cat([t[layer].to(self.device).transpose(1, 2).flatten(0, 1) for t in tensors])[flat].transpose(
                    1, 2
                )
                for tensors in ([c.keys for c in caches], [c.values for c in caches])
            )
            layers.append((self.rerotate_keys(k, delta).to(self.dtype), v.to(self.dtype)))
        return voco_labels, layers

    def rerotate_keys(self, keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Keys [B, heads, T, d] rotated at positions p, re-rotated to p + delta [B, T]. Exact
        because RoPE rotations compose and an isolated group is translation invariant."""
        rotary = self.text_model.rotary_emb
        cos, sin = rotary(torch.zeros(1, device=keys.device, dtype=torch.float32), delta)
        scale = getattr(rotary, "attention_scaling", 1.0)  # applied once, when the keys were made
        # The text model's own RoPE function, from its modeling module (modeling_llama,
        # modeling_qwen2, ...: whichever LM this is), so the re-rotation is the one its layers
        # apply. It rotates a query and a key and returns both: the keys go in as both, the
        # rotated keys are the second output.
        rotate = sys.modules[type(self.text_model).__module__].apply_rotary_pos_emb
        exact = keys.float()
        return rotate(exact, exact, cos.float() / scale, sin.float() / scale)[1].to(keys.dtype)

    def prefill(
        self, input_ids, attention_mask=None, pixel_values=None, cache: VoCoCache | None = None, rule=None
    ) -> Prefill:
        """Run the prompt, for decoding to continue from (`Prefill`).

        With `cache`: the queries are the context tokens only; keys are cached VoCo K/V + context.
        Without: one pass over the whole sequence under `rule` (vision K/V stay in the KV cache)."""
        rule = rule or ("voco" if cache is not None else self.config.attention_rule)
        labels = self.labels_for(input_ids, attention_mask)
        positions = layout_positions(labels, self.layout_for(rule))
        if cache is None:
            out = super().forward(
                input_ids=input_ids,
                pixel_values=pixel_values,
                **self.attention_inputs(labels, labels, rule),
                position_ids=positions,
                past_key_values=DynamicCache(),
                use_cache=True,
            )
            return Prefill(out.logits, labels, labels, out.past_key_values, positions)
        if rule == "causal":
            raise ValueError("a VoCo cache is only valid under the VoCo rule")
        return self.prefill_context(input_ids, labels, positions, *self._place_cache(labels, positions, cache), rule)

    def prefill_context(
        self, input_ids, labels: TokenLabels, positions, cached: TokenLabels, layers, rule: str
    ) -> Prefill:
        """Pass 2 against K/V computed before: the prompt's context tokens attend, under `rule`,
        to the cached tokens (`cached` labels, per-layer (keys, values) already at their prompt
        positions) and causally to each other. Returns a `Prefill`."""
        index, valid = _pack((labels.group == 0) & labels.valid)  # the tokens outside every group
        query_labels = labels.select(index, valid)
        key_labels = TokenLabels.cat(cached, query_labels)
        query_positions = positions.gather(1, index)
        out = self.text_model(
            inputs_embeds=self.get_input_embeddings()(input_ids.gather(1, index)),
            **self.attention_inputs(query_labels, key_labels, rule),
            position_ids=query_positions,
            # A KV cache that starts out holding the cached K/V, layer by layer: `ddp_cache_data`
            # (named for DDP, which gathers caches across replicas) is DynamicCache's way to begin
            # from given per-layer (keys, values). Each layer's update() appends the context tokens'
            # K/V after them, so the cached tokens are every layer's first keys, also for decoding.
            past_key_values=DynamicCache(ddp_cache_data=layers),
            use_cache=True,
        )
        return Prefill(
            self.lm_head(out.last_hidden_state), query_labels, key_labels, out.past_key_values, query_positions
        )

    def decode_step(self, token, key_labels: TokenLabels, past, position, order: int, rule: str):
        """One new context token per row against the KV cache. Returns (next-token logits [B, V]
        in fp32, the key labels grown by the new token)."""
        new = TokenLabels(
            kind=torch.full_like(token, CONTEXT)[:, None],
            group=torch.zeros_like(token)[:, None],
            valid=torch.ones_like(token, dtype=torch.bool)[:, None],
            order=torch.full_like(token, order)[:, None],
        )
        key_labels = TokenLabels.cat(key_labels, new)
        out = self.text_model(
            inputs_embeds=self.get_input_embeddings()(token[:, None]),
            **self.attention_inputs(new, key_labels, rule),
            position_ids=position,
            past_key_values=past,
            use_cache=True,
        )
        return self.lm_head(out.last_hidden_state[:, -1]).float(), key_labels

    def generate(self, *args, **kwargs):
        """Refused: transformers' decoding loop calls `forward` one token at a time without the
        token labels of the prompt, so the VoCo rule and the positions would be lost. Use `answer`."""
        raise NotImplementedError(
            "VoCoLlavaForConditionalGeneration decodes with model.answer(input_ids, attention_mask, "
            "pixel_values=... or cache=...); transformers' generate() does not carry the VoCo rule"
        )

    @torch.no_grad()
    def answer(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        cache: VoCoCache | None = None,
        rule: str | None = None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
        streamer=None,
    ) -> Generation:
        """Greedy or sampled decoding from caches (two-stage) or from pixels (one masked pass)."""
        rule = rule or ("voco" if cache is not None else self.config.attention_rule)
        eos = self.generation_config.eos_token_id if eos_token_id is None else eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        pad = pad_token_id if pad_token_id is not None else (eos if eos is not None else 0)
        prompt = self.prefill(input_ids, attention_mask, pixel_values, cache, rule)
        last = _last_valid(prompt.query_labels.valid)
        next_logits = prompt.logits[torch.arange(len(last)), last].float()
        next_position = prompt.query_positions.gather(1, last[:, None]) + 1
        # Past the context the model never saw a position: refuse such a prompt, stop answers at its end.
        used, context = int(next_position.max()), self.config.text_config.max_position_embeddings
        if used >= context:
            raise InputError(f"the prompt takes {used} positions; the model's context is {context}; shorten it")
        max_new_tokens = min(max_new_tokens, context - used)
        order, key_labels = prompt.next_order, prompt.key_labels
        batch = input_ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        tokens, logprobs = [], []
        for step in range(max_new_tokens):
            log_p = torch.log_softmax(next_logits, dim=-1)
            token = _choose(next_logits, do_sample, temperature, top_p, generator)
            chosen = log_p.gather(1, token[:, None])[:, 0]
            token = torch.where(done, pad, token)
            tokens.append(token)
            logprobs.append(torch.where(done, 0.0, chosen))
            if streamer is not None:
                streamer.put(token.cpu())
            done = done | (token == eos) if eos is not None else done
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            next_logits, key_labels = self.decode_step(
                token, key_labels, prompt.past, next_position + step, order + step, rule
            )
        if streamer is not None:
            streamer.end()
        sequences = torch.stack(tokens, dim=1)
        is_eos = sequences == eos if eos is not None else torch.zeros_like(sequences, dtype=torch.bool)
        ended = is_eos.any(1)
        lengths = torch.where(ended, is_eos.float().argmax(1) + 1, sequences.shape[1])
        return Generation(sequences, torch.stack(logprobs, dim=1), lengths)


def _pack(select: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the selected tokens of each row, left-padded to the longest row, and which
    of them are real: a stable sort moves the selected tokens to the end in their order."""
    width = int(select.sum(1).max()) if select.numel() else 0
    index = torch.sort(select.int(), dim=1, stable=True).indices[:, select.shape[1] - width :]
    return index, select.gather(1, index)


def _last_valid(valid: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    return torch.where(valid, positions, -1).amax(dim=1)


def _choose(logits, do_sample, temperature, top_p, generator) -> torch.Tensor:
    if not do_sample or temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
