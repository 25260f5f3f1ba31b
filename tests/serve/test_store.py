"""The cache store: LRU by bytes in memory and in the folder (--cache-dir-size), reload from disk,
refusal of torn or foreign files; a cache id is returned only once its file is durable, so kill -9
at any point loses no id a client was given."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest
import torch

from tests.serve.kit import QUESTIONS, http, image_part, metric, noise_image, start_process, user
from voco_llama.cli import main
from voco_llama.core.cache import VoCoCache
from voco_llama.core.errors import InputError
from voco_llama.core.pipeline import VoCoPipeline
from voco_llama.core.presets import build_model
from voco_llama.serve.store import CacheStore


def test_store_lru_by_bytes_disk_reload_and_refusals(tmp_path):
    pipe = VoCoPipeline(*build_model("tiny"))
    caches = pipe.compress([noise_image(s) for s in range(4)])
    one = caches[0].nbytes
    store = CacheStore(2 * one, pipe.model.fingerprint(), tmp_path / "c")
    keys = [f"{i:064x}" for i in range(4)]
    for i in range(3):
        store.put(keys[i], caches[i])
    assert store.resident_count == 2 and store.resident_bytes == 2 * one and store.evictions == 1
    assert store.peek(keys[0]) is None  # least recent: out of memory ...
    store.flush()
    entry, tier = store.get(keys[0])  # ... and found on disk, checksum and fingerprint checked
    assert tier == "disk" and torch.equal(entry.keys[0], caches[0].keys[0])
    with pytest.raises(InputError, match="in use"):
        CacheStore(one, "x", tmp_path / "c")
    store.close()
    # a torn file, a file of another model and a leftover temp file are never used
    folder = tmp_path / "c"
    data = (folder / f"{keys[1]}.voco").read_bytes()
    (folder / f"{keys[1]}.voco").write_bytes(data[: len(data) // 2])
    VoCoCache.save(VoCoPipeline(*build_model("tiny", seed=1)).compress([noise_image(9)]), folder / f"{keys[2]}.voco")
    (folder / f".{keys[3]}.voco.abc.tmp").write_bytes(data[:10])
    store = CacheStore(2 * one, pipe.model.fingerprint(), folder)
    assert not list(folder.glob("*.tmp"))
    assert store.get(keys[1]) == (None, None) and store.get(keys[2]) == (None, None)
    assert store.rejected == 2 and not (folder / f"{keys[1]}.voco").exists()
    assert store.get(keys[0])[1] == "disk"
    store.put(keys[3], caches[3])  # bigger than the budget entries still serve, never resident
    small = CacheStore(one - 1, pipe.model.fingerprint())
    small.put(keys[0], caches[0])
    assert small.resident_count == 0
    store.close()


def test_kill9_while_writing_caches_then_restart(model_dir, pipe, tmp_path, media):
    """Clients compress new images while the server is killed -9 mid-write: after the restart every
    id they were given answers; torn and foreign files are refused, the temp file is gone."""
    cache_dir = tmp_path / "caches"
    folder, images = media
    process, url = start_process(model_dir, cache_dir, folder)
    try:
        ids = [http(url + "/v1/voco/compress", image_part(images[i]), key=None)[1]["id"] for i in range(3)]
        while len(list(cache_dir.glob("*.voco"))) < 3:
            time.sleep(0.01)
        stop, acknowledged = threading.Event(), []

        def storm(worker: int):  # new images, compressed and written one after another
            for n in range(10_000):
                if stop.is_set():
                    return
                try:
                    status, made = http(
                        url + "/v1/voco/compress", image_part(noise_image(1000 + worker * 10_000 + n)), key=None
                    )
                except OSError:
                    return
                assert status == 200
                acknowledged.append(made["id"])  # the client was given this id

        threads = [threading.Thread(target=storm, args=(w,), daemon=True) for w in range(3)]
        for t in threads:
            t.start()
        caught, deadline = False, time.monotonic() + 20
        while not caught and time.monotonic() < deadline:
            caught = len(acknowledged) >= 10 and any(name.endswith(".tmp") for name in os.listdir(cache_dir))
        process.send_signal(signal.SIGKILL)  # mid-write when caught: its temp file is there
        process.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert caught, "no write was in flight in 20 s"
    finally:
        if process.poll() is None:
            process.kill()
    fingerprint = pipe.model.fingerprint()
    for path in cache_dir.glob("*.voco"):  # whatever the kill interrupted, no cache file is torn
        VoCoCache.load(path, expected_fingerprint=fingerprint)
    # plant a torn file and another model's file under two known ids
    torn = cache_dir / f"{ids[1]}.voco"
    torn.write_bytes(torn.read_bytes()[:-100])
    shutil.copy(cache_dir / f"{ids[0]}.voco", tmp_path / "good.voco")
    VoCoPipeline(*build_model("tiny", seed=1)).compress([images[2]]).save(cache_dir / f"{ids[2]}.voco")
    process, url = start_process(model_dir, cache_dir, folder)
    try:
        assert not list(cache_dir.glob(".*.tmp"))  # the killed writer's temp file is gone
        for made in acknowledged:  # every id a client was given before the kill answers after it
            part = {"type": "voco_cache", "voco_cache": {"id": made}}
            body = {"max_tokens": 1, "messages": user(part, "q")}
            assert http(url + "/v1/chat/completions", body, key=None)[0] == 200, made
        expected = pipe.ask(QUESTIONS[0], images=[images[0]], max_new_tokens=6).text
        chat = {"model": "tiny", "max_tokens": 6}
        part = {"type": "voco_cache", "voco_cache": {"id": ids[0]}}
        status, body = http(url + "/v1/chat/completions", {**chat, "messages": user(part, QUESTIONS[0])}, key=None)
        assert status == 200 and body["choices"][0]["message"]["content"] == expected  # kept across the restart
        for bad in ids[1:]:
            part = {"type": "voco_cache", "voco_cache": {"id": bad}}
            status, body = http(url + "/v1/chat/completions", {**chat, "messages": user(part, "q")}, key=None)
            assert status == 404, body
        expected = pipe.ask(QUESTIONS[1], images=[images[1]], max_new_tokens=6).text
        messages = user(image_part(images[1]), QUESTIONS[1])  # the torn one's image, sent again: recompressed
        status, body = http(url + "/v1/chat/completions", {**chat, "messages": messages}, key=None)
        assert status == 200 and body["choices"][0]["message"]["content"] == expected
        metrics = http(url + "/metrics", key=None)[1]
        assert metric(metrics, "voco_cache_rejected_total") == 2 and metric(metrics, "voco_cache_hits_total") >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_cache_dir_size_keeps_the_least_recently_used_out(tmp_path):
    pipe = VoCoPipeline(*build_model("tiny"))
    caches = [pipe.compress([noise_image(s)]) for s in range(5)]
    folder, keys = tmp_path / "c", [f"{i:064x}" for i in range(5)]
    store = CacheStore(1, pipe.model.fingerprint(), folder)  # memory: nothing resident, all from disk
    store.put(keys[0], caches[0])
    store.flush()
    size = (folder / f"{keys[0]}.voco").stat().st_size
    store.close()
    store = CacheStore(1, pipe.model.fingerprint(), folder, directory_bytes=int(2.5 * size))
    assert store.file_bytes == size
    for i in (1, 2):
        store.put(keys[i], caches[i])
        assert store.durable(keys[i]) is not None  # written in the background: /v1/voco/compress waits on it
        store.durable(keys[i]).result()
        assert store.durable(keys[i]) is None and (folder / f"{keys[i]}.voco").is_file()
    on_disk = lambda: sorted(p.name[:-5] for p in folder.glob("*.voco"))  # noqa: E731
    assert on_disk() == [keys[1], keys[2]] and store.disk_evictions == 1  # the oldest went
    time.sleep(0.01)
    assert store.get(keys[1])[1] == "disk"  # read: now the most recent (its mtime touched)
    store.close()
    store = CacheStore(1, pipe.model.fingerprint(), folder, directory_bytes=int(2.5 * size))  # order survives
    store.put(keys[3], caches[3])
    store.flush()
    assert on_disk() == [keys[1], keys[3]] and store.file_bytes == 2 * size
    store.close()
    tiny = CacheStore(1, pipe.model.fingerprint(), tmp_path / "t", directory_bytes=caches[4].nbytes - 1)
    tiny.put(keys[4], caches[4])  # larger than the whole folder: never written
    tiny.flush()
    assert not list((tmp_path / "t").glob("*.voco")) and tiny.durable(keys[4]) is None
    tiny.close()


def test_cache_dir_size_needs_cache_dir(model_dir, capsys):
    assert main(["serve", "--model", str(model_dir), "--port", "0", "--cache-dir-size", "1MiB"]) == 2
    assert capsys.readouterr().err.strip() == "voco: error: --cache-dir-size: needs --cache-dir (the folder it bounds)"
