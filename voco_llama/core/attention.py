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
             sees, causally, all context and VoCo tokens and never a vision token.
  "causal"   ordinary causal attention over everything (the full-token upper-bound setting).
  "isolated" ablation: context sees only context, neither vision nor VoCo tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CONTEXT, VISION, VOCO = 0, 1, 2
RULES = ("voco", "causal", "isolated")
LAYOUTS = ("compact", "natural")


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
) -> TokenLabels:
    """Label a sequence in which every image is written as N image tokens then K VoCo tokens."""
    kind = torch.full_like(input_ids, CONTEXT)
    kind[input_ids == image_token_id] = VISION
    kind[input_ids == voco_token_id] = VOCO
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    kind = torch.where(valid, kind, CONTEXT)
    prev = torch.nn.functional.pad(kind, (1, 0), value=CONTEXT)[:, :-1]
    # A group opens at its first vision token, or at a VoCo token straight after context.
    opens = ((kind == VISION) & (prev != VISION)) | ((kind == VOCO) & (prev == CONTEXT))
    group = torch.cumsum(opens.long(), dim=1) * (kind != CONTEXT)
    order = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
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
    k_kind = key.kind[:, None, :]
    if rule == "causal":
        allowed = torch.ones_like(q_group == k_group)
    else:
        context_sees = (k_kind != VISION) if rule == "voco" else (k_kind == CONTEXT)
        allowed = torch.where(q_group > 0, q_group == k_group, context_sees)
    allowed = allowed & (key.order[:, None, :] <= query.order[:, :, None]) & key.valid[:, None, :]
    # Padding queries may look anywhere: it keeps their softmax finite; their outputs are unused.
    allowed = (allowed | ~query.valid[:, :, None])[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


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
