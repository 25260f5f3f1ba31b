"""An lmms-eval model plugin: `python -m lmms_eval --model voco_llava --model_args pretrained=DIR`.

lmms-eval is optional (`make lmms`: the `[lmms]` extra, then lmms-eval itself with `--no-deps`, see
README). With it installed, `VoCoLlava` subclasses `lmms_eval.api.model.lmms` and lmms-eval finds
it through the `lmms_eval.models` entry-point group (`lmms_eval_manifest` below returns its
`ModelManifest`; checked against lmms-eval 0.7.3, whose `lmms_eval.models.get_model` reads that
group). It is also registered with `@register_model("voco_llava")` for lmms-eval's older name
registry. Without lmms-eval this module still imports (the base class is `object`), so the plugin is
also tested with hand-made requests. The toy world's benches are local tasks in `lmms_tasks/`.

Model args: pretrained (model directory), num_voco (K, one the model was trained with: any of its
`num_voco_choices` for a model trained with several; default the model's), batch_size, device,
dtype, conv_template (vicuna_v1 | plain), route (cache | masked | full | none: the routes of
`VoCoPipeline.ask`, cache = from compressed caches; `mode`, with `voco` for cache, is the earlier
spelling, still accepted), max_new_tokens (when a task sets none),
image_aspect_ratio, attn_implementation, cache_capacity (compressed images kept).

Requests follow lmms-eval's simple-model `Instance.args`:
  generate_until: (context, generation_kwargs, doc_to_visual, doc_id, task, split)
  loglikelihood:  (context, continuation or doc_to_target, doc_to_visual, doc_id, task, split)
where the doc is `self.task_dict[task][split][doc_id]` (the evaluator fills `task_dict`).

Each distinct image is compressed once (keyed by its pixels, so the same picture behind several
docs, as in POPE's three questions per image, costs one compression); questions are answered in
batches from the cached VoCo K/V.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from PIL import Image

from ..core.cache import VoCoCache
from ..core.conversation import IMAGE_PLACEHOLDER, get_template
from ..core.pipeline import VoCoPipeline, route_name, route_rule
from ..core.presets import load_bundle
from ..core.processing import IMAGE_SUFFIXES, expand_image_tokens, load_image, place_images, question_prompt
from .evaluate import CompressedImages

try:  # the optional extra: lmms-eval is never required to import this module
    from lmms_eval.api.model import lmms as _Base

    HAVE_LMMS_EVAL = True
except ImportError:
    _Base = object
    HAVE_LMMS_EVAL = False

try:
    from lmms_eval.api.registry import register_model
except ImportError:

    def register_model(*names):
        return lambda cls: cls


MODEL_NAME = "voco_llava"
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def lmms_eval_manifest():
    """The `lmms_eval.models` entry point: how lmms-eval (>= its registry v2) finds this plugin."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.VoCoLlava")


class CompressedPILImages(CompressedImages):
    """evaluate.CompressedImages keyed by the images' pixels (lmms-eval hands over PIL images)."""

    def __init__(self, pipe: VoCoPipeline, num_voco: int | None, capacity: int = 1024):
        super().__init__(pipe, num_voco, capacity=capacity)

    @staticmethod
    def key(image: Image.Image) -> str:
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{image.mode}{image.size}".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()

    def get(self, images: list[Image.Image]) -> VoCoCache:
        return super().get(images, keys=[self.key(im) for im in images])


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


@register_model(MODEL_NAME)
class VoCoLlava(_Base):
    """VoCo-LLaMA for lmms-eval: answers and scores from compressed image caches."""

    is_simple = True
    chat_template = None

    def __init__(
        self,
        pretrained: str,
        num_voco: int | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        conv_template: str = "vicuna_v1",
        route: str | None = None,
        max_new_tokens: int = 128,
        image_aspect_ratio: str = "pad",
        attn_implementation: str | None = None,
        cache_capacity: int = 1024,
        mode: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        kwargs.pop("max_batch_size", None)  # lmms-eval passes it to every model; no auto batch size here
        if kwargs:
            raise TypeError(f"{MODEL_NAME}: unexpected model args {sorted(kwargs)}")
        if mode is not None and route is not None:
            raise ValueError(f"{MODEL_NAME}: give route or mode (its earlier name), not both")
        try:
            route = route_name(route or mode or "cache")
        except ValueError as err:
            raise ValueError(f"{MODEL_NAME}: {err}") from None
        get_template(conv_template)  # fail early on an unknown template
        # lmms-eval's base sets these; without it (tests) the plugin needs them too.
        self._rank = getattr(self, "_rank", 0)
        self._world_size = getattr(self, "_world_size", 1)
        self.task_dict = getattr(self, "task_dict", {})
        if str(batch_size).startswith("auto"):
            batch_size = 8
        self.batch_size_per_gpu = max(1, int(batch_size))
        self._device = torch.device(self._pick_device(device))
        self.route = route
        self.default_max_new_tokens = int(max_new_tokens)
        self.pretrained = str(pretrained)
        model, tokenizer, image_processor = load_bundle(
            Path(pretrained),
            dtype=self._pick_dtype(dtype),
            device=self._device,
            attn_implementation=attn_implementation,
        )
        self.pipe = VoCoPipeline(
            model, tokenizer, image_processor, template=conv_template, image_aspect_ratio=image_aspect_ratio
        )
        self.conv_template = conv_template
        # K of every image: one the model was trained with (a model trained for several K takes any of them)
        self.num_voco = model.config.accepted_num_voco(None if num_voco in (None, "", "None") else int(num_voco))
        self.compressed_images = CompressedPILImages(self.pipe, self.num_voco, capacity=int(cache_capacity))

    # ---- set-up helpers ---------------------------------------------------------------------

    @staticmethod
    def _pick_device(device) -> str:
        if device not in (None, "", "auto"):
            device = str(device)
            if device == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) > 1:  # one process per GPU
                device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            return device
        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        return "cpu"

    def _pick_dtype(self, dtype):
        if isinstance(dtype, torch.dtype):
            return dtype
        if dtype in (None, "", "auto"):
            return torch.float16 if self._device.type == "cuda" else torch.float32
        try:
            return DTYPES[str(dtype).replace("torch.", "")]
        except KeyError:
            raise ValueError(f"{MODEL_NAME}: unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}") from None

    # ---- what lmms-eval reads -----------------------------------------------------------------

    @property
    def model(self):
        return self.pipe.model

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def images_compressed(self) -> int:
        return self.compressed_images.compressed

    # ---- requests -> prompts ------------------------------------------------------------------

    def _doc(self, task, split, doc_id):
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual, doc) -> list[Image.Image]:
        if doc_to_visual is None:
            return []
        raw = doc_to_visual(doc)
        if raw is None:
            return []
        if not isinstance(raw, (list, tuple)):
            raw = [raw]
        flat = []
        for item in raw:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        images = []
        for item in flat:
            if item is None:
                continue
            if isinstance(item, Image.Image):
                images.append(item.convert("RGB"))
            elif isinstance(item, (str, Path)) and Path(item).suffix.lower() in IMAGE_SUFFIXES:
                images.append(load_image(item))
            else:
                raise NotImplementedError(
                    f"{MODEL_NAME}: visual of type {type(item).__name__} is not supported (images only; "
                    "video and audio are not)"
                )
        return images

    def _prepare(self, request) -> tuple[str, list[Image.Image], str, object, object]:
        context, second, doc_to_visual, doc_id, task, split = request.args[:6]
        doc = self._doc(task, split, doc_id) if (doc_to_visual is not None or callable(second)) else None
        images = [] if self.route == "none" else self._visuals(doc_to_visual, doc)
        route = self.route if images else "none"
        return place_images(context, len(images) if route != "none" else 0), images, route, second, doc

    def _cache_for(self, rows_images: list[list[Image.Image]], route: str) -> VoCoCache | None:
        if route != "cache":
            return None
        return self.compressed_images.get([im for images in rows_images for im in images])

    # ---- generate_until -----------------------------------------------------------------------

    def _generation_settings(self, gen_kwargs: dict) -> tuple[int, float, float, list[str]]:
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        elif not isinstance(until, (list, tuple)):
            raise ValueError(f"generation kwargs 'until' must be a string or a list, not {type(until).__name__}")
        max_new_tokens = int(gen_kwargs.get("max_new_tokens") or self.default_max_new_tokens)
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        if "do_sample" in gen_kwargs and not _as_bool(gen_kwargs["do_sample"]):
            temperature = 0.0
        top_p = gen_kwargs.get("top_p")
        top_p = 1.0 if top_p is None else float(top_p)
        return max_new_tokens, temperature, top_p, [u for u in until if u]

    def generate_until(self, requests) -> list[str]:
        prepared = []
        for request in requests:
            question, images, route, gen_kwargs, _ = self._prepare(request)
            max_new, temperature, top_p, until = self._generation_settings(gen_kwargs)
            prepared.append((question, images, route, (max_new, temperature, top_p), until))
        # Rows of one batch share a route and sampling settings; within a group the task's order is
        # kept, so the docs that share an image stay close to where it is cached.
        groups: dict[tuple, list[int]] = {}
        for i, (_, _, route, settings, _) in enumerate(prepared):
            groups.setdefault((route, settings), []).append(i)
        results: list[str | None] = [None] * len(prepared)
        progress = _progress(len(prepared), self.rank != 0)
        for (route, (max_new, temperature, top_p)), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                rows_images = [prepared[i][1] for i in batch]
                cache = self._cache_for(rows_images, route)
                flat_images = [im for images in rows_images for im in images] if route in ("masked", "full") else None
                with torch.inference_mode():
                    answers = self.pipe.ask(
                        [prepared[i][0] for i in batch],
                        cache=cache,
                        images=flat_images,
                        route=route,
                        num_voco=self.num_voco,
                        max_new_tokens=max_new,
                        temperature=temperature,
                        top_p=top_p,
                    )
                for i, answer in zip(batch, answers):
                    text = cut_at(answer.text, prepared[i][4])
                    results[i] = text
                    cache_hook = getattr(self, "cache_hook", None)
                    if cache_hook is not None:
                        cache_hook.add_partial("generate_until", (requests[i].args[0], requests[i].args[1]), text)
                progress.update(len(batch))
        progress.close()
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{MODEL_NAME}: multi-round generation is not implemented")

    # ---- loglikelihood ------------------------------------------------------------------------

    def _answer_separator(self) -> str:
        """What the template puts between the generation prompt and the assistant's answer
        (vicuna_v1: one space after 'ASSISTANT:'; plain: nothing)."""
        template = get_template(self.conv_template)
        marker = "\x00ANSWER\x00"
        prompt = template.prompt(IMAGE_PLACEHOLDER)
        full = template.render([(IMAGE_PLACEHOLDER, marker)])[0]
        return full[len(prompt) : full.index(marker)] if full.startswith(prompt) else ""

    def continuation_ids(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of the rendered prompt and of the continuation after it.

        The continuation is the assistant's whole answer turn: placed as the template places an
        answer (after 'ASSISTANT:' and a space) unless it already starts with whitespace (lm-eval's
        convention, `" yes"`), and closed as the template closes one (vicuna_v1: `</s>`), as
        lmms-eval's llava model renders it. Like lm-eval, the whole text is tokenised and split at
        the prompt's length, so a token that crosses the boundary is not invented."""
        template = get_template(self.conv_template)
        if continuation and not continuation[:1].isspace():
            continuation = self._answer_separator() + continuation
        continuation += template.sep2
        tok = self.tokenizer
        context_ids = tok(prompt, add_special_tokens=True).input_ids
        whole = tok(prompt + continuation, add_special_tokens=True).input_ids
        if whole[: len(context_ids)] == context_ids:
            return context_ids, whole[len(context_ids) :]
        return context_ids, tok(continuation, add_special_tokens=False).input_ids

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """(loss, is_greedy) per request, as lmms-eval's own llava model returns them: the mean
        negative log-probability of the continuation's tokens (the answer and the template's close;
        lower is more likely: lmms-eval's multiple-choice scoring takes the argmin), and whether
        greedy decoding produces exactly those tokens. Answered from the same route as generation
        (for route cache: from the compressed caches, via `model.prefill`)."""
        config = self.model.config
        if config.voco_layout == "reference":  # its rows are not built here (core/processing.py encode_prompts)
            raise NotImplementedError("loglikelihood for models of the reference layout (generate_until works)")
        prepared = []
        for request in requests:
            question, images, route, target, doc = self._prepare(request)
            continuation = target if isinstance(target, str) else target(doc)
            prompt = question_prompt(question, self.conv_template, len(images) if route != "none" else 0)
            context_ids, cont_ids = self.continuation_ids(prompt, continuation)
            prepared.append((images, route, context_ids, cont_ids))
        groups: dict[str, list[int]] = {}
        for i, (_, route, _, _) in enumerate(prepared):
            groups.setdefault(route, []).append(i)
        results: list[tuple[float, bool] | None] = [None] * len(prepared)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        progress = _progress(len(prepared), self.rank != 0)
        for route, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                rows_images = [prepared[i][0] for i in batch]
                cache = self._cache_for(rows_images, route)
                num_voco = cache.num_voco if cache is not None else self.num_voco
                rows = [
                    expand_image_tokens(
                        prepared[i][2] + prepared[i][3],
                        config.image_token_id,
                        config.num_vision_tokens,
                        config.voco_token_id,
                        num_voco,
                    )[0]
                    for i in batch
                ]
                length = max(len(r) for r in rows)
                input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
                attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
                for r, row in enumerate(rows):
                    input_ids[r, length - len(row) :] = torch.tensor(row)
                    attention_mask[r, length - len(row) :] = 1
                pixel_values = None
                if route in ("masked", "full"):
                    pixel_values = self.pipe.pixels([im for images in rows_images for im in images])
                with torch.inference_mode():
                    logits = self.model.prefill(
                        input_ids.to(self.device),
                        attention_mask.to(self.device),
                        pixel_values=pixel_values,
                        cache=cache,
                        rule=route_rule(route),
                    ).logits
                # Query rows are left-padded and end with each row's last text tokens: the
                # continuation is right-aligned, predicted by the positions just before it.
                width = logits.shape[1]
                for r, i in enumerate(batch):
                    cont = prepared[i][3]
                    scores = logits[r, width - 1 - len(cont) : width - 1].float()
                    target = torch.tensor(cont, device=scores.device)
                    log_p = torch.log_softmax(scores, dim=-1).gather(1, target[:, None])[:, 0]
                    greedy = bool((scores.argmax(dim=-1) == target).all())
                    results[i] = (float(-log_p.mean()), greedy)
                progress.update(len(batch))
        progress.close()
        return results


def cut_at(text: str, until: list[str]) -> str:
    """lm-eval's stop rule: the text before the first occurrence of any stop string."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, desc="Model Responding")


__all__ = ["HAVE_LMMS_EVAL", "CompressedPILImages", "VoCoLlava", "lmms_eval_manifest", "cut_at"]
