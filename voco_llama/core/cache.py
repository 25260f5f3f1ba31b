"""`VoCoCache`: the compressed form of images or video frames, and its file format.

For each compression group (an image or a frame) it keeps only the K VoCo tokens' per-layer keys
and values; the N vision tokens' K/V are never kept. Keys are stored rotated (RoPE) at the
positions the group was compressed at (`positions`); the model re-rotates them to wherever the
group is placed in a prompt, which is exact because an isolated group is translation invariant.

File: safetensors with `keys.{layer}` / `values.{layer}` tensors [groups, kv_heads, K, head_dim]
and string metadata (format, K, N, dtype, layout, model fingerprint, positions, sha256 of the
tensor bytes). Saving is atomic (temp file + rename); loading checks the checksum, so a truncated
or corrupted file is refused whole, and checks the fingerprint against the model it is used with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .errors import InputError
from .files import write_atomic

FORMAT = "voco-cache/1"


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
                raise InputError("cannot concatenate caches made by different models or with different K")
        return replace(
            first,
            keys=[torch.cat(layer, dim=0) for layer in zip(*(c.keys for c in caches))],
            values=[torch.cat(layer, dim=0) for layer in zip(*(c.values for c in caches))],
        )

    def to(self, device=None, dtype=None) -> VoCoCache:
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, keys=[move(k) for k in self.keys], values=[move(v) for v in self.values])

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            tensors[f"keys.{i}"] = k.detach().contiguous().cpu()
            tensors[f"values.{i}"] = v.detach().contiguous().cpu()
        return tensors

    @staticmethod
    def _checksum(tensors: dict[str, torch.Tensor]) -> str:
        digest = hashlib.sha256()
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = self._tensors()
        metadata = {
            "format": FORMAT,
            "num_voco": str(self.num_voco),
            "num_vision": str(self.num_vision),
            "num_groups": str(self.num_groups),
            "num_layers": str(self.num_layers),
            "dtype": str(self.dtype).removeprefix("torch."),
            "layout": self.layout,
            "positions": json.dumps(self.positions),
            "fingerprint": self.fingerprint,
            "sha256": self._checksum(tensors),
        }
        write_atomic(path, safetensors_bytes(tensors, metadata=metadata))
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
            raise InputError(f"{path}: not a VoCo cache file (format {meta.get('format')!r})")
        if cls._checksum(tensors) != meta.get("sha256"):
            raise InputError(f"{path}: VoCo cache is corrupted (checksum mismatch)")
        if expected_fingerprint is not None and meta["fingerprint"] != expected_fingerprint:
            raise InputError(
                f"{path}: cache was made by a different model (fingerprint {meta['fingerprint'][:12]}, "
                f"this model {expected_fingerprint[:12]})"
            )
        layers = int(meta["num_layers"])
        return cls(
            keys=[tensors[f"keys.{i}"] for i in range(layers)],
            values=[tensors[f"values.{i}"] for i in range(layers)],
            positions=json.loads(meta["positions"]),
            num_vision=int(meta["num_vision"]),
            fingerprint=meta["fingerprint"],
            layout=meta["layout"],
        )
