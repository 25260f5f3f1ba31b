"""OpenAI's chat-completions request, read into prompt turns and media, with the server's limits.

Content parts of a user message, in order (text between them is kept where it is; an image is an
`<image>` placeholder at its place, a video one per frame):

  {"type": "text", "text": "..."}
  {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}      PNG/JPEG/... bytes
  {"type": "image_url", "image_url": {"url": "file:///abs/path.png"}}           only under
                                                                                 --allowed-local-media-path
  {"type": "video", "video": ["data:image/png;base64,...", ...]}                 frames, in time order
  {"type": "video_url", "video_url": {"url": "file:///abs/clip.mp4" | "file:///abs/frames/",
                                      "num_frames": 8}}                          sampled as `voco ask --video`
  {"type": "voco_cache", "voco_cache": {"id": "<id from /v1/voco/compress>"}}   no pixels re-sent

An image or video part may say its K, `"num_voco": 16` beside its "type" (one the model was trained
with, see `voco train --num_voco_choices`; default the server's `--num-voco`): a long video at K=1
and a detailed image at K=16 in one request. A cache id has the K it was made with.

Remote URLs are refused: the server never fetches anything. Every refusal is a `RequestError`:
one line naming the field, and the HTTP status it is answered with.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from ..core.conversation import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, VOCO_PLACEHOLDER
from ..core.errors import InputError
from ..core.video import read_video
from .store import KEY_PATTERN

RESERVED = (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, VOCO_PLACEHOLDER)
MAX_STOP, MAX_TOP_LOGPROBS = 4, 20  # OpenAI's limits
# Every field of OpenAI's chat-completion request, and its fate here. "implemented": read below.
# Any other: refused with a 400 naming it, unless its value is one of those listed, each of which
# asks for what this server does anyway (no tools, plain text, nothing stored). A field OpenAI does
# not define is refused too (vLLM's extensions such as top_k or repetition_penalty included).
IMPLEMENTED = (
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
)  # fmt: skip
REFUSED = {
    "audio": (None,),
    "function_call": (None, "none"),
    "functions": (None, []),
    "logit_bias": (None, {}),
    "metadata": (None, {}),
    "modalities": (None, ["text"]),
    "moderation": (None,),
    "parallel_tool_calls": (None,),
    "prediction": (None,),
    "prompt_cache_key": (None,),
    "prompt_cache_options": (None,),
    "prompt_cache_retention": (None,),
    "reasoning_effort": (None,),
    "response_format": (None, {"type": "text"}),
    "safety_identifier": (None,),
    "service_tier": (None, "auto", "default"),
    "store": (None, False),
    "tool_choice": (None, "none"),
    "tools": (None, []),
    "user": (None,),
    "verbosity": (None,),
    "web_search_options": (None,),
}


class RequestError(InputError):
    """A bad request: a one-line message and the HTTP status to answer it with."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


@dataclass
class Limits:
    max_request_bytes: int = 32 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_frames: int = 64  # images plus video frames in one request
    max_tokens: int = 1024
    max_n: int = 8  # choices one request may ask for
    default_max_tokens: int = 128  # as `voco ask --max-new-tokens`
    num_frames: int = 8  # frames sampled from a video file or folder, unless the part says
    allowed_local_media_path: Path | None = None


@dataclass
class Media:
    """An image or a video of a request. `parts`: what its key is made of (an image's file bytes,
    a decoded video's frame pixels); `images`: the decoded frames, made only when needed."""

    field: str
    kind: str  # "image", "video" or "cache" (an id from /v1/voco/compress)
    parts: list[bytes] = field(default_factory=list)
    images: list[Image.Image] | None = None
    cache_id: str | None = None
    num_voco: int | None = None  # K the part asks for (None: the server's)

    def decode(self, limits: Limits) -> list[Image.Image]:
        if self.images is None:
            self.images = [decode_image(data, self.field, limits) for data in self.parts]
        return self.images


@dataclass
class ChatRequest:
    system: str | None
    turns: list[tuple[list, str | None]]  # (user pieces: str or Media, assistant answer or None)
    max_tokens: int
    temperature: float
    top_p: float
    stream: bool
    include_usage: bool
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None  # None: no log-probabilities; 0..20: the chosen token's and this many more

    @property
    def media(self) -> list[Media]:
        return [piece for pieces, _ in self.turns for piece in pieces if isinstance(piece, Media)]


def check_model(body: dict, model_name: str) -> None:
    """`model` may be left out (one model is served); given, it must be this one."""
    model = body.get("model")
    if model is not None and model != model_name:
        raise RequestError(f"model {model!r} not found; this server serves {model_name!r}", 404, "model_not_found")


def check_fields(body: dict) -> None:
    """Refuse, by name, every field this server does not implement (see IMPLEMENTED, REFUSED)."""
    for name, value in body.items():
        if name in IMPLEMENTED:
            continue
        if name not in REFUSED:
            raise RequestError(f"{name}: not a field of OpenAI's chat-completion request; refused", param=name)
        if not any(value == accepted and type(value) is type(accepted) for accepted in REFUSED[name]):
            raise RequestError(f"{name}: not supported by voco serve", param=name)


def parse_chat(body: dict, limits: Limits, model_name: str) -> ChatRequest:
    check_model(body, model_name)
    check_fields(body)
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name, 0) not in (0, None):
            raise RequestError(f"{name}: not supported by voco serve (only 0)", param=name)
    system, turns = _messages(body.get("messages"), limits)
    max_tokens = _max_tokens(body, limits)
    temperature = _number(body, "temperature", 0.0, 0.0, 2.0)  # default greedy, as `voco ask`
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0:
        raise RequestError("top_p: must be above 0", param="top_p")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise RequestError("stream: must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise RequestError('stream_options: only {"include_usage": true|false} is supported', param="stream_options")
    include_usage = bool((options or {}).get("include_usage"))
    n = 1 if body.get("n") is None else body["n"]
    if not _is_int(n) or not 1 <= n <= limits.max_n:
        raise RequestError(f"n: {n!r} is not an integer from 1 to {limits.max_n}", param="n")
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not -(2**63) <= seed < 2**63):
        raise RequestError(f"seed: {seed!r} is not a 64-bit integer", param="seed")
    return ChatRequest(
        system, turns, max_tokens, temperature, top_p, stream, include_usage, n, _stop(body), seed, _top_logprobs(body)
    )


def _messages(messages, limits: Limits) -> tuple[str | None, list]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: a non-empty list of messages is required", param="messages")
    system, start = None, 0
    if isinstance(messages[0], dict) and messages[0].get("role") in ("system", "developer"):
        system, start = _text_content(messages[0].get("content"), "messages[0].content"), 1
    turns = []
    for i, message in enumerate(messages[start:], start):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where}: a message must be an object with 'role' and 'content'")
        expected = "user" if not turns or turns[-1][1] is not None else "assistant"
        role = message.get("role")
        if role != expected:
            raise RequestError(
                f"{where}.role: expected {expected!r} (messages alternate user, assistant, ...), got {role!r}"
            )
        if role == "user":
            turns.append((_user_content(message.get("content"), f"{where}.content", limits), None))
        else:
            turns[-1] = (turns[-1][0], _text_content(message.get("content"), f"{where}.content"))
    if not turns or turns[-1][1] is not None:
        raise RequestError(f"messages[{len(messages) - 1}].role: the last message must be the user's")
    return system, turns


def _max_tokens(body: dict, limits: Limits) -> int:
    given = {name: body[name] for name in ("max_completion_tokens", "max_tokens") if body.get(name) is not None}
    if len(set(map(repr, given.values()))) > 1:
        raise RequestError("max_tokens, max_completion_tokens: two different limits; send one", param="max_tokens")
    name, value = next(iter(given.items()), ("max_tokens", min(limits.default_max_tokens, limits.max_tokens)))
    if not _is_int(value) or not 1 <= value <= limits.max_tokens:
        raise RequestError(f"{name}: {value!r} is not an integer from 1 to {limits.max_tokens}", param=name)
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(f"stop: a string or a list of up to {MAX_STOP} non-empty strings is required", param="stop")
    return tuple(stop)


def _top_logprobs(body: dict) -> int | None:
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise RequestError("logprobs: must be true or false", param="logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise RequestError(
            f"top_logprobs: {top!r} is not an integer from 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    if top is not None and not logprobs:
        raise RequestError("top_logprobs: needs logprobs: true", param="top_logprobs")
    return (top or 0) if logprobs else None


def parse_compress(body: dict, limits: Limits, model_name: str) -> Media:
    """/v1/voco/compress takes one content part (an image, a video, a video path) as the body."""
    check_model(body, model_name)
    media = _part(body, "body", limits)
    if not isinstance(media, Media) or media.kind == "cache":
        raise RequestError("body: give one image_url, video or video_url part to compress")
    return media


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"{name}: {value!r} is not a number from {low:g} to {high:g}", param=name)
    return float(value)


def _check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise RequestError(f"{where}: text must be a string")
    for placeholder in RESERVED:
        if placeholder in text:
            raise RequestError(f"{where}: text may not contain {placeholder}; send images as image_url parts")
    return text


def _text_content(content, where: str) -> str:
    """System and assistant messages: a string or text parts."""
    if isinstance(content, str):
        return _check_text(content, where)
    if isinstance(content, list):
        return "\n".join(_part(part, f"{where}[{i}]", None) for i, part in enumerate(content))
    raise RequestError(f"{where}: must be a string or a list of text parts")


def _user_content(content, where: str, limits: Limits) -> list:
    if isinstance(content, str):
        return [_check_text(content, where)]
    if not isinstance(content, list) or not content:
        raise RequestError(f"{where}: must be a string or a non-empty list of content parts")
    return [_part(part, f"{where}[{i}]", limits) for i, part in enumerate(content)]


def _part(part, where: str, limits: Limits | None):
    """A content part -> text (str) or Media. `limits` None: only text is allowed here."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return _check_text(part.get("text"), f"{where}.text")
    if limits is None or kind not in ("image_url", "video", "video_url", "voco_cache"):
        allowed = "text" if limits is None else "text, image_url, video, video_url or voco_cache"
        raise RequestError(f"{where}.type: {kind!r} is not a content part type here ({allowed})")
    num_voco = part.get("num_voco")
    if num_voco is not None and (kind == "voco_cache" or not _is_int(num_voco) or num_voco < 1):
        why = "a cache id has the K it was made with" if kind == "voco_cache" else "a positive integer is required"
        raise RequestError(f"{where}.num_voco: {num_voco!r}: {why}")
    media = _media(part, kind, where, limits)
    media.num_voco = num_voco
    return media


def _media(part: dict, kind: str, where: str, limits: Limits) -> Media:
    if kind == "voco_cache":
        cache_id = (part.get("voco_cache") or {}).get("id") if isinstance(part.get("voco_cache"), dict) else None
        if not isinstance(cache_id, str) or not KEY_PATTERN.fullmatch(cache_id):
            raise RequestError(f"{where}.voco_cache.id: not a cache id (64 hex digits from /v1/voco/compress)")
        return Media(where, "cache", cache_id=cache_id)
    if kind == "image_url":
        return Media(where, "image", parts=[read_url(_url(part, "image_url", where), f"{where}.image_url.url", limits)])
    if kind == "video":
        frames = part.get("video")
        if not isinstance(frames, list) or not frames or len(frames) > limits.max_frames:
            raise RequestError(f"{where}.video: a list of 1 to {limits.max_frames} frame URLs is required")
        urls = [(u if isinstance(u, str) else (u or {}).get("url") if isinstance(u, dict) else None) for u in frames]
        return Media(where, "video", parts=[read_url(u, f"{where}.video[{i}]", limits) for i, u in enumerate(urls)])
    spec = part.get("video_url") if isinstance(part.get("video_url"), dict) else {}
    num_frames = spec.get("num_frames", limits.num_frames)
    if not _is_int(num_frames) or not 1 <= num_frames <= limits.max_frames:
        raise RequestError(f"{where}.video_url.num_frames: {num_frames!r} is not from 1 to {limits.max_frames}")
    path = local_path(_url(part, "video_url", where), f"{where}.video_url.url", limits)
    frames = read_video(path, num_frames)
    for frame in frames:
        _check_pixels(frame, f"{where}.video_url", limits)
    # a decoded video is keyed by its frames' pixels: the file bytes do not say which frames were sampled
    parts = [f"{f.size}".encode() + f.tobytes() for f in frames]
    return Media(where, "video", parts=parts, images=frames)


def _url(part: dict, kind: str, where: str) -> str:
    spec = part.get(kind)
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise RequestError(f"{where}.{kind}.url: a URL string is required")
    return url


def read_url(url, where: str, limits: Limits) -> bytes:
    """The bytes of a data: URL, or of a local file under the allowed folder."""
    if not isinstance(url, str):
        raise RequestError(f"{where}: a URL string is required")
    if url.startswith("data:"):
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise RequestError(f"{where}: a data: URL must be base64 (data:image/png;base64,...)")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"{where}: the data: URL is not valid base64") from None
    path = local_path(url, where, limits)
    if not path.is_file():
        raise RequestError(f"{where}: {path} is not a file")
    if path.stat().st_size > limits.max_request_bytes:
        raise RequestError(f"{where}: {path} is larger than {limits.max_request_bytes:,} bytes", 413)
    return path.read_bytes()


def local_path(url: str, where: str, limits: Limits) -> Path:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https", "ftp", "s3", "gs"):
        raise RequestError(f"{where}: remote URLs are not fetched; send the image as a data: URL")
    if parsed.scheme != "file":
        raise RequestError(f"{where}: unsupported URL (use data:image/...;base64,... or file:///path)")
    if limits.allowed_local_media_path is None:
        raise RequestError(f"{where}: local files are refused (start the server with --allowed-local-media-path)", 403)
    path = Path(unquote(parsed.path)).resolve()  # resolved: a symlink or '..' cannot leave the folder
    if not path.is_relative_to(limits.allowed_local_media_path.resolve()):
        raise RequestError(f"{where}: {path} is outside --allowed-local-media-path", 403)
    if not path.exists():
        raise RequestError(f"{where}: {path} not found", 404)
    return path


def _check_pixels(image: Image.Image, where: str, limits: Limits) -> None:
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise RequestError(f"{where}: image is {width}x{height}, over the limit of {limits.max_image_pixels:,} pixels")


def decode_image(data: bytes, where: str, limits: Limits) -> Image.Image:
    """Image bytes -> RGB, the pixel count checked from the header before anything is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image, where, limits)
            return image.convert("RGB")
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(f"{where}: unreadable image ({err.__class__.__name__}: {err})") from None


def render_user(pieces: list, groups: dict[int, int]) -> str:
    """A user message's text: its pieces joined by newlines, each media piece as one `<image>` per
    group (`groups`: id(media) -> groups). [image, question] gives LLaVA's `<image>\\n{question}`,
    exactly the prompt `voco ask` builds."""
    return "\n".join(p if isinstance(p, str) else IMAGE_PLACEHOLDER * groups[id(p)] for p in pieces)
