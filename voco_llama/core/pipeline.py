"""Load, compress, answer: the three calls a user needs, over the model's two passes.

    from voco_llama import VoCoPipeline
    pipe = VoCoPipeline.from_pretrained("runs/tiny")
    cache = pipe.compress(["cat.png"])                   # pass 1, once per image
    print(pipe.ask("What is on the mat?", cache).text)   # pass 2, any number of times

A *route* is how an answer reaches the image, the one word for it everywhere (`ask`, `voco ask
--route`, `voco eval --route`, the lmms-eval plugin's `route`): "cache" (two-stage, from a
VoCoCache), "masked" (one pass over all vision tokens under the VoCo rule: the reference code's
way), "full" (ordinary causal attention: the upper-bound model) and "none" (no image at all).
(Not to be confused with the model's *attention path*, streams or mask: how a rule is computed.)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from .presets import load_bundle

if TYPE_CHECKING:
    import torch

    from .cache import VoCoCache

# The torch-backed modules are imported by the calls that use them, so ROUTES (`voco ask --help`)
# costs no torch import.

ROUTES = ("cache", "masked", "full", "none")  # how an answer reaches the image: see the module docstring
ROUTE_ALIASES = {"voco": "cache"}  # the earlier name of route "cache" (`voco eval --mode voco`, lmms-eval's mode=voco)


def route_name(name: str) -> str:
    """The route `name` means (an alias becomes its route); an unknown name is refused."""
    route = ROUTE_ALIASES.get(name, name)
    if route not in ROUTES:
        raise ValueError(f"unknown route {name!r}; expected one of {', '.join(ROUTES)}")
    return route


def _route_arg(text: str) -> str:
    try:
        return route_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_route_flag(parser, earlier: str, help: str) -> None:
    """A verb's `--route` (default cache; aliases accepted, an unknown route refused in one line),
    and `earlier`, the flag's earlier spelling, still accepted but out of the help."""
    parser.add_argument("--route", type=_route_arg, default="cache", metavar="{" + ",".join(ROUTES) + "}", help=help)
    parser.add_argument(earlier, dest="route", type=_route_arg, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def route_rule(route: str) -> str:
    """The attention rule a route answers under: full attention for "full", else the VoCo rule."""
    return "causal" if route == "full" else "voco"


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    logprobs: list[float]


class VoCoPipeline:
    def __init__(self, model, tokenizer, image_processor, template: str = "vicuna_v1", image_aspect_ratio: str = "pad"):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.template, self.image_aspect_ratio = template, image_aspect_ratio

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype=None, device=None, **kwargs) -> VoCoPipeline:
        return cls(*load_bundle(directory, dtype=dtype, device=device), **kwargs)

    def pixels(self, images: list[str | Path | Image.Image]) -> torch.Tensor:
        from .processing import load_image, process_images

        images = [im if isinstance(im, Image.Image) else load_image(im) for im in images]
        return process_images(images, self.image_processor, self.image_aspect_ratio)

    def compress(self, images: list[str | Path | Image.Image], num_voco: int | None = None) -> VoCoCache:
        return self.model.compress(self.pixels(images), num_voco=num_voco)

    def compress_video(
        self, video: str | Path, num_frames: int | None = 8, fps: float | None = None, num_voco: int | None = None
    ) -> VoCoCache:
        """One cache holding every sampled frame, each compressed alone, in time order."""
        from .video import read_video

        return self.compress(read_video(video, num_frames, fps), num_voco=num_voco)

    def load_cache(self, path: str | Path) -> VoCoCache:
        from .cache import VoCoCache

        return VoCoCache.load(path, expected_fingerprint=self.model.fingerprint())

    def ask(
        self,
        questions: str | list[str],
        cache: VoCoCache | list[VoCoCache] | None = None,
        images: list | None = None,
        route: str = "cache",
        num_voco: int | list[int] | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        streamer=None,
        history: list[tuple[str, str]] | None = None,
    ) -> Answer | list[Answer]:
        """Answer one question (or a batch) about the images in `cache` (one cache, or a list of
        caches, which may differ in K: a video at K=1 beside an image at K=16) or `images`.

        Groups (images, frames) are shared out evenly over the questions in order; a question
        without `<image>` placeholders gets one per group at its start (LLaVA's `<image>\\n{q}`
        for a single image, all the frames of a video). `num_voco`: K of the images compressed or
        passed (routes masked, full: one K, or one per image); each must be one the model was trained
        with. `history`: earlier turns of a chat."""
        from .cache import group_num_voco
        from .processing import question_prompt

        single = isinstance(questions, str)
        questions = [questions] if single else list(questions)
        route = route_name(route)
        if route == "cache" and cache is None:
            cache = self.compress(images, num_voco=num_voco)
        groups = {"cache": len(group_num_voco(cache)) if cache is not None else 0, "none": 0}.get(
            route, len(images or [])
        )
        per_question = groups // len(questions)
        # with a chat history, the images sit in its first turn
        prompts = [question_prompt(q, self.template, per_question, history) for q in questions]
        answers = self.answer_prompts(
            prompts, cache, images, route, num_voco, max_new_tokens, temperature, top_p, streamer
        )
        return answers[0] if single else answers

    def answer_prompts(
        self,
        prompts: list[str],
        cache: VoCoCache | list[VoCoCache] | None = None,
        images: list | None = None,
        route: str = "cache",
        num_voco: int | list[int] | None = None,
        max_new_tokens: int | list[int] = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        streamer=None,
    ) -> list[Answer]:
        """Answers to rendered prompts whose `<image>` placeholders are already placed: one per
        group of `cache` (route "cache") or per image (routes "masked", "full"), in prompt order.
        `max_new_tokens` may be one limit per prompt, so requests with different limits share a
        batch (`voco serve`): the batch runs to the largest and each answer stops at its own."""
        from .cache import group_num_voco
        from .processing import encode_prompts

        limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        num_voco = group_num_voco(cache) if cache is not None else num_voco  # each cached group at its own K
        batch = encode_prompts(prompts, self.tokenizer, self.model.config, num_voco=num_voco)
        pixel_values = self.pixels(images) if route in ("masked", "full") else None
        generation = self.model.answer(
            batch["input_ids"].to(self.model.device),
            batch["attention_mask"].to(self.model.device),
            pixel_values=pixel_values,
            cache=cache if route == "cache" else None,
            rule=route_rule(route),
            max_new_tokens=max(limits),
            do_sample=temperature > 0,
            temperature=temperature,
            top_p=top_p,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
        )
        answers = []
        for row, n, limit in zip(generation.sequences.tolist(), generation.lengths.tolist(), limits):
            ids = row[: min(n, limit)]
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            answers.append(Answer(text, ids, generation.logprobs[len(answers), : len(ids)].tolist()))
        return answers
