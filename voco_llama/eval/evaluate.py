"""`voco eval`: run a model over a LLaVA question file and write LLaVA's answer file.

Question files, as LLaVA's generators read them:
- JSONL (``model_vqa_loader.py``): one JSON per line, ``{"question_id", "image" | "video", "text",
  ...}``, the instruction already inside ``text``; the answer's ``prompt`` is ``text``.
- a JSON list (``model_vqa_science.py``, ScienceQA's ``llava_test_CQM-A.json``): ``{"id",
  "conversations": [{"value": question}, ...], "image"?}``; the answer's id is ``id`` and its
  ``prompt`` is ``<image>\\n{question}`` for an image question (what ``eval_science_qa.py`` reads
  to tell image questions), ``--single-pred-prompt`` adds LLaVA's letter instruction.
A question without "image" or "video" is answered from its text alone. The model's prompt is
``<image>\\n{text}`` in the conversation template; greedy by default. Answer file: one JSON per
line, ``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}``, ids as the question
file writes them -- what LLaVA's scoring scripts and ours (`voco score`) read.

Routes (`--route`, the pipeline's word; `--mode` and its value `voco` are the earlier spellings,
still accepted): cache (answers from compressed caches, each image compressed once however many
questions ask about it), masked (one masked pass over all vision tokens: the reference code's way),
full (ordinary causal attention: the upper-bound setting), none (no image: the text-only control).

Resumable: question ids already in the answers file are skipped; lines are appended and flushed
per batch, and a torn last line (a run killed mid-write) is cut off before appending. What a file
was started with (model fingerprint, route, K, question file, generation settings) is kept beside
it in ``<answers>.meta.json`` (so the answer file stays in LLaVA's format); a run that differs
refuses to add to it unless ``--overwrite`` starts the file again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InputError, interruptible_progress, non_negative_float, positive_int
from ..core.files import check_file_target, write_json_atomic
from ..core.pipeline import ROUTE_ALIASES, add_route_flag, route_name

if TYPE_CHECKING:
    from ..core.cache import VoCoCache

SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."


def _science_question(record, path, number: int, single_pred_prompt: bool) -> dict:
    """A model_vqa_science.py record as a question: its text, and the prompt LLaVA writes."""
    try:
        qid, text = record["id"], record["conversations"][0]["value"]
    except (KeyError, IndexError, TypeError):
        raise InputError(f"{path}: record {number}: a question needs 'id' and 'conversations'") from None
    if not isinstance(text, str):
        raise InputError(f"{path}: record {number}: the question's 'value' must be a string")
    text = text.replace("<image>", "").strip()
    if single_pred_prompt:
        text += "\n" + SINGLE_PRED_PROMPT
    question = {"question_id": qid, "text": text, "prompt": ("<image>\n" + text) if "image" in record else text}
    if "image" in record:
        question["image"] = record["image"]
    return question


def read_questions(path: str | Path, single_pred_prompt: bool = False) -> list[dict]:
    """The questions of a LLaVA question file (module docstring), each with the ``prompt`` its
    answer line carries."""
    try:
        raw = Path(path).read_text()
    except (OSError, UnicodeError) as err:
        raise InputError(f"{path}: cannot read question file ({getattr(err, 'strerror', None) or err})") from None
    if raw.lstrip().startswith("["):
        try:
            records = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg})") from None
        if not isinstance(records, list):
            raise InputError(f"{path}: expected a JSON list of questions")
        return _unique([_science_question(r, path, n, single_pred_prompt) for n, r in enumerate(records, 1)], path)
    questions = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            question = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(question, dict) or "question_id" not in question or "text" not in question:
            raise InputError(f"{path}:{number}: a question needs 'question_id' and 'text'")
        if not isinstance(question["text"], str):
            raise InputError(f"{path}:{number}: 'text' must be a string, got {type(question['text']).__name__}")
        if single_pred_prompt:
            question["text"] += "\n" + SINGLE_PRED_PROMPT
        questions.append({**question, "prompt": question["text"], "_where": f"{path}:{number}"})
    return _unique(questions, path)


def _unique(questions: list[dict], path) -> list[dict]:
    """Each question once: a question id repeated with the same text would be answered twice, an
    answer file no scorer takes. An id may repeat with another text (LLaVA's MME file asks two
    questions per "subtask/image.png"): such questions are told apart by their prompt. Ids are
    strings or integers, as LLaVA's files write them. Records are named by line (JSONL) or number."""
    first: dict = {}
    for number, q in enumerate(questions, 1):
        where = q.pop("_where", f"{path}: record {number}")
        qid = q["question_id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise InputError(f"{where}: question_id must be a string or an integer, got {json.dumps(qid)}")
        if (qid, q["prompt"]) in first:
            raise InputError(
                f"{where}: question_id {qid!r} repeats the question of {first[qid, q['prompt']]} (same id, same text)"
            )
        first[qid, q["prompt"]] = where
    return questions


def question_kind(question: dict) -> str:
    return "video" if "video" in question else "image" if "image" in question else "text"


def get_chunk(items: list, num_chunks: int, chunk_idx: int) -> list:
    """LLaVA's sharding: ceil-sized contiguous chunks."""
    size = math.ceil(len(items) / num_chunks)
    return items[chunk_idx * size : (chunk_idx + 1) * size]


def answered_ids(path: Path, with_prompt: bool = False) -> set:
    """Question ids already answered (``with_prompt``: (id, prompt) pairs, for files that reuse an
    id); cuts a torn last line so appending stays valid JSONL."""
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
                answer = json.loads(line)
                done.add((answer["question_id"], answer.get("prompt")) if with_prompt else answer["question_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{number}: not an answer line; refusing to append to it") from None
    return done


def meta_path(answers_file: Path) -> Path:
    return answers_file.with_name(answers_file.name + ".meta.json")


def _start_or_resume(answers_file: Path, meta: dict, overwrite: bool) -> set:
    """The ids already answered by a run made the same way; refuses a file another run started."""
    sidecar = meta_path(answers_file)
    if overwrite:
        answers_file.unlink(missing_ok=True)
    done = answered_ids(answers_file, with_prompt=True)
    if done:
        if not sidecar.is_file():
            raise InputError(
                f"{answers_file}: holds {len(done)} answers but no {sidecar.name} saying how they were made; "
                "pass --overwrite to start it again, or choose another --answers-file"
            )
        try:
            before = json.loads(sidecar.read_text())
        except (OSError, UnicodeError, json.JSONDecodeError):
            raise InputError(f"{sidecar}: unreadable; pass --overwrite to start {answers_file.name} again") from None
        if "mode" in before and "route" not in before:  # written before "mode" was called route
            mode = before.pop("mode")
            before["route"] = ROUTE_ALIASES.get(mode, mode)
        changed = [k for k in meta if k != "question_file" and before.get(k) != meta[k]]
        if changed:

            def show(value):
                return value[:12] if isinstance(value, str) and len(value) == 64 else value  # digests

            diff = ", ".join(f"{k} {show(before.get(k))!r} -> {show(meta[k])!r}" for k in changed)
            raise InputError(
                f"{answers_file}: started by another run ({diff}); pass --overwrite to start it again, "
                "or choose another --answers-file"
            )
    write_json_atomic(sidecar, meta)
    return done


class CompressedImages:
    """Compressed images (and videos: a group per frame) by key, compressed on a miss, the
    `capacity` most recently used kept (compress once, ask many). Keys default to the items
    themselves (paths). (serve/store.py's CacheStore is the server's: bounded by bytes, on disk.)"""

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
        from ..core.cache import VoCoCache

        result = VoCoCache.cat([self.caches[key] for key in keys])
        while len(self.caches) > self.capacity:
            self.caches.popitem(last=False)
        return result


def run_eval(
    pipe,
    question_file: str | Path,
    answers_file: str | Path,
    image_folder: str | Path = ".",
    route: str = "cache",
    num_voco: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    num_chunks: int = 1,
    chunk_idx: int = 0,
    model_id: str = "voco-llama",
    num_frames: int = 8,
    single_pred_prompt: bool = False,
    overwrite: bool = False,
) -> dict:
    """Answer a question file. A question with "video" instead of "image" (a video file or a folder
    of frames) is answered over `num_frames` frames, each its own compression group; one with
    neither from its text alone. Consecutive questions of one kind share a batch. `route`: see the
    module docstring (an alias is recorded as its route)."""
    from ..core.video import read_video

    route = route_name(route)
    if not 0 <= chunk_idx < num_chunks:
        raise InputError(f"--chunk-idx {chunk_idx}: must be in 0..{num_chunks - 1} (--num-chunks {num_chunks})")
    answers_file = Path(answers_file)
    check_file_target(answers_file)
    questions = get_chunk(read_questions(question_file, single_pred_prompt), num_chunks, chunk_idx)
    answers_file.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "voco-eval/1",
        "model_fingerprint": pipe.model.fingerprint(),
        "route": route,
        "num_voco": pipe.model.config.accepted_num_voco(num_voco),  # refused here if the model never trained at it
        "question_file": str(Path(question_file).resolve()),
        "question_file_sha256": hashlib.sha256(Path(question_file).read_bytes()).hexdigest(),
        "num_chunks": num_chunks,
        "chunk_idx": chunk_idx,
        "single_pred_prompt": single_pred_prompt,
        "template": pipe.template,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "num_frames": num_frames,
    }
    done = _start_or_resume(answers_file, meta, overwrite)
    todo = [q for q in questions if (q["question_id"], q["prompt"]) not in done]
    batches: list[list[dict]] = []
    for q in todo:  # runs of one kind, at most batch_size long, in file order
        if batches and len(batches[-1]) < batch_size and question_kind(batches[-1][0]) == question_kind(q):
            batches[-1].append(q)
        else:
            batches.append([q])
    store = CompressedImages(pipe, num_voco, num_frames)
    folder = Path(image_folder)
    for q in todo:  # every image and video is there before the first answer
        kind = question_kind(q)
        if kind != "text" and route != "none" and not os.path.exists(folder / q[kind]):
            raise InputError(f"{folder / q[kind]}: {kind} not found (question {q['question_id']})")
    start = time.perf_counter()

    def kept() -> str:  # what the file holds (a torn last line cut off)
        kept = len(answered_ids(answers_file, with_prompt=True))
        return f"{answers_file}: {kept} of {len(questions)} answers kept; the same command resumes"

    with interruptible_progress(len(todo), f"eval {route}", "q", kept) as bar:
        with open(answers_file, "a") as out:
            for chunk in batches:
                kind = question_kind(chunk[0])
                chunk_route = route if kind != "text" else "none"
                images = [str(folder / q[kind]) for q in chunk] if chunk_route != "none" else None
                cache = store.get(images, videos=kind == "video") if chunk_route == "cache" else None
                if kind == "video" and chunk_route in ("masked", "full"):
                    images = [frame for path in images for frame in read_video(path, num_frames)]
                answers = pipe.ask(
                    [q["text"] for q in chunk],
                    cache=cache,
                    images=images,
                    route=chunk_route,
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
                                "prompt": q["prompt"],
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
        "route": route,
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
        args.route,
        args.num_voco,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        args.batch_size,
        args.num_chunks,
        args.chunk_idx,
        args.model_id or Path(args.model).name,
        args.num_frames,
        args.single_pred_prompt,
        args.overwrite,
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
    add_route_flag(p, "--mode", help="how answers reach the images")
    p.add_argument(
        "--num-voco",
        type=positive_int,
        help="K: <voco> tokens per image, one the model was trained with (default: the model's)",
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=128)
    p.add_argument("--temperature", type=non_negative_float, default=0.0)
    p.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=1.0)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--num-chunks", type=positive_int, default=1)
    p.add_argument("--chunk-idx", type=int, default=0)
    p.add_argument("--model-id")
    p.add_argument("--num-frames", type=positive_int, default=8, help="frames per video question")
    p.add_argument(
        "--single-pred-prompt",
        action="store_true",
        help=f"append LLaVA's {SINGLE_PRED_PROMPT!r} to each question (its ScienceQA setting)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start the answers file again instead of resuming it (needed when it was started another way)",
    )
    p.set_defaults(func=_eval_command)
