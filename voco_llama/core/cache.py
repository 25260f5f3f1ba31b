"""`VoCoCache`: the compressed form of images or video frames, and its file format.

For each compression group (an image or a frame) it keeps only the K VoCo tokens' per-layer keys
and values; the N vision tokens' K/V are never kept. Keys are stored rotated (RoPE) at the
positions the group was compressed at (`positions`); the model re-rotates them to wherever the
group is placed in a prompt, which is exact because an isolated group is translation invariant.

File: safetensors with `keys.{layer}` / `values.{layer}` tensors [groups, kv_heads, K, head_dim]
and string metadata (format, K, N, dtype, layout, model fingerprint, positions, and a sha256 of the
rest of the header and the tensor bytes). Saving is atomic (temp file + rename); loading checks
every header field, the checksum (so a truncated, corrupted or edited file is refused whole: an
edited `positions` would silently change answers) and the fingerprint against the model it is used with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .attention import LAYOUTS
from .errors import InputError
from .files import write_atomic

# /2: the checksum covers the header as well as the tensors. /1 files (tensors only) are refused
# rather than trusted: their header could have been edited unnoticed, and compressing again is cheap.
FORMAT = "voco-cache/2"
# header field -> how its string parses
_FIELDS = {
    "num_voco": int,
    "num_vision": int,
    "num_groups": int,
    "num_layers": int,
    "dtype": str,
    "layout": str,
    "positions": json.loads,
    "fingerprint": str,
}
# a cache's layout: one of the position layouts, or the reference code's (attention.VOCO_LAYOUTS)
CACHE_LAYOUTS = (*LAYOUTS, "reference")


def kv_bytes(config, tokens: int, bytes_per_value: int = 4) -> int:
    """K/V bytes of `tokens` tokens over every layer of the language model:
    layers x 2 (K and V) x kv_heads x head_dim x tokens x bytes."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * tokens * bytes_per_value


@dataclass
class VoCoCache:
    keys: list[torch.Tensor]  # per layer [groups, kv_heads, K, head_dim]
    values: list[torch.Tensor]
    positions: list[int]  # the K positions the keys were rotated at
    num_vision: int  # N vision tokens each group stood for (natural positions leave room for them)
    fingerprint: str  # of the model that made it
    layout: str = "compact"

    @property
    def num_groups(self) -> int:
        return self.keys[0].shape[0]

    @property
    def num_voco(self) -> int:
        return self.keys[0].shape[2]

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def __len__(self) -> int:
        return self.num_groups

    def __getitem__(self, index) -> VoCoCache:
        """Select groups (an int, slice or index list); keeps the group dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return replace(self, keys=[k[index] for k in self.keys], values=[v[index] for v in self.values])

    @staticmethod
    def cat(caches: list[VoCoCache]) -> VoCoCache:
        """Groups of several caches in order (the frames of a video, the images of a prompt)."""
        first = caches[0]
        for other in caches[1:]:
            if (other.fingerprint, other.positions, other.num_vision) != (
                first.fingerprint,
                first.positions,
                first.num_vision,
            ):
                raise InputError(
                    "cannot concatenate caches made by different models or with different K "
                    "(caches of different K go into a prompt as a list)"
                )
        return replace(
            first,
            keys=[torch.cat(layer, dim=0) for layer in zip(*(c.keys for c in caches))],
            values=[torch.cat(layer, dim=0) for layer in zip(*(c.values for c in caches))],
        )

    def to(self, device=None, dtype=None) -> VoCoCache:
        move = lambda t: t.to(device=device, dtype=dtype)
        return replace(self, keys=[move(k) for k in self.keys], values=[move(v) for v in self.values])

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            tensors[f"keys.{i}"] = k.detach().contiguous().cpu()
            tensors[f"values.{i}"] = v.detach().contiguous().cpu()
        return tensors

    @staticmethod
    def _checksum(header: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
        digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors = self._tensors()
        header = {
            "format": FORMAT,
            "num_voco": str(self.num_voco),
            "num_vision": str(self.num_vision),
            "num_groups": str(self.num_groups),
            "num_layers": str(self.num_layers),
            "dtype": str(self.dtype).removeprefix("torch."),
            "layout": self.layout,
            "positions": json.dumps(self.positions),
            "fingerprint": self.fingerprint,
        }
        write_atomic(path, safetensors_bytes(tensors, metadata={**header, "sha256": self._checksum(header, tensors)}))
        return path

    @classmethod
    def load(cls, path: str | Path, expected_fingerprint: str | None = None) -> VoCoCache:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: cache file not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise InputError(f"{path}: not a readable VoCo cache file ({err})") from None
        if meta.get("format") != FORMAT:
            older = str(meta.get("format", "")).startswith("voco-cache/")
            raise InputError(
                f"{path}: VoCo cache of format {meta['format']!r}, this version reads {FORMAT!r}; compress again"
                if older
                else f"{path}: not a VoCo cache file (format {meta.get('format')!r})"
            )
        header = _parse_header(path, meta)
        if cls._checksum({k: v for k, v in meta.items() if k != "sha256"}, tensors) != meta.get("sha256"):
            raise InputError(f"{path}: VoCo cache is corrupted or edited (checksum mismatch)")
        if expected_fingerprint is not None and header["fingerprint"] != expected_fingerprint:
            raise InputError(
                f"{path}: cache was made by a different model (fingerprint {header['fingerprint'][:12]}, "
                f"this model {expected_fingerprint[:12]})"
            )
        layers = range(header["num_layers"])
        names = {f"{kind}.{i}" for kind in ("keys", "values") for i in layers}
        groups_k = (header["num_groups"], header["num_voco"])
        if set(tensors) != names or any(t.dim() != 4 or (t.shape[0], t.shape[2]) != groups_k for t in tensors.values()):
            raise InputError(f"{path}: VoCo cache tensors do not match its header")
        return cls(
            keys=[tensors[f"keys.{i}"] for i in layers],
            values=[tensors[f"values.{i}"] for i in layers],
            positions=header["positions"],
            num_vision=header["num_vision"],
            fingerprint=header["fingerprint"],
            layout=header["layout"],
        )


def _parse_header(path: Path, meta: dict[str, str]) -> dict:
    """The typed header fields; a missing or malformed one is named."""
    header = {}
    for name, parse in _FIELDS.items():
        if name not in meta:
            raise InputError(f"{path}: VoCo cache header has no {name!r} field")
        try:
            header[name] = parse(meta[name])
        except ValueError:
            raise InputError(f"{path}: VoCo cache header field {name!r} is malformed ({meta[name][:40]!r})") from None
    positions = header["positions"]
    if not (isinstance(positions, list) and all(type(p) is int for p in positions)):
        raise InputError(f"{path}: VoCo cache header field 'positions' is not a list of integers")
    if len(positions) != header["num_voco"] or header["layout"] not in CACHE_LAYOUTS:
        raise InputError(f"{path}: VoCo cache header is inconsistent (positions, num_voco, layout)")
    return header


def cache_list(cache: VoCoCache | list[VoCoCache] | None) -> list[VoCoCache]:
    """The caches of a prompt, in order: one cache, or a list of them (they may differ in K)."""
    if cache is None:
        return []
    return list(cache) if isinstance(cache, list) else [cache]


def group_num_voco(cache: VoCoCache | list[VoCoCache]) -> list[int]:
    """K of every group (image, frame) of one cache or of a list of caches, in order."""
    return [c.num_voco for c in cache_list(cache) for _ in range(c.num_groups)]
