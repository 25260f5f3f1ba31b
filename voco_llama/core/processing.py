"""From images and prompt text to model inputs.

An image is written in the token sequence as N image tokens (N = the vision tower's patch count,
576 for CLIP ViT-L/14-336) followed by K `<voco>` tokens: one compression group. The prompt text
carries one `<image>` placeholder per image; `expand_image_tokens` turns each into its group.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .conversation import (
    IMAGE_PLACEHOLDER,
    REFERENCE_TEMPLATE,
    TEMPLATES,
    VIDEO_PLACEHOLDER,
    VOCO_PLACEHOLDER,
    get_template,
)
from .errors import InputError

ASPECT_RATIOS = ("pad", "resize", "square", "original")  # LLaVA's --image_aspect_ratio values
# what counts as an image file in a folder (batch compression, frame folders, lmms-eval visuals)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


# `pad` squares an image before the processor resizes it; an image whose longer side exceeds this many
# times the processor's size is first shrunk so that the square stays small (a 12000x4 image would
# otherwise become a 12000x12000 canvas). Normal images (LLaVA's 640x480 COCO) never are.
PRESHRINK_FACTOR = 4
# PIL warns about images above Image.MAX_IMAGE_PIXELS when it opens them; load_image refuses exactly
# those with one line, so the warning would only add a second one.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(path: str | Path) -> Image.Image:
    """An RGB image; more pixels than PIL's Image.MAX_IMAGE_PIXELS are refused before decoding
    (opening is lazy), so a tiny file claiming a huge size costs no memory."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            width, height = image.size
            if not limit or width * height <= limit:
                return image.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable image ({err.__class__.__name__}: {err})") from None
    raise InputError(f"{path}: image is {width}x{height} = {width * height:,} pixels, above the limit of {limit:,}")


def pad_to_square(image: Image.Image, background: tuple[int, int, int], max_side: int | None = None) -> Image.Image:
    """LLaVA's `--image_aspect_ratio pad`: centre the image on a square of its longer side. With
    `max_side`, a longer side above it is first shrunk to it (aspect kept, each side at least 1 px)."""
    width, height = image.size
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _processor_side(image_processor) -> int:
    """The largest side the processor resizes or crops to (CLIP: shortest_edge and crop, SigLIP: height/width)."""
    sizes = [getattr(image_processor, name, None) for name in ("size", "crop_size")]
    keys = ("shortest_edge", "longest_edge", "height", "width")
    return max(side for size in sizes if size is not None for key in keys if isinstance(side := size.get(key), int))


def process_images(images: list[Image.Image], image_processor, aspect_ratio: str = "pad") -> torch.Tensor:
    """pixel_values [n, 3, H, W]; `pad` squares each image in the processor's mean colour first."""
    if aspect_ratio == "pad":
        background = tuple(int(x * 255) for x in image_processor.image_mean)  # truncated, as LLaVA does
        max_side = PRESHRINK_FACTOR * _processor_side(image_processor)
        images = [pad_to_square(image, background, max_side) for image in images]
    elif aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown image_aspect_ratio {aspect_ratio!r}")
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


def expand_image_tokens(
    ids: list[int],
    image_token_id: int,
    num_vision: int,
    voco_token_id: int,
    num_voco: int | list[int],
    labels: list[int] | None = None,
) -> tuple[list[int], list[int] | None]:
    """Replace each image token by its group: N image tokens then K VoCo tokens (labels -100).
    `num_voco`: one K for every image, or one K per image token, in order."""
    ks = iter(num_voco) if isinstance(num_voco, list) else None
    out_ids, out_labels = [], [] if labels is not None else None
    for i, token in enumerate(ids):
        if token == image_token_id:
            group = [image_token_id] * num_vision + [voco_token_id] * (next(ks) if ks is not None else num_voco)
            out_ids += group
            if out_labels is not None:
                out_labels += [-100] * len(group)
        else:
            out_ids.append(token)
            if out_labels is not None:
                out_labels.append(labels[i])
    return out_ids, out_labels


def reference_prompt(prompt: str, num_voco: int) -> str:
    """The reference code's prompt text (github.com/Yxxxb/VoCo-LLaMA llava/eval/model_vqa_loader.py,
    llava/train/train_compress.py `preprocess_v1`) for a prompt rendered with vicuna_v1: its own
    system prompt (REFERENCE_TEMPLATE); with an image, `<image>\n` + K `<voco>` + `\n` first and the
    rest with every newline and `<image>` removed; without one, the text as it is."""
    images = prompt.count(IMAGE_PLACEHOLDER)
    if images > 1:
        raise InputError(f"the reference layout holds one image per prompt; this prompt has {images}")
    ours = TEMPLATES["vicuna_v1"].system
    if prompt.startswith(ours):
        prompt = REFERENCE_TEMPLATE.system + prompt[len(ours) :]
    if not images:
        return prompt
    rest = prompt.replace("\n", "").replace(IMAGE_PLACEHOLDER, "")
    return IMAGE_PLACEHOLDER + "\n" + VOCO_PLACEHOLDER * num_voco + "\n" + rest


def tokenize_with_images(text: str, tokenizer, image_token_id: int) -> list[int]:
    """LLaVA's `tokenizer_image_token` (llava/mm_utils.py), which the reference code tokenises with:
    each piece between `<image>` placeholders tokenised on its own (BOS kept only for the first),
    one image token between pieces."""
    pieces = [tokenizer(piece).input_ids for piece in text.split(IMAGE_PLACEHOLDER)]
    bos = tokenizer.bos_token_id
    offset = 1 if pieces[0] and pieces[0][0] == bos else 0
    ids = [bos] if offset else []
    for i, piece in enumerate(pieces):
        ids += ([image_token_id] if i else []) + piece[offset:]
    return ids


def reference_head_ids(tokenizer, image_token_id: int, voco_token_id: int) -> list[int]:
    """The reference layout's tokens before the first `<voco>` (BOS, one image token, the newline's
    tokens), as `tokenize_with_images` gives them: what `VoCoLlavaConfig.voco_head_ids` records."""
    ids = tokenize_with_images(IMAGE_PLACEHOLDER + "\n" + VOCO_PLACEHOLDER, tokenizer, image_token_id)
    if ids.count(voco_token_id) != 1:
        raise InputError(f"the tokenizer does not write {VOCO_PLACEHOLDER} as one token (id {voco_token_id})")
    return ids[: ids.index(voco_token_id)]


def _reference_rows(prompts: list[str], tokenizer, config, row_ks: list[list[int]]) -> list[list[int]]:
    """Prompts in the reference layout; each row's group must be the one `compress` runs."""
    rows = []
    for prompt, ks in zip(prompts, row_ks):
        ids = tokenize_with_images(reference_prompt(prompt, ks[0] if ks else 0), tokenizer, config.image_token_id)
        ids = expand_image_tokens(ids, config.image_token_id, config.num_vision_tokens, config.voco_token_id, 0)[0]
        group = config.group_ids(ks[0]) if ks else []
        if ids[: len(group)] != group:
            raise InputError(
                f"the tokenizer writes the image's head as {ids[: ids.index(config.voco_token_id)][-8:]}, "
                f"the model's voco_head_ids say {config.voco_head_ids}"
            )
        rows.append(ids)
    return rows


def encode_prompts(
    prompts: list[str], tokenizer, config, num_voco: int | list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Tokenise rendered prompts, expand their `<image>` placeholders, left-pad into a batch.
    `num_voco`: K for every image (None: the model's default), or a K per image over all prompts in
    order (caches of different K in one batch); each must be one the model was trained with.
    A model of the reference layout gets the reference code's prompts (`reference_prompt`)."""
    if config.voco_layout == "reference":
        counts = [prompt.count(IMAGE_PLACEHOLDER) for prompt in prompts]
    else:
        token_ids = [tokenizer(prompt, add_special_tokens=True).input_ids for prompt in prompts]
        counts = [ids.count(config.image_token_id) for ids in token_ids]
    if isinstance(num_voco, list):
        if len(num_voco) != sum(counts):
            raise InputError(f"the prompts hold {sum(counts)} images but {len(num_voco)} were given a K")
        ks = [config.accepted_num_voco(k) for k in num_voco]
        starts = [sum(counts[:i]) for i in range(len(counts))]
        row_ks = [ks[start : start + count] for start, count in zip(starts, counts)]
    else:
        row_ks = [[config.accepted_num_voco(num_voco)] * count for count in counts]
    if config.voco_layout == "reference":
        rows = _reference_rows(prompts, tokenizer, config, row_ks)
    else:
        rows = [
            expand_image_tokens(ids, config.image_token_id, config.num_vision_tokens, config.voco_token_id, k)[0]
            for ids, k in zip(token_ids, row_ks)
        ]
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, length - len(r) :] = torch.tensor(r)
        attention_mask[i, length - len(r) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def place_images(question: str, num_images: int) -> str:
    """The one rule for where images go in a question. `<video>` becomes one `<image>` per frame;
    a question that already holds `num_images` placeholders is kept; otherwise its placeholders
    are dropped and `num_images` of them open it (LLaVA's `<image>\\n{question}`). 0 images: the
    question with every placeholder removed."""
    if num_images == 0:
        return question.replace(VIDEO_PLACEHOLDER, "").replace(IMAGE_PLACEHOLDER, "").strip()
    if VIDEO_PLACEHOLDER in question:
        return question.replace(VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER * num_images)
    if question.count(IMAGE_PLACEHOLDER) == num_images:
        return question
    return IMAGE_PLACEHOLDER * num_images + "\n" + question.replace(IMAGE_PLACEHOLDER, "").strip()


def question_prompt(
    question: str,
    template: str = "vicuna_v1",
    num_images: int | None = 1,
    history: list[tuple[str, str]] | None = None,
) -> str:
    """LLaVA's evaluation prompt: the question with its images placed (`place_images`) in the
    conversation template; `num_images=None` keeps the placeholders the text has. With `history`
    (earlier (question, answer) turns), the images go in the first turn."""
    turns = [*(history or []), (question, None)]
    if num_images is not None:
        turns[0] = (place_images(turns[0][0], num_images), turns[0][1])
    return get_template(template).render(turns)[0]
