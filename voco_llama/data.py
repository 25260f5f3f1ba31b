"""Training data for VoCo visual instruction tuning (LLaVA-1.5 instruction JSON).

A data file is a JSON list of records `{"id", "image"?, "conversations": [{"from", "value"}, ...]}`
(the llava_v1_5_mix665k schema). One record becomes one training row:

1. normalise (`normalize_record`): a first turn that is not human is dropped (as LLaVA does), roles
   must then alternate human/gpt, a trailing unanswered human turn is dropped, no turn may be empty;
   every `<image>` tag must sit in the first human turn, at its start or its end, and is moved to
   the start as `"<image>\\n" + text` (LLaVA); the number of tags equals the number of images
   (`"image"` is one path or a list of paths, relative to `image_folder`).
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
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import Dataset

from .conversation import IMAGE_PLACEHOLDER, TEMPLATES, get_template
from .processing import ASPECT_RATIOS, InputError, expand_image_tokens, load_image, process_images

IGNORE_INDEX = -100
VOCO_PLACEHOLDER = "<voco>"
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
            f"({self.image_records} with images, {self.text_records} text-only), {len(self.bad)} bad"
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


def image_files(record: dict) -> list[str]:
    """The record's image paths, in order (none for a text-only record)."""
    image = record.get("image")
    if image is None:
        return []
    images = [image] if isinstance(image, str) else image
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise BadRecordError("malformed", f'"image" must be a path or a list of paths, got {image!r}')
    return images


def _move_images_to_start(text: str) -> tuple[str, int] | None:
    """Strip the `<image>` tags heading or ending `text`, put them first as LLaVA does.

    Returns (new text, number of tags), or None if a tag sits elsewhere."""
    rest, n = text.strip(), 0
    while rest.startswith(IMAGE_PLACEHOLDER):
        rest, n = rest[len(IMAGE_PLACEHOLDER):].lstrip(), n + 1
    while rest.endswith(IMAGE_PLACEHOLDER):
        rest, n = rest[: -len(IMAGE_PLACEHOLDER)].rstrip(), n + 1
    if IMAGE_PLACEHOLDER in rest:
        return None
    if n == 0:
        return text, 0
    # LLaVA, for one image: (IMAGE + "\n" + text.replace(IMAGE, "").strip()).strip()
    return "\n".join([IMAGE_PLACEHOLDER] * n + ([rest] if rest else [])), n


def normalize_record(record) -> tuple[list[tuple[str, str]], list[str]]:
    """(turns as (question, answer) pairs, image paths); raises BadRecordError."""
    if not isinstance(record, dict):
        raise BadRecordError("malformed", f"expected an object, got {type(record).__name__}")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not all(
        isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)
        for t in conversations
    ):
        raise BadRecordError("malformed", '"conversations" must be a list of {"from", "value"} strings')
    images = image_files(record)

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
    images: list[str]
    length: int  # after expanding every image into its group and truncating


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    images: list[str]


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
        for token, expected in ((IMAGE_PLACEHOLDER, self.image_token_id), (VOCO_PLACEHOLDER, self.voco_token_id)):
            got = tokenizer.convert_tokens_to_ids(token)
            if got != expected:
                raise ValueError(f"the tokenizer maps {token} to id {got} but the model config says {expected}")

    def render(self, record) -> tuple[str, list[tuple[int, int]], list[str]]:
        turns, images = normalize_record(record)
        text, spans = self.template.render(turns)
        return text, spans, images

    def encode(self, record) -> Sample:
        """The training row: every image expanded into its group, cut to model_max_length."""
        checked = self.check(record)
        ids, labels = expand_image_tokens(
            checked.text_ids, self.image_token_id, self.num_vision, self.voco_token_id, self.num_voco,
            checked.text_labels,
        )
        return Sample(ids[: checked.length], labels[: checked.length], checked.images)

    def check(self, record) -> Encoded:
        """Render, tokenise, label and measure one record; raises BadRecordError."""
        [result] = self.check_many([record])
        if isinstance(result, BadRecordError):
            raise result
        return result

    def check_many(self, records: list) -> list[Encoded | BadRecordError]:
        """`check` over many records, tokenised in one batch (the fast tokenizer's parallel path)."""
        out: list[Encoded | BadRecordError] = []
        rendered = []
        for record in records:
            try:
                rendered.append(self.render(record))
            except BadRecordError as err:
                rendered.append(err)
        texts = [r[0] for r in rendered if not isinstance(r, BadRecordError)]
        enc = self.tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True) if texts else None
        tokenised = iter(zip(enc["input_ids"], enc["offset_mapping"])) if texts else iter(())
        for r in rendered:
            if isinstance(r, BadRecordError):
                out.append(r)
                continue
            ids, offsets = next(tokenised)
            try:
                out.append(self._finish(ids, offsets, r[1], r[2]))
            except BadRecordError as err:
                out.append(err)
        return out

    def _finish(self, ids, offsets, spans, images) -> Encoded:
        ids = list(ids)
        labels = _supervised_labels(ids, offsets, spans)
        image_positions = [i for i, token in enumerate(ids) if token == self.image_token_id]
        if len(image_positions) != len(images):  # e.g. the `plain` template renders one <image> per turn
            raise BadRecordError(
                "image_count", f"rendered prompt has {len(image_positions)} image token(s) for {len(images)} image(s)"
            )
        if self.voco_token_id in ids:
            raise BadRecordError("reserved_token")
        first_answer = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
        if first_answer is None:
            raise BadRecordError("no_supervision")
        return Encoded(ids, labels, images, self._length(len(ids), image_positions, first_answer))

    def _length(self, n_text: int, image_positions: list[int], first_answer: int) -> int:
        """Length after expansion and truncation, computed on the unexpanded tokens.

        Truncation to model_max_length may only cut after the last compression group and must
        keep at least one supervised token; otherwise the record is bad."""
        extra = self.num_vision + self.num_voco - 1  # tokens each image token grows by
        expanded = lambda i: i + extra * sum(p < i for p in image_positions)  # noqa: E731  (position of token i)
        full, limit = n_text + extra * len(image_positions), self.model_max_length
        if full <= limit:
            return full
        last_group_end = expanded(image_positions[-1]) + extra + 1 if image_positions else 0
        if last_group_end >= limit:
            raise BadRecordError(
                "too_long",
                f"{full} tokens > model_max_length {limit}; a cut would fall inside a compression group "
                f"(the last one ends at token {last_group_end})",
            )
        if expanded(first_answer) >= limit:
            raise BadRecordError("no_supervision", f"{full} tokens > model_max_length {limit} and no answer token is left")
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


@dataclass
class RecordInfo:
    """What validation keeps of a good record (not its tokens: 665k of those would not fit)."""

    images: list[str]
    length: int

    @property
    def has_image(self) -> bool:
        return bool(self.images)


def scan_records(
    records: list,
    encoder: RecordEncoder,
    image_folder: str | Path | None,
    open_images: bool = False,
    num_workers: int = 8,
    chunk_size: int = 1024,
) -> tuple[list[RecordInfo | None], list[BadRecord]]:
    """Check every record: (RecordInfo, or None if bad, per record; the bad records).

    Images are checked for existence, or, with open_images, actually opened and decoded with
    the same `load_image` training uses (in a thread pool: decoding 665k images takes a while)."""
    folder = Path(image_folder) if image_folder is not None else Path()
    results: list[RecordInfo | BadRecordError] = []
    for begin in range(0, len(records), chunk_size):
        for r in encoder.check_many(records[begin: begin + chunk_size]):
            results.append(r if isinstance(r, BadRecordError) else RecordInfo(r.images, r.length))

    paths = sorted({p for r in results if isinstance(r, RecordInfo) for p in r.images})
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        problems = dict(zip(paths, pool.map(lambda p: _image_problem(folder, p, open_images), paths)))

    infos: list[RecordInfo | None] = []
    bad: list[BadRecord] = []
    for index, (record, result) in enumerate(zip(records, results)):
        if isinstance(result, RecordInfo):
            result = next((problems[p] for p in result.images if problems[p] is not None), result)
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
) -> DataReport:
    """Validate a data file as training would read it, opening every image; see DataReport."""
    if image_aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown image_aspect_ratio {image_aspect_ratio!r}; expected one of {ASPECT_RATIOS}")
    records = load_records(data_path)
    encoder = RecordEncoder(tokenizer, config, template, model_max_length)
    infos, bad = scan_records(records, encoder, image_folder, open_images=True, num_workers=num_workers)
    good = [info for info in infos if info is not None]
    n_image = sum(e.has_image for e in good)
    return DataReport(str(data_path), len(records), n_image, len(good) - n_image, bad)


# ----------------------------------------------------------------------------------------------
# Dataset and collator
# ----------------------------------------------------------------------------------------------


class VoCoInstructionDataset(Dataset):
    """Lazy supervised dataset over a LLaVA instruction JSON file.

    Item: {"input_ids": LongTensor[L], "labels": LongTensor[L],
           "pixel_values": FloatTensor[n_images, 3, H, W] or None (text-only record)}.
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
    ):
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"unknown image_aspect_ratio {image_aspect_ratio!r}; expected one of {ASPECT_RATIOS}")
        self.data_path = str(data_path)
        self.image_folder = Path(image_folder) if image_folder is not None else Path()
        self.image_processor = image_processor
        self.image_aspect_ratio = image_aspect_ratio
        self.encoder = RecordEncoder(tokenizer, config, template, model_max_length)

        records = load_records(data_path)
        infos, bad = scan_records(records, self.encoder, image_folder, open_images=open_images)
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
        self._lengths = [infos[i].length for i in keep]
        self._has_image = [infos[i].has_image for i in keep]
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
        sample = self.encoder.encode(record)  # checked at construction: cannot fail now
        pixel_values = None
        if sample.images:
            try:
                images = [load_image(self.image_folder / p) for p in sample.images]
            except InputError as err:
                raise InputError(f"record {self.ids[i]}: {err}") from None
            pixel_values = process_images(images, self.image_processor, self.image_aspect_ratio)
        return {
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
            "pixel_values": pixel_values,
        }


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
    from .model import VoCoLlavaConfig

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
    from transformers import AutoTokenizer

    try:
        if not Path(args.image_folder).is_dir():
            raise InputError(f"{args.image_folder}: image folder not found")
        source = args.model or args.tokenizer
        if not Path(source).is_dir():
            raise InputError(f"{source}: directory not found")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise InputError(f"{source}: cannot load a tokenizer ({err})") from None
        if args.model:
            config = load_model_data_config(args.model, args.num_voco)
        else:
            config = _tokenizer_data_config(tokenizer, args.num_voco, args.num_vision_tokens)
        report = check_data(
            args.data_path, args.image_folder, tokenizer, config, args.version,
            args.model_max_length, args.image_aspect_ratio, args.num_workers,
        )
    except (InputError, ValueError) as err:  # unusable input or settings, not bad records
        print(f"error: {err}", file=sys.stderr)
        return 2
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
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="saved VoCo model directory (tokenizer + config.json)")
    source.add_argument("--tokenizer", help="tokenizer directory, when there is no model yet")
    check.add_argument("--num_voco", type=int, default=None, help="K VoCo tokens per image (default: model's, else 1)")
    check.add_argument("--num_vision_tokens", type=int, default=576, help="N per image with --tokenizer (default 576)")
    check.add_argument("--version", default="vicuna_v1", choices=sorted(TEMPLATES), help="conversation template")
    check.add_argument("--model_max_length", type=int, default=2048)
    check.add_argument("--image_aspect_ratio", default="pad", choices=ASPECT_RATIOS)
    check.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1), help="image-checking threads")
    check.set_defaults(func=_run_check)


def main(argv: list[str] | None = None) -> int:
    """`python -m voco_llama.data check ...` (the same as `voco data check ...`)."""
    parser = argparse.ArgumentParser(prog="voco")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
