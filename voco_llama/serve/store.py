"""The server's cache store: compressed images and videos by content key.

Key = sha256 of the server's identity (model fingerprint, K, image preprocessing) and the image
bytes (a video: its frames in order), so the same pixels sent twice, by anyone, hit the same
entry, and an entry made by another model or another K can never be found under a key of this one.

In memory, entries are kept least recently used first out while their bytes exceed the budget
(`--cache-memory`). With a folder (`--cache-dir`), each new entry is also written, by a background
thread, as `<key>.voco` in the VoCo cache file format (safetensors, sha256 checksum, model
fingerprint): a temp file, fsynced, renamed, then the folder fsynced; `durable(key)` is the write
/v1/voco/compress waits for before it returns an id, so a kill -9 loses no id a client was given.
With `--cache-dir-size`, the folder's files are kept least recently used first out too (recency:
the file's mtime, touched on every read, so it survives restarts). A key missing from memory is
looked up there; a file that fails its checksum or was made by another model is refused, counted
and removed, never used. One server holds a folder at a time (a lock file), so temp files left by a
killed writer are removed at start.

A miss is counted once per key until the key is stored: requests waiting for the same image
being compressed are one miss, not one each.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core.cache import VoCoCache
from ..core.errors import InputError

log = logging.getLogger("voco.serve")

KEY_PATTERN = re.compile(r"[0-9a-f]{64}")  # a sha256 hex digest: also what makes a key safe as a file name
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """'1GiB', '512MiB', '100MB', '4096' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*", text.lower())
    if not match:
        raise InputError(f"{text!r}: not a size (examples: 1GiB, 512MiB, 100MB, 4096)")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def size_arg(text: str) -> int:
    """argparse type of a size flag: a bad size is refused on the command line, in one line."""
    try:
        return parse_size(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def identity(fingerprint: str, num_voco: int, preprocessing: str) -> bytes:
    """What besides the pixels decides a cache's content; part of every key."""
    return hashlib.sha256(json.dumps([fingerprint, num_voco, preprocessing]).encode()).digest()


def content_key(server_identity: bytes, kind: str, parts: list[bytes]) -> str:
    """Key of an image (one part: its file bytes) or a video (one part per frame, in order)."""
    digest = hashlib.sha256(server_identity + kind.encode())
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


class CacheStore:
    """Entries (anything with `nbytes`; on disk only VoCoCache) by key; thread-safe.

    `get(key)` -> (entry, "memory" | "disk") or (None, None); `put(key, entry)`. The counters
    (`hits`, `misses`, `evictions`, `rejected`, `written`, `disk_evictions`) are read by the metrics."""

    MISSED_KEPT = 65_536  # keys remembered as missed (not stored yet): bounded, oldest forgotten

    def __init__(
        self,
        memory_bytes: int,
        fingerprint: str,
        directory: str | Path | None = None,
        directory_bytes: int | None = None,
    ):
        self.memory_bytes, self.fingerprint, self.directory_bytes = memory_bytes, fingerprint, directory_bytes
        self.entries: OrderedDict[str, object] = OrderedDict()
        self.resident_bytes = 0
        self.hits = {"memory": 0, "disk": 0}
        self.misses = self.evictions = self.rejected = self.written = self.disk_evictions = 0
        self._missed: OrderedDict[str, None] = OrderedDict()
        self._files: OrderedDict[str, int] = OrderedDict()  # key -> file bytes, least recently used first
        self.file_bytes = 0
        self._writes: dict[str, object] = {}  # key -> its write's Future, until it is done
        self._lock = threading.Lock()
        self.directory = Path(directory) if directory is not None else None
        self._writer = self._lock_file = None
        if self.directory is not None:
            self._open_directory()

    def _open_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / ".lock", "w")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise InputError(f"{self.directory}: cache folder is in use by another voco serve") from None
        # write_atomic's temp files (".<name>.<random>.tmp"): only a writer killed mid-write leaves one
        for stale in self.directory.glob(".*.voco.*.tmp"):
            stale.unlink(missing_ok=True)
            log.warning("%s: removed a cache file left half-written by a killed server", stale)
        files = [(p.stat().st_mtime_ns, p.name[:-5], p.stat().st_size) for p in self.directory.glob("*.voco")]
        for _, key, size in sorted(files):
            if KEY_PATTERN.fullmatch(key):
                self._files[key] = size
                self.file_bytes += size
        with self._lock:
            self._evict_files()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voco-cache-writer")

    @property
    def resident_count(self) -> int:
        return len(self.entries)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.voco"

    def get(self, key: str):
        with self._lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                self.hits["memory"] += 1
                return entry, "memory"
        entry = self._load(key) if self.directory is not None else None
        with self._lock:
            if entry is None:
                if key not in self._missed:  # one miss per key until it is stored
                    self.misses += 1
                    self._missed[key] = None
                    if len(self._missed) > self.MISSED_KEPT:
                        self._missed.popitem(last=False)
                return None, None
            self.hits["disk"] += 1
            self._keep(key, entry)
            if key in self._files:
                self._files.move_to_end(key)
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
            os.utime(self.path(key))  # its recency, for --cache-dir-size across restarts
        return entry, "disk"

    def peek(self, key: str):
        """The entry if it is in memory, without counting a hit or a miss (or making it recent)."""
        with self._lock:
            return self.entries.get(key)

    def _load(self, key: str):
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return VoCoCache.load(path, expected_fingerprint=self.fingerprint)
        except InputError as err:
            if not path.exists():  # evicted between the check and the read
                return None
            with self._lock:
                self.rejected += 1
                self.file_bytes -= self._files.pop(key, 0)
            log.warning("refused %s", err)
            path.unlink(missing_ok=True)  # rewritten, sound, the next time this content is compressed
            return None

    def put(self, key: str, entry) -> None:
        with self._lock:
            self._keep(key, entry)
            self._missed.pop(key, None)
            if self._writer is None or key in self._files or key in self._writes:
                return
            if self.directory_bytes is not None and entry.nbytes > self.directory_bytes:
                return  # larger than the whole folder budget: kept in memory only
            self._writes[key] = self._writer.submit(self._write, key, entry)

    def durable(self, key: str):
        """The pending write of this key's file (a concurrent Future), or None when there is none
        (written already, or no folder)."""
        with self._lock:
            return self._writes.get(key)

    def _write(self, key: str, entry: VoCoCache) -> None:
        try:
            path = entry.save(self.path(key))  # a temp file, fsynced, then renamed
            folder = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself is durable
            finally:
                os.close(folder)
            with self._lock:
                self.written += 1
                self._files[key] = path.stat().st_size
                self.file_bytes += self._files[key]
                self._evict_files(keep=key)
        finally:
            with self._lock:
                self._writes.pop(key, None)

    def _evict_files(self, keep: str | None = None) -> None:
        """Remove least recently used files while the folder is over --cache-dir-size (lock held)."""
        while self.directory_bytes is not None and self.file_bytes > self.directory_bytes and len(self._files) > 1:
            key = next(iter(self._files))
            if key == keep:
                break
            self.file_bytes -= self._files.pop(key)
            self.path(key).unlink(missing_ok=True)
            self.disk_evictions += 1

    def _keep(self, key: str, entry) -> None:
        """Insert as most recent, then drop least recent entries while over budget (lock held)."""
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        if entry.nbytes > self.memory_bytes:
            return  # larger than the whole budget: serves its request (and goes to disk), never resident
        self.entries[key] = entry
        self.resident_bytes += entry.nbytes
        while self.resident_bytes > self.memory_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.resident_bytes -= dropped.nbytes
            self.evictions += 1

    def flush(self) -> None:
        """Wait until every queued disk write is done."""
        if self._writer is not None:
            self._writer.submit(lambda: None).result()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None
