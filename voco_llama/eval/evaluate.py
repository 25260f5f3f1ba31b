"""`voco eval`: run a model over a LLaVA question file and write LLaVA's answer file.

Question file: one JSON per line, `{"question_id", "image", "text", ...}`, the instruction already
inside `text` (llava/eval/model_vqa_loader.py style). The prompt is `<image>\\n{text}` in the
conversation template; greedy by default. Answer file: one JSON per line, `{"question_id",
"prompt", "text", "answer_id", "model_id", "metadata"}` -- what LLaVA's scoring scripts and ours
(`voco score`) read.

Modes: voco (answers from compressed caches, each image compressed once however many questions
ask about it), masked (one masked pass over all vision tokens: the reference code's way), full
(ordinary causal attention: the upper-bound setting), none (no image: the text-only control).

Resumable: question ids already in the answers file are skipped; lines are appended and flushed
per batch, and a torn last line (a run killed mid-write) is cut off before appending.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from tqdm import tqdm

from ..core.cache import VoCoCache
from ..core.errors import InputError
from ..core.video import read_video

# eval modes (the names users type) -> the pipeline's answering routes; one table for eval and lmms-eval
MODES = {"voco": "cache", "masked": "masked", "full": "full", "none": "none"}


def read_questions(path: str | Path) -> list[dict]:
    questions = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read question file ({err.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            question = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{number}: not valid JSON") from None
        if "question_id" not in question or "text" not in question:
            raise InputError(f"{path}:{number}: a question needs 'question_id' and 'text'")
        questions.append(question)
    return questions


def get_chunk(items: list, num_chunks: int, chunk_idx: int) -> list:
    """LLaVA's sharding: ceil-sized contiguous chunks."""
    size = math.ceil(len(items) / num_chunks)
    return items[chunk_idx * size : (chunk_idx + 1) * size]


def answered_ids(path: Path) -> set:
    """Question ids already answered; cuts a torn last line so appending stays valid JSONL."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done = set()
    for number, line in enumerate(data.decode().splitlines(), 1):
        if line.strip():
            try:
                done.add(json.loads(line)["question_id"])
            except (json.JSONDecodeError, KeyError):
                raise InputError(f"{path}:{number}: not an answer line; refusing to append to it") from None
    return done


class CacheStore:
    """Compressed images (and videos: a group per frame) by key, most recently used kept
    (compress once, ask many). Keys default to the items themselves (paths)."""

    def __init__(self, pipe, num_voco, num_frames: int = 8, capacity: int = 1024):
        self.pipe, self.num_voco, self.num_frames, self.capacity = pipe, num_voco, num_frames, capacity
        self.caches: OrderedDict[str, VoCoCache] = OrderedDict()
        self.compressed = self.reused = 0

    def get(self, items: list, keys: list[str] | None = None, videos: bool = False) -> VoCoCache:
        """One cache holding the items' groups in order, compressing those not seen yet."""
        keys = keys or [str(item) for item in items]
        missing = {}
        for key, item in zip(keys, items):
            if key not in self.caches and key not in missing:
                missing[key] = item
        if missing and videos:
            for key, item in missing.items():
                self.caches[key] = self.pipe.compress_video(item, self.num_frames, num_voco=self.num_voco)
        elif missing:
            fresh = self.pipe.compress(list(missing.values()), num_voco=self.num_voco)
            for i, key in enumerate(missing):
                self.caches[key] = fresh[i]
        self.compressed += len(missing)
        self.reused += len(keys) - len(missing)
        for key in keys:
            self.caches.move_to_end(key)
        result = VoCoCache.cat([self.caches[key] for key in keys])
        while len(self.caches) > self.capacity:
            self.caches.popitem(last=False)
        return result


def run_eval(
    pipe,
    question_file: str | Path,
    answers_file: str | Path,
    image_folder: str | Path = ".",
    mode: str = "voco",
    num_voco: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    num_chunks: int = 1,
    chunk_idx: int = 0,
    model_id: str = "voco-llama",
    num_frames: int = 8,
) -> dict:
    """Answer a question file. A question with "video" instead of "image" (a video file or a folder
    of frames) is answered over `num_frames` frames, each its own compression group."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
    questions = get_chunk(read_questions(question_file), num_chunks, chunk_idx)
    answers_file = Path(answers_file)
    answers_file.parent.mkdir(parents=True, exist_ok=True)
    done = answered_ids(answers_file)
    todo = [q for q in questions if q["question_id"] not in done]
    store = CacheStore(pipe, num_voco, num_frames)
    folder = Path(image_folder)
    start = time.perf_counter()
    with open(answers_file, "a") as out, tqdm(total=len(todo), desc=f"eval {mode}", unit="q") as bar:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            videos = "video" in chunk[0]
            kind = "video" if videos else "image"
            images = [str(folder / q[kind]) for q in chunk] if mode != "none" else None
            if images:
                for path in dict.fromkeys(images):
                    if not os.path.exists(path):
                        raise InputError(
                            f"{path}: {kind} not found (question {chunk[images.index(path)]['question_id']})"
                        )
            cache = store.get(images, videos=videos) if mode == "voco" else None
            if videos and images and mode != "voco":
                images = [frame for path in images for frame in read_video(path, num_frames)]
            answers = pipe.ask(
                [q["text"] for q in chunk],
                cache=cache,
                images=images,
                route=MODES[mode],
                num_voco=num_voco,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
            )
            for q, a in zip(chunk, answers):
                out.write(
                    json.dumps(
                        {
                            "question_id": q["question_id"],
                            "prompt": q["text"],
                            "text": a.text,
                            "answer_id": uuid.uuid4().hex,
                            "model_id": model_id,
                            "metadata": {},
                        }
                    )
                    + "\n"
                )
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(chunk))
    return {
        "questions": len(questions),
        "answered": len(todo),
        "skipped_already_answered": len(questions) - len(todo),
        "images_compressed": store.compressed,
        "cache_reuses": store.reused,
        "seconds": round(time.perf_counter() - start, 2),
        "mode": mode,
        "answers_file": str(answers_file),
    }


def _eval_command(args) -> int:
    from ..core.pipeline import VoCoPipeline

    pipe = VoCoPipeline.from_pretrained(args.model, template=args.conv_mode)
    summary = run_eval(
        pipe,
        args.question_file,
        args.answers_file,
        args.image_folder,
        args.mode,
        args.num_voco,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        args.batch_size,
        args.num_chunks,
        args.chunk_idx,
        args.model_id or Path(args.model).name,
        args.num_frames,
    )
    print(json.dumps(summary))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("eval", help="answer a LLaVA question file (LLaVA answer-file format)")
    p.add_argument("--model", "--model-path", dest="model", required=True)
    p.add_argument("--question-file", required=True)
    p.add_argument("--image-folder", default=".")
    p.add_argument("--answers-file", required=True)
    p.add_argument("--conv-mode", default="vicuna_v1")
    p.add_argument("--mode", choices=sorted(MODES), default="voco")
    p.add_argument("--num-voco", type=int)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-chunks", type=int, default=1)
    p.add_argument("--chunk-idx", type=int, default=0)
    p.add_argument("--model-id")
    p.add_argument("--num-frames", type=int, default=8, help="frames per video question")
    p.set_defaults(func=_eval_command)
