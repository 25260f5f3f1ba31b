"""Writing files so that a crash never leaves a half-written one: temp file in the same folder,
then an atomic rename. Every writer of results, caches and worlds goes through here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` via a temp file and `os.replace`; the folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data, indent: int | None = 2) -> None:
    """Strict JSON (no NaN), UTF-8 as is."""
    write_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
