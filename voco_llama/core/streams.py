"""The VoCo rule on causal kernels: no dense mask, exact.

Under the rule every attention call splits into plain causal problems over the already-rotated
q/k/v (RoPE was applied before the split, with each token's own position id):
  * the group stream: each compression group [V_i, C_i] on its own, causally -- the outputs of its
    vision and VoCo tokens;
  * the main stream, per row: the keys a token outside every group may see (`text_sees`; rule
    "causal": everything) in order, causally -- the outputs of those tokens. A VoCo token has one
    hidden state per layer, so its keys and values are the same in both streams; its query row in
    the main stream is computed and thrown away.
The "causal" rule is the main stream alone.

The same split serves answering from caches: the keys are earlier tokens (cached VoCo K/V, or
the KV cache of a decode) followed by the queries, and the main stream orders all of them by
their place in the conceptual sequence; a slot whose key has no query (a cached VoCo token)
gets a query whose output is discarded. (On sdpa the model answers from caches with the rule's
few mask rows instead, which is cheaper there; FlashAttention-2, taking no mask, uses this.)

`plan_streams` turns token labels into a `StreamPlan` once per model call; every layer's
`streams_attention` reuses it through the attention kwargs. Two kernels run the streams:
  * "sdpa": `scaled_dot_product_attention(is_causal=True)`, one call per stream on rows padded
    on the right (exact: under a causal rule a real query never sees a later padding key; groups
    of one image size need no padding at all);
  * "flash_attention_2": one `flash_attn_varlen_func` call over every stream's sequences, packed
    back to back with cu_seqlens (FA2 >= 2.1 aligns a shorter query block bottom-right, which a
    decode step's one query per row relies on).

The text model is routed here by its attention implementation: `voco_streams_sdpa` or
`voco_streams_fa2`, registered with transformers' `AttentionInterface` (see
`VoCoLlavaForConditionalGeneration.set_attention_path`). No mask function is registered for
these names, so transformers builds no mask for them: the rule travels in the plan. A call that
brings a 4D mask instead (the dense reference, a decode step's single row on sdpa) runs stock sdpa.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.flash_attention import get_target_dtype
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .attention import RULES, TokenLabels, text_sees

# kernel (the attention implementation a user asks for) -> the name the text model is routed to.
# No "flash" in the names: transformers treats any such name as a flash kernel it must import.
STREAM_IMPLEMENTATIONS = {"sdpa": "voco_streams_sdpa", "flash_attention_2": "voco_streams_fa2"}
_KERNEL_OF = {name: kernel for kernel, name in STREAM_IMPLEMENTATIONS.items()}
PLAN_KWARG = "voco_streams"  # the attention kwarg that carries the plan to every layer


def stream_kernel(implementation: str | None) -> str | None:
    """The kernel behind a routed implementation name, None for any other name."""
    return _KERNEL_OF.get(implementation)


@dataclass
class StreamPlan:
    """Where every slot of every causal sequence reads its query, key and value, and where every
    query token reads its output. Indices are into the flattened [batch * length] tokens."""

    kernel: str
    query_index: torch.Tensor  # [slots] the query token of each slot (every stream's slots back to back)
    key_index: torch.Tensor  # [slots] its key token
    shapes: list[tuple[int, int]]  # sdpa: (rows, width) of each stream's rectangle of slots; varlen: []
    out_source: torch.Tensor  # [batch * queries] row of the packed stream outputs holding each query's output
    out_valid: torch.Tensor | None  # [batch * queries, 1, 1] False for padding queries (output 0); None: no padding
    pairs: int  # query-key pairs inside the causal sequences: what the kernels must compute, at the least
    cu_seqlens_q: torch.Tensor | None = None  # varlen only (int32)
    cu_seqlens_k: torch.Tensor | None = None
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    identity: bool = False  # one causal sequence per row, every token in place: no gathers needed


def plan_streams(query_labels: TokenLabels, key_labels: TokenLabels, rule: str, kernel: str) -> StreamPlan:
    """The plan for queries [B, Q] against keys [B, KV] whose last Q tokens are the queries
    (Q == KV: a whole sequence attending to itself)."""
    if rule not in RULES:
        raise ValueError(f"unknown attention rule {rule!r}; expected one of {RULES}")
    if kernel not in STREAM_IMPLEMENTATIONS:
        raise ValueError(f"no stream kernel {kernel!r}; expected one of {tuple(STREAM_IMPLEMENTATIONS)}")
    batch, q_len = query_labels.kind.shape
    kv_len = key_labels.kind.shape[1]
    earlier = kv_len - q_len
    if earlier < 0 or not torch.equal(key_labels.order[:, earlier:], query_labels.order):
        raise ValueError("streams need the queries to be the last keys (a KV cache's layout)")
    device = key_labels.kind.device
    # Per key token, all [B, KV]: its column t, its row, whether it is also a (real) query, the
    # flat index of that query in [B * Q], whether it belongs to a group stream, and whether the
    # main stream holds it under the rule.
    t = torch.arange(kv_len, device=device).expand(batch, kv_len)
    rows = torch.arange(batch, device=device)[:, None].expand(batch, kv_len)
    is_query = (t >= earlier) & key_labels.valid
    query_flat = rows * q_len + (t - earlier)  # meaningful where is_query
    grouped = key_labels.group > 0 if rule != "causal" else torch.zeros_like(key_labels.valid)
    sees = torch.ones_like(key_labels.valid) if rule == "causal" else text_sees(key_labels, rule)
    num_groups = int(key_labels.group.max()) if rule != "causal" and key_labels.group.numel() else 0

    # Slots of the main stream (sequence id = row) and of the group stream (ids after the rows).
    # members(): [slots] flat key index into [B * KV], its sequence id, and whether the slot is the
    # key's home (its query's output is read from this stream).
    def members(member, seq_id, home):
        index = member.flatten().nonzero()[:, 0]
        return index, seq_id.flatten()[index], home.flatten()[index]

    parts = [members(key_labels.valid & sees, rows, is_query & ~grouped)]
    if num_groups:
        group_id = batch + rows * num_groups + key_labels.group - 1  # [B, KV] sequence id of each group
        parts.append(members(key_labels.valid & grouped, group_id, is_query & grouped))
    slot_key, slot_seq, slot_home = (torch.cat(x) for x in zip(*parts))  # [slots] each
    # sort the slots by sequence, then by order within it: every sequence's slots back to back, causal
    span = int(key_labels.order.max()) + 1 if key_labels.order.numel() else 1
    order = torch.argsort(slot_seq * span + key_labels.order.flatten()[slot_key])
    slot_key, slot_seq, slot_home = slot_key[order], slot_seq[order], slot_home[order]

    # Keys after a sequence's last query are seen by nobody: drop them (and query-less sequences).
    position = torch.arange(len(slot_seq), device=device)  # [slots]
    last = torch.full((batch * (1 + num_groups),), -1, device=device, dtype=torch.long)  # [sequences]
    last = last.scatter_reduce(0, slot_seq, torch.where(slot_home, position, -1), reduce="amax")
    keep = position <= last[slot_seq]
    slot_key, slot_seq, slot_home = slot_key[keep], slot_seq[keep], slot_home[keep]  # [slots kept]
    # A slot whose key has no query of this stream still needs a query row: any one will do, as
    # its output is dropped (so its gradient is exactly zero).
    slot_query = torch.where(is_query.flatten()[slot_key], query_flat.flatten()[slot_key], 0)  # [slots]
    home_query = query_flat.flatten()[slot_key[slot_home]]  # [homes] the query each home slot answers
    out_source = torch.zeros(batch * q_len, dtype=torch.long, device=device)  # [B * Q]
    out_valid = None if bool(query_labels.valid.all()) else query_labels.valid.reshape(-1, 1, 1)
    if not len(slot_key):  # every query is padding
        return StreamPlan(
            kernel=kernel,
            query_index=slot_query,
            key_index=slot_key,
            shapes=[],
            out_source=out_source,
            out_valid=out_valid,
            pairs=0,
        )

    _, lengths = torch.unique_consecutive(slot_seq, return_counts=True)  # [sequences kept] slots each
    starts = torch.cumsum(lengths, 0) - lengths  # [sequences kept] first slot of each
    pairs = int((lengths * (lengths + 1) // 2).sum())
    # Text-only rows without padding are one stream that is the row itself: nothing to gather.
    identity = q_len == kv_len and len(slot_key) == batch * kv_len and len(lengths) == batch
    identity = identity and torch.equal(slot_key, torch.arange(len(slot_key), device=device))

    if kernel == "flash_attention_2":
        cu_k = torch.nn.functional.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)  # [sequences + 1]
        if q_len == 1:
            # A decode step: each sequence's one query is its newest token, its last slot.
            out_source[home_query] = torch.arange(len(home_query), device=device)
            return StreamPlan(
                kernel=kernel,
                query_index=home_query,
                key_index=slot_key,
                shapes=[],
                out_source=out_source,
                out_valid=out_valid,
                pairs=int(lengths.sum()),
                cu_seqlens_q=torch.arange(len(lengths) + 1, device=device, dtype=torch.int32),
                cu_seqlens_k=cu_k,
                max_seqlen_q=1,
                max_seqlen_k=int(lengths.max()),
            )
        out_source[home_query] = torch.arange(len(slot_key), device=device)[slot_home]
        width = int(lengths.max())
        return StreamPlan(
            kernel=kernel,
            query_index=slot_query,
            key_index=slot_key,
            shapes=[],
            out_source=out_source,
            out_valid=out_valid,
            pairs=pairs,
            cu_seqlens_q=cu_k,
            cu_seqlens_k=cu_k,
            max_seqlen_q=width,
            max_seqlen_k=width,
            identity=identity,
        )

    # sdpa: each stream's sequences as the rows of one rectangle, padded on the right.
    shapes, query_index, key_index, offset = [], [], [], 0
    is_main = slot_seq[starts] < batch  # [sequences kept]
    for stream in (is_main, ~is_main):
        if not bool(stream.any()):
            continue
        length, start = lengths[stream], starts[stream]  # [rows] of this stream's rectangle
        width = int(length.max())
        column = torch.arange(width, device=device)
        slot = torch.where(column < length[:, None], start[:, None] + column, start[:, None])  # [rows, width]
        real_home = slot_home[slot] & (column < length[:, None])  # [rows, width]
        out_source[slot_query[slot][real_home]] = offset + torch.nonzero(real_home.flatten())[:, 0]
        shapes.append(tuple(slot.shape))
        query_index.append(slot_query[slot].flatten())
        key_index.append(slot_key[slot].flatten())
        offset += slot.numel()
    query_index, key_index = torch.cat(query_index), torch.cat(key_index)
    return StreamPlan(
        kernel=kernel,
        query_index=query_index,
        key_index=key_index,
        shapes=shapes,
        out_source=out_source,
        out_valid=out_valid,
        pairs=pairs,
        identity=identity,
    )


def streams_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """An `AttentionInterface` function: q [B, H, Q, d], k/v [B, Hk, KV, d] (rotated) ->
    ([B, Q, H, d], None), under the plan in kwargs["voco_streams"]."""
    plan: StreamPlan | None = kwargs.pop(PLAN_KWARG, None)
    if plan is None:
        if stream_kernel(module.config._attn_implementation) == "sdpa" and attention_mask is not None:
            if attention_mask.dim() == 4:
                return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
        raise ValueError(
            "VoCo stream attention got no plan: call the VoCo model (it labels the tokens), or pass a 4D mask on sdpa"
        )
    batch, heads, q_len, dim = query.shape
    q = query.transpose(1, 2).reshape(batch * q_len, heads, dim)
    k = key.transpose(1, 2).reshape(-1, key.shape[1], dim)
    v = value.transpose(1, 2).reshape(-1, value.shape[1], value.shape[-1])
    # one gather per tensor for all streams (each a view of it after): fewer, larger copies
    q_s, k_s, v_s = (q, k, v) if plan.identity else (q[plan.query_index], k[plan.key_index], v[plan.key_index])
    if not len(plan.key_index):
        packed = q.new_zeros(1, heads, v.shape[-1])
    elif plan.kernel == "sdpa":
        outputs, start = [], 0
        for rows, width in plan.shapes:
            part = slice(start, start + rows * width)
            start += rows * width
            streams = (x[part].view(rows, width, x.shape[1], -1).transpose(1, 2) for x in (q_s, k_s, v_s))
            out, _ = sdpa_attention_forward(module, *streams, None, dropout, scaling, is_causal=True)
            outputs.append(out.reshape(rows * width, heads, -1))
        packed = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    else:
        target = get_target_dtype(query, module)  # fp32 activations run the kernel in the weights' half dtype
        if target is not None:
            q_s, k_s, v_s = q_s.to(target), k_s.to(target), v_s.to(target)
        packed = _flash_varlen_func()(
            q_s,
            k_s,
            v_s,
            plan.cu_seqlens_q,
            plan.cu_seqlens_k,
            plan.max_seqlen_q,
            plan.max_seqlen_k,
            dropout_p=dropout,
            softmax_scale=scaling,
            causal=True,
        ).to(query.dtype)
    out = packed if plan.identity else packed[plan.out_source]
    if plan.out_valid is not None:
        out = torch.where(plan.out_valid, out, 0)
    return out.view(batch, q_len, heads, -1), None


@functools.cache
def _flash_varlen_func():
    """flash_attn_varlen_func (FlashAttention-2), imported on first use: CUDA machines only."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as err:
        raise ImportError("attention 'flash_attention_2' needs the flash-attn package (CUDA)") from err
    return flash_attn_varlen_func


for _name in STREAM_IMPLEMENTATIONS.values():
    AttentionInterface.register(_name, streams_attention)
