"""Writing files so that a crash never leaves a half-written one: temp file in the same folder,
then an atomic rename. Every writer of results, caches and worlds goes through here. A path that
cannot be written (a folder, a read-only place) is an `InputError` naming it, and the `check_*`
functions say so before any work is done, and refuse to write over a folder that holds something."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from .errors import InputError


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` via a temp file and `os.replace`; the folder is created if needed."""
    path = Path(path)
    check_file_target(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are as readable as any file
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise InputError(f"{path}: cannot write ({err.strerror or err})") from None
        raise


def check_file_target(path: str | Path) -> None:
    """`path` can become a file: it is not a folder and its nearest existing folder is writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    _check_writable_parent(path)


def check_folder_target(path: str | Path, overwrite: bool = True) -> None:
    """`path` can become (or is) a folder to write into; unless `overwrite`, it must not hold anything."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file; give a folder")
    if not overwrite and path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path}: folder is not empty; pass --overwrite to write over what it holds")
    _check_writable_parent(path / "x", shown=path)


def _check_writable_parent(path: Path, shown: Path | None = None) -> None:
    """The nearest existing folder above `path` is a writable folder; errors name `shown` (or `path`)."""
    shown = path if shown is None else shown
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{shown}: cannot write ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{shown}: cannot write ({parent} is not writable)")


def write_json_atomic(path: str | Path, data, indent: int | None = 2) -> None:
    """Strict JSON (no NaN), UTF-8 as is."""
    write_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png(path: str | Path, fig, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (`write_atomic`) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    write_atomic(path, buffer.getvalue())
    return Path(path)
