"""The VoCo attention rule and position layouts: the one place they are written.

Every token gets a label: its kind (context, vision or VoCo), its compression group (image or
video frame i is group i: its vision tokens V_i followed by its K VoCo tokens C_i; 0 for context),
whether it is real (not padding) and its order in the conceptual sequence. From the labels of the
queries and of the keys, `voco_attention_mask` builds the mask and `layout_positions` the positions.

Training (one pass over everything), compression (a group run on its own) and answering from
caches (context tokens against cached VoCo keys) all take their rule from these labels, so the rule
the model is trained under is exactly the rule it is served under. The rule is applied either as
the dense mask below (the reference, and eager attention) or, with no mask, as exact causal
streams on sdpa / FlashAttention-2 kernels (streams.py, which tests compare against this mask).

Rules:
  "voco"     the paper's rule: a group's tokens see their own group causally; every other token
             sees, causally, the tokens outside every group and the VoCo tokens, never the rest
             of a group (its vision tokens).
  "causal"   ordinary causal attention over everything (the full-token upper-bound setting).
  "isolated" ablation: text sees only the tokens outside every group, neither vision nor VoCo tokens.

Layouts (`VOCO_LAYOUTS`, the config's `voco_layout`) say what a group is:
  "llava"     ours: image i is group i, its N vision tokens then its K VoCo tokens, wherever
              LLaVA puts the image; everything else is context (group 0).
  "reference" the reference code's (github.com/Yxxxb/VoCo-LLaMA): one group per row, every token
              up to the row's last VoCo token (BOS, the vision tokens, the newline, the VoCo tokens:
              the image goes first). Under the same "voco" rule this is its mask
              (llava/model/language_model/llava_llama_1stg.py `make_voco_mask_llava`): tokens up to
              the last VoCo token see everything before them; tokens after it see only keys from the
              first VoCo token on; a row without VoCo tokens is causal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CONTEXT, VISION, VOCO = 0, 1, 2
RULES = ("voco", "causal", "isolated")
LAYOUTS = ("compact", "natural")
VOCO_LAYOUTS = ("llava", "reference")


@dataclass
class TokenLabels:
    """Per-token labels, all [batch, length]."""

    kind: torch.Tensor  # CONTEXT / VISION / VOCO
    group: torch.Tensor  # 1-based compression group within the row, 0 for context tokens
    valid: torch.Tensor  # bool, False for padding
    order: torch.Tensor  # index in the conceptual sequence; causality is order_k <= order_q

    def select(self, index: torch.Tensor, valid: torch.Tensor) -> TokenLabels:
        """Gather tokens [batch, n] by index, marking some of them invalid."""
        take = lambda t: t.gather(1, index)
        return TokenLabels(take(self.kind), take(self.group), take(self.valid) & valid, take(self.order))

    def expand(self, batch: int) -> TokenLabels:
        """One row's labels [1, n] as `batch` identical rows."""
        return TokenLabels(*(t.expand(batch, -1) for t in (self.kind, self.group, self.valid, self.order)))

    @staticmethod
    def cat(first: TokenLabels, second: TokenLabels) -> TokenLabels:
        return TokenLabels(
            *(
                torch.cat([a, b], dim=1)
                for a, b in zip(
                    (first.kind, first.group, first.valid, first.order),
                    (second.kind, second.group, second.valid, second.order),
                )
            )
        )


def label_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_token_id: int,
    voco_token_id: int,
    voco_layout: str = "llava",
) -> TokenLabels:
    """Label a sequence in which every image is written as N image tokens then K VoCo tokens
    (layout "llava"), or whose tokens up to its last VoCo token are the one group (layout
    "reference"; see the module docstring)."""
    if voco_layout not in VOCO_LAYOUTS:
        raise ValueError(f"unknown VoCo layout {voco_layout!r}; expected one of {VOCO_LAYOUTS}")
    kind = torch.full_like(input_ids, CONTEXT)
    kind[input_ids == image_token_id] = VISION
    kind[input_ids == voco_token_id] = VOCO
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    kind = torch.where(valid, kind, CONTEXT)
    order = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    if voco_layout == "reference":
        # make_voco_mask_llava: `reverse_cumsum(inputs == voco) >= 1` marks the tokens up to the last VoCo token
        is_voco = (kind == VOCO).long()
        up_to_last = is_voco.sum(1, keepdim=True) - torch.cumsum(is_voco, 1) + is_voco >= 1
        return TokenLabels(kind, (up_to_last & valid).long(), valid, order)
    prev = torch.nn.functional.pad(kind, (1, 0), value=CONTEXT)[:, :-1]
    # A group opens at its first vision token, or at a VoCo token straight after context.
    opens = ((kind == VISION) & (prev != VISION)) | ((kind == VOCO) & (prev == CONTEXT))
    group = torch.cumsum(opens.long(), dim=1) * (kind != CONTEXT)
    return TokenLabels(kind, group, valid, order)


def voco_attention_mask(
    query: TokenLabels,
    key: TokenLabels,
    rule: str = "voco",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mask [batch, 1, queries, keys]: bool (True = may attend) for sdpa, or, given a float
    `dtype`, additive (0 / dtype min) for eager attention, which would silently add a bool mask."""
    if rule not in RULES:
        raise ValueError(f"unknown attention rule {rule!r}; expected one of {RULES}")
    q_group, k_group = query.group[:, :, None], key.group[:, None, :]
    if rule == "causal":
        allowed = torch.ones_like(q_group == k_group)
    else:
        allowed = torch.where(q_group > 0, q_group == k_group, text_sees(key, rule)[:, None, :])
    allowed = allowed & (key.order[:, None, :] <= query.order[:, :, None]) & key.valid[:, None, :]
    # Padding queries may look anywhere: it keeps their softmax finite; their outputs are unused.
    allowed = (allowed | ~query.valid[:, :, None])[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def text_sees(key: TokenLabels, rule: str) -> torch.Tensor:
    """[batch, keys] which keys a token outside every group may see (causality and padding aside):
    under "voco" the tokens outside every group and the VoCo tokens, under "isolated" the former only.
    (With layout "llava" these are the context tokens, and the context and VoCo tokens.)"""
    outside = key.group == 0
    return outside | (key.kind == VOCO) if rule == "voco" else outside


def layout_positions(labels: TokenLabels, layout: str = "compact") -> torch.Tensor:
    """Positions [batch, length] of a whole conceptual sequence (padding may be on either side).

    natural: a token's position is its index among the real tokens.
    compact: context and VoCo tokens are numbered as if vision tokens were absent; a group's N
    vision tokens take the N positions just before its first VoCo token. Valid only when groups
    are isolated (the VoCo rule), since vision positions overlap those of earlier context.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown position layout {layout!r}; expected one of {LAYOUTS}")
    valid = labels.valid.long()
    if layout == "natural":
        return torch.where(labels.valid, torch.cumsum(valid, dim=1) - 1, 0)
    vision = ((labels.kind == VISION) & labels.valid).long()
    base = torch.cumsum(valid - vision, dim=1) - 1  # position of the last non-vision token so far
    vision_cum = torch.cumsum(vision, dim=1)
    # Vision tokens of this group still to come after each token: (cum at group end) - (cum here).
    num_groups = int(labels.group.max()) + 1 if labels.group.numel() else 1
    group_end = torch.zeros(labels.group.shape[0], num_groups, dtype=torch.long, device=labels.group.device)
    group_end = group_end.scatter_reduce(1, labels.group, vision_cum * vision, reduce="amax")
    still_to_come = group_end.gather(1, labels.group) - vision_cum
    positions = torch.where(vision.bool(), base - still_to_come, base)
    return torch.where(labels.valid, positions, 0)
