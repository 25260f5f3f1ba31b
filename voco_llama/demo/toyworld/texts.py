"""The texts a tokenizer for the world must handle, rendered as training and evaluation render them,
and the world tokenizer trained on them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...core.conversation import get_template
from ...core.processing import question_prompt
from ...core.tokenizer import build_tokenizer
from ...train.data import image_files, normalize_record
from .benches import BENCHES
from .world import World, load_world

DEFAULT_TOKENIZER_VOCAB = 1024


def training_text(record: dict) -> str:
    """A training record as training renders it: LLaVA's image placement (`normalize_record`, a video
    as one `<image>`) in the vicuna_v1 template."""
    turns, _ = normalize_record(record, {video: 1 for video in image_files(record, "video")})
    return get_template("vicuna_v1").render(turns)[0]


def world_texts(world: str | Path | World) -> Iterator[str]:
    """Every text a tokenizer for this world must handle: the training conversations (captions,
    questions, answers) and the evaluation prompts, rendered as training and `voco eval` render them."""
    world = load_world(world)
    for record in json.loads(world.train_json.read_text()):
        yield training_text(record)
    for bench in BENCHES:
        with world.questions(bench).open() as f:
            for line in f:
                yield question_prompt(json.loads(line)["text"])


def build_world_tokenizer(
    out_dir: str | Path | World, vocab_size: int = DEFAULT_TOKENIZER_VOCAB, extra_texts: Iterable[str] = ()
):
    """Train the project's byte-level BPE (`voco_llama.core.tokenizer.build_tokenizer`) on `world_texts`
    (and `extra_texts`: what models continuing from this tokenizer will also read), save it to
    `out_dir/tokenizer/` (replacing any previous one) and return it.

    The world's text is so regular that BPE runs out of merges at about 660 entries, below the
    default cap of 1024, so every word of the world (as it occurs, e.g. after a space) is a single
    token; size an embedding with `len(tokenizer)`, not `vocab_size`."""
    world = load_world(out_dir)
    tokenizer = build_tokenizer(itertools.chain(world_texts(world), extra_texts), vocab_size=vocab_size)
    tmp = Path(tempfile.mkdtemp(dir=world.root, prefix=".tokenizer."))
    os.chmod(tmp, 0o755)
    try:
        tokenizer.save_pretrained(tmp)
        old = world.root / f".tokenizer.old.{os.getpid()}"
        if world.tokenizer_dir.exists():
            os.replace(world.tokenizer_dir, old)
        os.replace(tmp, world.tokenizer_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer
