"""The VoCo rule and the position layouts on hand-labelled sequences."""

import torch

from voco_llama.core.attention import label_tokens, layout_positions, voco_attention_mask

IMG, VOC, PAD = 4, 5, 0
# BOS, ctx, [V V V C C], ctx, [V V V C C], ctx ctx   (17 tokens, 2 of left padding)
ROW = [PAD, PAD, 7, 8, IMG, IMG, IMG, VOC, VOC, 9, IMG, IMG, IMG, VOC, VOC, 9, 9]


def labels_of(rows, attention=None):
    ids = torch.tensor(rows)
    mask = (ids != PAD).long() if attention is None else torch.tensor(attention)
    return label_tokens(ids, mask, IMG, VOC)


def test_labels_groups_and_kinds():
    labels = labels_of([ROW])
    assert labels.kind[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 1, 1, 1, 2, 2, 0, 0]
    assert labels.group[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 0, 0]


def test_mask_is_the_papers_rule():
    allowed = voco_attention_mask(labels_of([ROW]), labels_of([ROW]))[0, 0]
    real = [i for i, t in enumerate(ROW) if t != PAD]
    for q in real:
        for k in range(len(ROW)):
            qk, kk = ROW[q], ROW[k]
            in_group_q = qk in (IMG, VOC)
            group = lambda i: 1 if 4 <= i <= 8 else (2 if 10 <= i <= 14 else 0)
            if kk == PAD or k > q:
                expected = False
            elif in_group_q:
                expected = group(q) == group(k)
            else:
                expected = kk != IMG
            assert bool(allowed[q, k]) == expected, (q, k)
    # padding queries may attend anywhere (finite softmax); nothing attends to padding
    assert allowed[0].all() and not allowed[2:, :2].any()


def test_isolated_and_causal_rules():
    labels = labels_of([ROW])
    isolated = voco_attention_mask(labels, labels, "isolated")[0, 0]
    causal = voco_attention_mask(labels, labels, "causal")[0, 0]
    assert not isolated[15, 7] and not isolated[15, 4] and isolated[15, 9] and isolated[15, 2]
    assert causal[15, 4] and causal[15, 13] and not causal[4, 5]
    assert isolated[13, 10] and not isolated[13, 9]  # groups are the same as under the VoCo rule


def test_float_mask_for_eager_matches_bool():
    labels = labels_of([ROW])
    bool_mask = voco_attention_mask(labels, labels)
    float_mask = voco_attention_mask(labels, labels, dtype=torch.float32)
    assert float_mask.dtype == torch.float32
    assert torch.equal(float_mask == 0, bool_mask)
    assert float_mask.min() == torch.finfo(torch.float32).min


def test_positions_natural_and_compact():
    labels = labels_of([ROW])
    assert layout_positions(labels, "natural")[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    # compact: context/VoCo numbered without vision; a group's vision tokens sit just before its VoCo
    assert layout_positions(labels, "compact")[0].tolist() == [0, 0, 0, 1, -1, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 8]


def test_right_and_left_padding_and_no_image_rows_agree():
    body = ROW[2:]
    text_only = [7, 8, 9, 9]
    left = labels_of([ROW, [PAD] * 11 + [7, 8] + text_only])
    right = labels_of([body + [PAD, PAD], [7, 8] + text_only + [PAD] * 11])
    for layout in ("natural", "compact"):
        pl, pr = layout_positions(left, layout), layout_positions(right, layout)
        assert torch.equal(pl[0, 2:], pr[0, :15]) and torch.equal(pl[1, 11:], pr[1, :6])
    ml, mr = voco_attention_mask(left, left)[:, 0], voco_attention_mask(right, right)[:, 0]
    assert torch.equal(ml[0, 2:, 2:], mr[0, :15, :15]) and torch.equal(ml[1, 11:, 11:], mr[1, :6, :6])
    assert torch.equal(ml[1, 11:, 11:], torch.ones(6, 6, dtype=torch.bool).tril())  # no image: plain causal
