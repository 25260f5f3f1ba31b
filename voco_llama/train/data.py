"""Training data for VoCo visual instruction tuning (LLaVA-1.5 instruction JSON).

A data file is a JSON list of records `{"id", "image"?, "conversations": [{"from", "value"}, ...]}`
(the llava_v1_5_mix665k schema). One record becomes one training row:

1. normalise (`normalize_record`): a first turn that is not human is dropped (as LLaVA does), roles
   must then alternate human/gpt, a trailing unanswered human turn is dropped, no turn may be empty;
   every `<image>` tag must sit in the first human turn, at its start or its end, and is moved to
   the start as `"<image>\\n" + text` (LLaVA); the number of tags equals the number of images
   (`"image"` is one path or a list of paths, relative to `image_folder`).
   A video record (Video-ChatGPT / VideoInstruct style) has `"video"` instead of `"image"` (a video
   file or a folder of frame images, one path or a list, relative to `video_folder`, by default
   `image_folder`) and one `<video>` tag per video, placed like `<image>`. Each video gives
   `num_frames` uniformly sampled frames (`video.read_video`; fewer if it is shorter), and its tag
   becomes one `<image>` per frame, so every frame is its own compression group and the rest of the
   pipeline is the same as for several images.
2. encode (`RecordEncoder`): render with a conversation template, tokenise the whole text once with
   the fast tokenizer, label only tokens overlapping the template's supervised character spans (the
   assistant answers and their closing `</s>`), then expand each `<image>` into its compression group
   (N image tokens + K `<voco>` tokens, all labelled -100).
3. truncate to `model_max_length`, only after the last compression group and only if a supervised
   token survives; otherwise the record is bad.

Any record failing a step is a `BadRecord` with a reason. `check_data` (and `voco data check`) lists
them all; `VoCoInstructionDataset` refuses bad data unless `skip_bad=True`, in which case it drops
and counts them. Nothing with broken label bookkeeping is ever trained silently.

The dataset is lazy: records are validated (and their exact token lengths taken) once at
construction, but images are loaded and text re-tokenised only in `__getitem__`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import Dataset

from ..core.conversation import IMAGE_PLACEHOLDER, TEMPLATES, VIDEO_PLACEHOLDER, VOCO_PLACEHOLDER, get_template
from ..core.errors import InputError, positive_int
from ..core.processing import (
    ASPECT_RATIOS,
    IMAGE_SUFFIXES,
    expand_image_tokens,
    load_image,
    process_images,
    reference_prompt,
)
from ..core.video import read_video, sample_indices

IGNORE_INDEX = -100
HUMAN, GPT = "human", "gpt"
# Reasons a record is bad (the key is stable, the message says what exactly is wrong).
REASONS = {
    "malformed": "malformed record",
    "missing_image": "missing image",
    "unreadable_image": "unreadable image",
    "roles": "roles not alternating",
    "no_answer": "no assistant turn",
    "empty_turn": "empty turn",
    "image_count": "<image> count does not match images",
    "image_position": "<image> not at the start or end of the first human turn",
    "missing_video": "missing video",
    "unreadable_video": "unreadable video",
    "video_count": "<video> count does not match videos",
    "video_frames": "bad video frame count",
    "reserved_token": "text contains the reserved <voco> token",
    "too_long": "over-long record",
    "no_supervision": "no supervised tokens",
}


class BadRecordError(ValueError):
    """Raised while normalising/encoding one record; `reason` is a key of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{REASONS[reason]}: {detail}" if detail else REASONS[reason])
        self.reason = reason
        self.detail = detail


@dataclass
class BadRecord:
    index: int  # position in the JSON list
    id: str
    reason: str  # a key of REASONS
    message: str

    def __str__(self) -> str:
        return f"{self.id}: {self.message}"


@dataclass
class DataReport:
    data_path: str
    total: int = 0
    image_records: int = 0  # good records with images
    text_records: int = 0  # good text-only records
    video_records: int = 0  # good records with videos
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def good(self) -> int:
        return self.total - len(self.bad)

    @property
    def counts(self) -> dict[str, int]:
        """Bad records per reason."""
        return dict(Counter(b.reason for b in self.bad))

    def summary(self) -> str:
        counts = self.counts
        by_reason = ", ".join(f"{message}: {counts[r]}" for r, message in REASONS.items() if r in counts)
        line = (
            f"{self.data_path}: {self.total} records, {self.good} good "
            f"({self.image_records} with images, "
            + (f"{self.video_records} with videos, " if self.video_records else "")
            + f"{self.text_records} text-only), {len(self.bad)} bad"
        )
        return f"{line} ({by_reason})" if self.bad else line

    def lines(self) -> list[str]:
        return [str(b) for b in self.bad] + [self.summary()]


# ----------------------------------------------------------------------------------------------
# Reading and normalising records
# ----------------------------------------------------------------------------------------------


def load_records(data_path: str | Path) -> list[dict]:
    """The JSON list; a missing, unparseable or non-list file is an InputError naming the file."""
    try:
        with open(data_path, encoding="utf-8") as f:
            records = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{data_path}: data file not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{data_path}: not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{data_path}: unreadable ({err.__class__.__name__}: {err})") from None
    if not isinstance(records, list):
        raise InputError(f"{data_path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def record_id(record, index: int) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return f"#{index}"


def image_files(record: dict, key: str = "image") -> list[str]:
    """The record's image (or, with key="video", video) paths, in order (none for a text-only record)."""
    image = record.get(key)
    if image is None:
        return []
    images = [image] if isinstance(image, str) else image
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise BadRecordError("malformed", f'"{key}" must be a path or a list of paths, got {image!r}')
    return images


@dataclass(frozen=True)
class VideoFrame:
    """Frame `index` of the `count` frames sampled from `video`: one compression group."""

    video: str
    index: int
    count: int


def _frames_for_videos(turns: list[tuple[str, str]], videos: list[str], frame_counts) -> tuple[list, list[VideoFrame]]:
    """Replace the i-th `<video>` tag by one `<image>` per frame of videos[i] (counts from frame_counts)."""
    tags = sum(value.count(VIDEO_PLACEHOLDER) for _, value in turns)
    if tags != len(videos):
        raise BadRecordError("video_count", f"{tags} {VIDEO_PLACEHOLDER} tag(s), {len(videos)} video(s)")
    if not videos:
        return turns, []
    if frame_counts is None:
        raise ValueError("a video record needs the frame count of each video (frame_counts)")
    counts = []
    for video in videos:
        count = frame_counts[video]
        if isinstance(count, BadRecordError):  # missing, unreadable or empty video
            raise count
        counts.append(count)
    pending = iter(counts)
    out = []
    for role, value in turns:
        parts = value.split(VIDEO_PLACEHOLDER)
        out.append((role, parts[0] + "".join(IMAGE_PLACEHOLDER * next(pending) + p for p in parts[1:])))
    return out, [VideoFrame(v, k, n) for v, n in zip(videos, counts) for k in range(n)]


def _move_images_to_start(text: str) -> tuple[str, int] | None:
    """Strip the `<image>` tags heading or ending `text`, put them first as LLaVA does.

    Returns (new text, number of tags), or None if a tag sits elsewhere."""
    rest, n = text.strip(), 0
    while rest.startswith(IMAGE_PLACEHOLDER):
        rest, n = rest[len(IMAGE_PLACEHOLDER) :].lstrip(), n + 1
    while rest.endswith(IMAGE_PLACEHOLDER):
        rest, n = rest[: -len(IMAGE_PLACEHOLDER)].rstrip(), n + 1
    if IMAGE_PLACEHOLDER in rest:
        return None
    if n == 0:
        return text, 0
    # LLaVA, for one image: (IMAGE + "\n" + text.replace(IMAGE, "").strip()).strip()
    return "\n".join([IMAGE_PLACEHOLDER] * n + ([rest] if rest else [])), n


def normalize_record(record, frame_counts=None) -> tuple[list[tuple[str, str]], list]:
    """(turns as (question, answer) pairs, one image path or VideoFrame per compression group).

    `frame_counts` maps each video path to its number of sampled frames (or the BadRecordError that
    video raised when counted); it is needed only for video records. Raises BadRecordError."""
    if not isinstance(record, dict):
        raise BadRecordError("malformed", f"expected an object, got {type(record).__name__}")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not all(
        isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)
        for t in conversations
    ):
        raise BadRecordError("malformed", '"conversations" must be a list of {"from", "value"} strings')
    images, videos = image_files(record), image_files(record, "video")
    if images and videos:
        raise BadRecordError("malformed", 'a record has "image" or "video", not both')

    turns = [(t["from"], t["value"]) for t in conversations]
    if turns and turns[0][0] != HUMAN:  # LLaVA drops a leading non-human turn
        turns = turns[1:]
    for i, (role, _) in enumerate(turns):
        expected = HUMAN if i % 2 == 0 else GPT
        if role != expected:
            raise BadRecordError("roles", f"turn {i + 1} is {role!r}, expected {expected!r}")
    if len(turns) % 2:  # a trailing question without an answer teaches nothing: drop it
        turns = turns[:-1]
    if not turns:
        raise BadRecordError("no_answer")
    turns, frames = _frames_for_videos(turns, videos, frame_counts)
    images = images or frames

    for i, (role, value) in enumerate(turns):
        if IMAGE_PLACEHOLDER in value and i > 0:
            raise BadRecordError("image_position", f"{IMAGE_PLACEHOLDER} in turn {i + 1} ({role})")
        if not value.replace(IMAGE_PLACEHOLDER, "").strip() and not (i == 0 and IMAGE_PLACEHOLDER in value):
            raise BadRecordError("empty_turn", f"turn {i + 1} ({role}) is empty")
        if VOCO_PLACEHOLDER in value:
            raise BadRecordError("reserved_token", f"turn {i + 1} ({role})")

    moved = _move_images_to_start(turns[0][1])
    if moved is None:
        raise BadRecordError("image_position")
    first, n_tags = moved
    if n_tags != len(images):
        raise BadRecordError("image_count", f"{n_tags} {IMAGE_PLACEHOLDER} tag(s), {len(images)} image(s)")
    values = [first] + [v for _, v in turns[1:]]
    return list(zip(values[0::2], values[1::2])), images


# ----------------------------------------------------------------------------------------------
# Tokenising, labelling, expanding, truncating
# ----------------------------------------------------------------------------------------------


def _supervised_labels(ids: list[int], offsets, spans: list[tuple[int, int]]) -> list[int]:
    """Labels: the token id where the token's characters overlap a supervised span, else -100.

    Zero-width tokens (BOS) are never supervised. A byte-level token that carries the space
    before an answer ("Ġa1") overlaps the answer and is supervised, like Llama's "▁a1" in LLaVA."""
    labels, j = [IGNORE_INDEX] * len(ids), 0
    for i, (start, end) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j == len(spans):
            break
        if start < end and start < spans[j][1] and end > spans[j][0]:
            labels[i] = ids[i]
    return labels


@dataclass
class Encoded:
    """A checked record before expansion: one image token per image, and the final length."""

    text_ids: list[int]
    text_labels: list[int]
    images: list  # an image path or a VideoFrame per group
    length: int  # after expanding every image into its group and truncating


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    images: list  # an image path or a VideoFrame per group


class RecordEncoder:
    """Record -> token ids, labels and image paths, with every bookkeeping check on the way.

    `check` does the work that can fail (render, tokenise, label, measure) without building the
    expanded sequence, so validating a whole file is cheap; `encode` then expands and truncates."""

    def __init__(self, tokenizer, config, template: str = "vicuna_v1", model_max_length: int = 2048):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("a fast tokenizer is needed (labels come from its offset mapping)")
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.model_max_length = model_max_length
        self.image_token_id = config.image_token_id
        self.voco_token_id = config.voco_token_id
        self.num_voco = config.num_voco
        self.num_vision = config.num_vision_tokens
        # the reference code's layout (core/attention.py): its prompts, its VoCo tokens written in the text
        self.reference = getattr(config, "voco_layout", "llava") == "reference"
        if self.reference and template != "vicuna_v1":
            raise ValueError(f"the reference layout trains with its vicuna_v1 template, not {template!r}")
        for token, expected in ((IMAGE_PLACEHOLDER, self.image_token_id), (VOCO_PLACEHOLDER, self.voco_token_id)):
            got = tokenizer.convert_tokens_to_ids(token)
            if got != expected:
                raise ValueError(f"the tokenizer maps {token} to id {got} but the model config says {expected}")

    def render(self, record, frame_counts=None, num_voco: int | None = None) -> tuple[str, list[tuple[int, int]], list]:
        turns, images = normalize_record(record, frame_counts)
        if not self.reference:
            text, spans = self.template.render(turns)
            return text, spans, images
        if len(images) > 1:
            raise BadRecordError("image_count", f"{len(images)} images; the reference layout takes one per record")
        if images:  # newlines go (llava/train/train_compress.py preprocess_v1); answers' too, before the spans
            turns = [(q.replace("\n", ""), a.replace("\n", "")) for q, a in turns]
        text, spans = self.template.render(turns)
        ref = reference_prompt(text, self.num_voco if num_voco is None else num_voco)
        # everything reference_prompt changes lies before the first answer: the spans move as one
        shift = len(ref) - len(text)
        spans = [(start + shift, end + shift) for start, end in spans]
        assert [ref[a:b] for a, b in spans] == [text[a - shift : b - shift] for a, b in spans]
        return ref, spans, images

    def encode(self, record, frame_counts=None, num_voco: int | None = None) -> Sample:
        """The training row: every image expanded into its group (K = num_voco, by default the
        model's), cut to model_max_length."""
        k = self.num_voco if num_voco is None else num_voco
        checked = self.check(record, frame_counts, k)
        ids, labels = expand_image_tokens(
            checked.text_ids,
            self.image_token_id,
            self.num_vision,
            self.voco_token_id,
            0 if self.reference else k,  # the reference layout writes its VoCo tokens in the text
            checked.text_labels,
        )
        return Sample(ids[: checked.length], labels[: checked.length], checked.images)

    def check(self, record, frame_counts=None, num_voco: int | None = None) -> Encoded:
        """Render, tokenise, label and measure one record (at K = num_voco); raises BadRecordError."""
        [result] = self.check_many([record], frame_counts, None if num_voco is None else [num_voco])
        if isinstance(result, BadRecordError):
            raise result
        return result

    def check_many(
        self, records: list, frame_counts=None, num_vocos: list[int] | None = None
    ) -> list[Encoded | BadRecordError]:
        """`check` over many records, tokenised in one batch (the fast tokenizer's parallel path);
        `num_vocos`: each record's K (default: the model's for all)."""
        ks = iter(num_vocos if num_vocos is not None else [self.num_voco] * len(records))
        out: list[Encoded | BadRecordError] = []
        ks = list(ks)
        rendered = []
        for record, k in zip(records, ks):
            try:
                rendered.append(self.render(record, frame_counts, k))
            except BadRecordError as err:
                rendered.append(err)
        ks = iter(ks)
        texts = [self._tokenized_text(r[0]) for r in rendered if not isinstance(r, BadRecordError)]
        enc = self.tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True) if texts else None
        tokenised = iter(zip(enc["input_ids"], enc["offset_mapping"])) if texts else iter(())
        for r in rendered:
            k = next(ks)
            if isinstance(r, BadRecordError):
                out.append(r)
                continue
            ids, offsets = next(tokenised)
            try:
                if self.reference and r[0].startswith(IMAGE_PLACEHOLDER):
                    ids, offsets, spans = self._image_first(ids, offsets, r[1])
                    out.append(self._finish(ids, offsets, spans, r[2], k))
                    continue
                out.append(self._finish(ids, offsets, r[1], r[2], k))
            except BadRecordError as err:
                out.append(err)
        return out

    def _tokenized_text(self, text: str) -> str:
        """What the tokenizer reads: the reference layout's leading `<image>` is not text
        (core/processing.py `tokenize_with_images`: the piece after it is tokenised on its own)."""
        return text[len(IMAGE_PLACEHOLDER) :] if self.reference and text.startswith(IMAGE_PLACEHOLDER) else text

    def _image_first(self, ids, offsets, spans):
        """The piece after the leading `<image>`, tokenised alone, behind BOS and one image token, as
        `tokenize_with_images` writes it; offsets and spans in the piece's characters."""
        bos = self.tokenizer.bos_token_id
        head = [bos] if ids and ids[0] == bos else []
        ids = [*head, self.image_token_id, *ids[len(head) :]]
        offsets = [(0, 0)] * (len(head) + 1) + list(offsets[len(head) :])
        cut = len(IMAGE_PLACEHOLDER)
        return ids, offsets, [(start - cut, end - cut) for start, end in spans]

    def _finish(self, ids, offsets, spans, images, num_voco: int) -> Encoded:
        ids = list(ids)
        labels = _supervised_labels(ids, offsets, spans)
        image_positions = [i for i, token in enumerate(ids) if token == self.image_token_id]
        if len(image_positions) != len(images):  # e.g. the `plain` template renders one <image> per turn
            raise BadRecordError(
                "image_count", f"rendered prompt has {len(image_positions)} image token(s) for {len(images)} image(s)"
            )
        if ids.count(self.voco_token_id) != (num_voco if self.reference and images else 0):
            raise BadRecordError("reserved_token")
        first_answer = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
        if first_answer is None:
            raise BadRecordError("no_supervision")
        last_voco = len(ids) - 1 - ids[::-1].index(self.voco_token_id) if self.reference and images else None
        return Encoded(ids, labels, images, self._length(len(ids), image_positions, first_answer, num_voco, last_voco))

    def _length(
        self, n_text: int, image_positions: list[int], first_answer: int, num_voco: int, last_voco: int | None = None
    ) -> int:
        """Length after expansion and truncation, computed on the unexpanded tokens.

        Truncation to model_max_length may only cut after the last compression group and must
        keep at least one supervised token; otherwise the record is bad."""
        # tokens each image token grows by (the reference layout's VoCo tokens are in the text already)
        extra = self.num_vision + (0 if self.reference else num_voco) - 1
        expanded = lambda i: i + extra * sum(p < i for p in image_positions)  # position of token i
        full, limit = n_text + extra * len(image_positions), self.model_max_length
        if full <= limit:
            return full
        if last_voco is not None:  # the reference layout's group ends at its last VoCo token
            last_group_end = expanded(last_voco) + 1
        else:
            last_group_end = expanded(image_positions[-1]) + extra + 1 if image_positions else 0
        if last_group_end >= limit:
            raise BadRecordError(
                "too_long",
                f"{full} tokens > model_max_length {limit}; a cut would fall inside a compression group "
                f"(the last one ends at token {last_group_end})",
            )
        if expanded(first_answer) >= limit:
            raise BadRecordError(
                "no_supervision", f"{full} tokens > model_max_length {limit} and no answer token is left"
            )
        return limit


# ----------------------------------------------------------------------------------------------
# Validation, shared by the dataset and `voco data check`
# ----------------------------------------------------------------------------------------------


def _image_problem(folder: Path, relative: str, open_images: bool) -> BadRecordError | None:
    path = folder / relative
    if not path.is_file():
        return BadRecordError("missing_image", relative)
    if open_images:
        try:
            load_image(path)
        except InputError as err:  # "<path>: unreadable image (<cause>)"
            return BadRecordError("unreadable_image", f"{relative} {str(err).rpartition(': unreadable image ')[2]}")
    return None


def _frame_total(path: Path) -> int:
    """Frames in a folder of frame images, or in a video file as its header says (else by packets)."""
    if path.is_dir():
        return sum(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)


def _video_problem(folder: Path, relative: str, num_frames: int | None, open_videos: bool) -> int | BadRecordError:
    """The number of frames the video gives (sampled as training samples them), or what is wrong.

    The count is taken cheaply (files in the folder, the file's header); with open_videos the
    sampled frames are also decoded with the same `read_video` training uses, and must be as many."""
    path = folder / relative
    if not path.exists():
        return BadRecordError("missing_video", relative)
    try:
        total = _frame_total(path)
    except Exception as err:  # PyAV raises many kinds of error on a broken file
        return BadRecordError("unreadable_video", f"{relative} ({err.__class__.__name__}: {err})")
    if total == 0:
        return BadRecordError("video_frames", f"{relative} has no frames")
    count = len(sample_indices(total, num_frames))
    if open_videos:
        try:
            got = len(read_video(path, num_frames))
        except InputError as err:  # "<path>: <what>"
            return BadRecordError("unreadable_video", f"{relative}: {str(err).removeprefix(f'{path}: ')}")
        if got != count:
            return BadRecordError("video_frames", f"{relative} decodes to {got} sampled frame(s), header: {count}")
    return count


@dataclass
class RecordInfo:
    """What validation keeps of a good record (not its tokens: 665k of those would not fit)."""

    images: list  # an image path or a VideoFrame per group
    length: int

    @property
    def has_image(self) -> bool:
        return bool(self.images)

    @property
    def has_video(self) -> bool:
        return any(isinstance(m, VideoFrame) for m in self.images)


def scan_records(
    records: list,
    encoder: RecordEncoder,
    image_folder: str | Path | None,
    open_images: bool = False,
    num_workers: int = 8,
    chunk_size: int = 1024,
    video_folder: str | Path | None = None,
    num_frames: int | None = 8,
    num_vocos: list[int] | None = None,
) -> tuple[list[RecordInfo | None], list[BadRecord]]:
    """Check every record: (RecordInfo, or None if bad, per record; the bad records).

    Images are checked for existence, or, with open_images, actually opened and decoded with
    the same `load_image` training uses (in a thread pool: decoding 665k images takes a while).
    Videos (relative to video_folder, by default image_folder) are counted first, since their
    frame counts decide the records' lengths; with open_images their frames are decoded too.
    `num_vocos`: each record's K (default: the encoder's for all)."""
    folder = Path(image_folder) if image_folder is not None else Path()
    video_root = Path(video_folder) if video_folder is not None else folder
    videos = set()
    for record in records:
        try:
            videos.update(image_files(record, "video") if isinstance(record, dict) else [])
        except BadRecordError:
            pass  # reported as malformed when the record is checked
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        videos = sorted(videos)
        counted = pool.map(lambda v: _video_problem(video_root, v, num_frames, open_images), videos)
        frame_counts = dict(zip(videos, counted))

    results: list[RecordInfo | BadRecordError] = []
    for begin in range(0, len(records), chunk_size):
        ks = num_vocos[begin : begin + chunk_size] if num_vocos is not None else None
        for r in encoder.check_many(records[begin : begin + chunk_size], frame_counts, ks):
            results.append(r if isinstance(r, BadRecordError) else RecordInfo(r.images, r.length))

    paths = sorted({p for r in results if isinstance(r, RecordInfo) for p in r.images if isinstance(p, str)})
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        problems = dict(zip(paths, pool.map(lambda p: _image_problem(folder, p, open_images), paths)))

    infos: list[RecordInfo | None] = []
    bad: list[BadRecord] = []
    for index, (record, result) in enumerate(zip(records, results)):
        if isinstance(result, RecordInfo):
            found = (problems[p] for p in result.images if isinstance(p, str) and problems[p] is not None)
            result = next(found, result)
        if isinstance(result, BadRecordError):
            bad.append(BadRecord(index, record_id(record, index), result.reason, str(result)))
            infos.append(None)
        else:
            infos.append(result)
    return infos, bad


def check_data(
    data_path: str | Path,
    image_folder: str | Path | None,
    tokenizer,
    config,
    template: str = "vicuna_v1",
    model_max_length: int = 2048,
    image_aspect_ratio: str = "pad",
    num_workers: int = 8,
    video_folder: str | Path | None = None,
    num_frames: int | None = 8,
) -> DataReport:
    """Validate a data file as training would read it, opening every image and video; see DataReport."""
    if image_aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown image_aspect_ratio {image_aspect_ratio!r}; expected one of {ASPECT_RATIOS}")
    records = load_records(data_path)
    encoder = RecordEncoder(tokenizer, config, template, model_max_length)
    infos, bad = scan_records(
        records,
        encoder,
        image_folder,
        open_images=True,
        num_workers=num_workers,
        video_folder=video_folder,
        num_frames=num_frames,
    )
    good = [info for info in infos if info is not None]
    n_image, n_video = sum(e.has_image and not e.has_video for e in good), sum(e.has_video for e in good)
    return DataReport(str(data_path), len(records), n_image, len(good) - n_image - n_video, n_video, bad)


# ----------------------------------------------------------------------------------------------
# Dataset and collator
# ----------------------------------------------------------------------------------------------


def draw_num_voco(choices: list[int], count: int, seed: int) -> list[int]:
    """K for each of `count` records, drawn uniformly from `choices` (a model trained with several K,
    `voco train --num_voco_choices`): record i always gets the i-th draw of a generator seeded
    with `seed`, so a run, its resume and a rerun with the same seed train each record at the same K."""
    generator = torch.Generator().manual_seed(seed)
    return [choices[i] for i in torch.randint(len(choices), (count,), generator=generator).tolist()]


class VoCoInstructionDataset(Dataset):
    """Lazy supervised dataset over a LLaVA instruction JSON file.

    Item: {"input_ids": LongTensor[L], "labels": LongTensor[L],
           "pixel_values": FloatTensor[n_images, 3, H, W] or None (text-only record)}.
    A video record has one row per sampled frame (`num_frames`, uniform, from `video_folder`).
    A model with `num_voco_choices` (trained for several K) gets each record at its own K
    (`draw_num_voco` from `seed`; all the frames or images of a record share it).
    Bad records raise a ValueError at construction, or with skip_bad=True are dropped and listed
    in `bad_records` (counts per reason in `bad_counts`). Images are only checked to exist here
    (open_images=True decodes each one, as `check_data` does, which is slow on 665k images); one
    that fails to load later raises an InputError naming the record, never skipped silently."""

    def __init__(
        self,
        data_path: str | Path,
        tokenizer,
        image_processor,
        config,
        image_folder: str | Path | None = None,
        template: str = "vicuna_v1",
        model_max_length: int = 2048,
        image_aspect_ratio: str = "pad",
        skip_bad: bool = False,
        open_images: bool = False,
        video_folder: str | Path | None = None,
        num_frames: int | None = 8,
        seed: int = 0,
    ):
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"unknown image_aspect_ratio {image_aspect_ratio!r}; expected one of {ASPECT_RATIOS}")
        self.data_path = str(data_path)
        self.image_folder = Path(image_folder) if image_folder is not None else Path()
        self.video_folder = Path(video_folder) if video_folder is not None else self.image_folder
        self.num_frames = num_frames
        self.image_processor = image_processor
        self.image_aspect_ratio = image_aspect_ratio
        self.encoder = RecordEncoder(tokenizer, config, template, model_max_length)

        records = load_records(data_path)
        choices = getattr(config, "num_voco_choices", None)
        # each record's K, by its place in the file: the same whatever is skipped, in every epoch and resume
        record_ks = draw_num_voco(choices, len(records), seed) if choices else [self.encoder.num_voco] * len(records)
        infos, bad = scan_records(
            records,
            self.encoder,
            image_folder,
            open_images=open_images,
            video_folder=self.video_folder,
            num_frames=num_frames,
            num_vocos=record_ks,
        )
        if bad and not skip_bad:
            first = "; ".join(str(b) for b in bad[:5])
            raise ValueError(
                f"{self.data_path}: {len(bad)} bad record(s) of {len(records)} (first: {first}); "
                "run `voco data check` for the full list, or pass skip_bad=True to drop them"
            )
        keep = [i for i, info in enumerate(infos) if info is not None]
        if not keep:
            raise ValueError(f"{self.data_path}: no good record among {len(records)}")
        self.records = [records[i] for i in keep]
        self.ids = [record_id(records[i], i) for i in keep]
        self.num_vocos = [record_ks[i] for i in keep]  # K of each kept record
        self._lengths = [infos[i].length for i in keep]
        self._has_image = [infos[i].has_image for i in keep]
        # frames per video, as validated: the records' token counts were measured with them
        self.frame_counts = {m.video: m.count for i in keep for m in infos[i].images if isinstance(m, VideoFrame)}
        self.bad_records: list[BadRecord] = bad
        self.bad_counts: dict[str, int] = dict(Counter(b.reason for b in bad))
        self.num_records = len(records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Exact token count per record (vision and VoCo tokens included, after truncation)."""
        return list(self._lengths)

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's convention for its modality-grouped sampler: +length with images, -length without."""
        return [n if img else -n for n, img in zip(self._lengths, self._has_image)]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | None]:
        record = self.records[i]
        # checked at construction with its K: cannot fail now
        sample = self.encoder.encode(record, self.frame_counts, self.num_vocos[i])
        pixel_values = None
        if sample.images:
            try:
                images = self._load(sample.images)
            except InputError as err:
                raise InputError(f"record {self.ids[i]}: {err}") from None
            pixel_values = process_images(images, self.image_processor, self.image_aspect_ratio)
        return {
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }

    def _load(self, groups: list) -> list:
        """One RGB image per group: image files, or the sampled frames of each video (read once)."""
        videos = {}
        for m in groups:
            if isinstance(m, VideoFrame) and m.video not in videos:
                frames = read_video(self.video_folder / m.video, self.num_frames)
                if len(frames) != m.count:
                    raise InputError(f"{m.video}: {len(frames)} frames decoded, {m.count} counted when checked")
                videos[m.video] = frames
        return [
            videos[m.video][m.index] if isinstance(m, VideoFrame) else load_image(self.image_folder / m) for m in groups
        ]


class VoCoDataCollator:
    """Pad a list of dataset items into a batch.

    input_ids padded with pad_token_id, attention_mask 1 on real tokens, labels padded with -100,
    pixel_values = every image of the batch concatenated in row order (key absent if none)."""

    def __init__(self, pad_token_id: int, padding_side: str = "right"):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            cols = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            input_ids[row, cols] = item["input_ids"]
            labels[row, cols] = item["labels"]
            attention_mask[row, cols] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        images = [item["pixel_values"] for item in items if item.get("pixel_values") is not None]
        if images:
            batch["pixel_values"] = torch.cat(images, dim=0)
        return batch


# ----------------------------------------------------------------------------------------------
# `voco data check`
# ----------------------------------------------------------------------------------------------


def load_model_data_config(model_dir: str | Path, num_voco: int | None = None):
    """The model's config (token ids, K, tokens per image), read from a saved model directory."""
    from ..core.modeling import VoCoLlavaConfig

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise InputError(f"{path}: not found (is {model_dir} a saved model directory?)")
    try:
        config = VoCoLlavaConfig.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"{path}: not a VoCo model config ({err})") from None
    if num_voco is not None:
        config.num_voco = num_voco
    return config


def _tokenizer_data_config(tokenizer, num_voco: int | None, num_vision_tokens: int) -> SimpleNamespace:
    """Without a model: ids from the tokenizer (adding `<image>`/`<voco>` if it lacks them)."""
    missing = [t for t in (IMAGE_PLACEHOLDER, VOCO_PLACEHOLDER) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return SimpleNamespace(
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER),
        voco_token_id=tokenizer.convert_tokens_to_ids(VOCO_PLACEHOLDER),
        num_voco=num_voco if num_voco is not None else 1,
        num_vision_tokens=num_vision_tokens,
    )


def _run_check(args: argparse.Namespace) -> int:
    from ..core.presets import load_tokenizer  # (with the model classes registered: no "model of type" warning)

    try:
        if not Path(args.image_folder).is_dir():
            raise InputError(f"{args.image_folder}: image folder not found")
        if args.video_folder is not None and not Path(args.video_folder).is_dir():
            raise InputError(f"{args.video_folder}: video folder not found")
        source = args.model or args.tokenizer
        if not Path(source).is_dir():
            raise InputError(f"{source}: directory not found")
        tokenizer = load_tokenizer(Path(source))
        if args.model:
            config = load_model_data_config(args.model, args.num_voco)
        else:
            config = _tokenizer_data_config(tokenizer, args.num_voco, args.num_vision_tokens)
        report = check_data(
            args.data_path,
            args.image_folder,
            tokenizer,
            config,
            args.version,
            args.model_max_length,
            args.image_aspect_ratio,
            args.num_workers,
            args.video_folder,
            args.num_frames,
        )
    except InputError:
        raise
    except ValueError as err:  # unusable settings, not bad records
        raise InputError(str(err)) from None
    for line in report.lines():
        print(line)
    return 1 if report.bad else 0


def register_cli(subparsers) -> None:
    """Add `voco data check` to the top-level subparsers; the handler is `args.func(args) -> exit code`."""
    data = subparsers.add_parser("data", help="training data tools")
    commands = data.add_subparsers(dest="data_command", required=True)
    check = commands.add_parser(
        "check",
        help="validate an instruction JSON file as training would read it",
        description="Print one line per bad record (`<id>: <reason>`) and totals. "
        "Exit 0 if all records are good, 1 if any is bad, 2 if the input is unusable.",
    )
    check.add_argument("--data_path", required=True, help="LLaVA instruction JSON (a list of records)")
    check.add_argument("--image_folder", required=True, help="folder the records' image paths are relative to")
    check.add_argument(
        "--video_folder", default=None, help="folder the records' video paths are relative to (default: --image_folder)"
    )
    check.add_argument("--num_frames", type=positive_int, default=8, help="frames sampled uniformly per video")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="saved VoCo model directory (tokenizer + config.json)")
    source.add_argument("--tokenizer", help="tokenizer directory, when there is no model yet")
    check.add_argument(
        "--num_voco", type=positive_int, default=None, help="K VoCo tokens per image (default: model's, else 1)"
    )
    check.add_argument("--num_vision_tokens", type=positive_int, default=576, help="N per image with --tokenizer")
    check.add_argument("--version", default="vicuna_v1", choices=sorted(TEMPLATES), help="conversation template")
    check.add_argument("--model_max_length", type=positive_int, default=2048)
    check.add_argument("--image_aspect_ratio", default="pad", choices=ASPECT_RATIOS)
    check.add_argument(
        "--num_workers", type=positive_int, default=min(8, os.cpu_count() or 1), help="image-checking threads"
    )
    check.set_defaults(func=_run_check)
