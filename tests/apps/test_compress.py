"""`voco compress --images`: resumable, but only over caches this model could use."""

from __future__ import annotations

from PIL import Image

from voco_llama.cli import main
from voco_llama.core.cache import VoCoCache
from voco_llama.core.pipeline import VoCoPipeline


def test_stale_or_damaged_caches_are_compressed_again(tmp_path, tiny_model_dir, capsys):
    # K=1 by default, trained for K in {1, 2}: a file made at K=2 is a usable cache, but not a K=1 one
    model, other = str(tiny_model_dir(num_voco_choices=(1, 2))), str(tiny_model_dir(seed=1))
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 30), (60 * i, 100, 200 - 40 * i)).save(images / f"{i}.png")
    out = tmp_path / "caches"
    run = ["compress", "--images", str(images), "--out", str(out)]
    assert main(["compress", "--model", other, *run[1:]]) == 0  # all four made by another model
    truncated = (out / "1.png.voco").read_bytes()
    assert main(["compress", "--model", model, "--images", str(images / "0.png"), "--out", str(out)]) == 0
    (out / "1.png.voco").write_bytes(truncated[: len(truncated) // 2])
    assert (
        main(["compress", "--model", model, "--images", str(images / "2.png"), "--out", str(out), "--num-voco", "2"])
        == 0
    )
    capsys.readouterr()

    assert main(["compress", "--model", model, *run[1:]]) == 0
    captured = capsys.readouterr()
    assert f"{out}: 3 compressed, 1 already done, 0 unreadable" in captured.out
    assert "voco: redoing " + str(out / "1.png.voco") + ": not a readable VoCo cache file" in captured.err
    assert "3.png.voco: cache was made by a different model" in captured.err
    assert "2.png.voco: made with K=2, not 1" in captured.err
    pipe = VoCoPipeline.from_pretrained(model)
    fingerprint = pipe.model.fingerprint()
    for i in range(4):  # every file now loads as this model's cache, equal to compressing afresh
        cache = VoCoCache.load(out / f"{i}.png.voco", expected_fingerprint=fingerprint)
        fresh = pipe.compress([images / f"{i}.png"])
        assert all((a - b).abs().max() < 1e-6 for a, b in zip(cache.keys + cache.values, fresh.keys + fresh.values))
    assert main(["compress", "--model", model, *run[1:]]) == 0
    assert "0 compressed, 4 already done" in capsys.readouterr().out


def test_ctrl_c_is_one_line_saying_what_was_kept_exit_130(tmp_path, tiny_model_dir):
    from ..conftest import interrupt_voco

    images, out = tmp_path / "imgs", tmp_path / "caches"
    images.mkdir()
    n = 400  # far more than get compressed before the signal
    for i in range(n):
        Image.new("RGB", (40, 30), (i % 256, 100, 50)).save(images / f"{i:03d}.png")

    def two_written():
        return out.is_dir() and sum(p.suffix == ".voco" for p in out.iterdir()) >= 2

    argv = ["compress", "--model", str(tiny_model_dir()), "--images", str(images), "--out", str(out)]
    code, err = interrupt_voco([*argv, "--batch-size", "1"], two_written)
    kept = sorted(out.glob("*.voco"))
    assert code == 130
    assert err.splitlines() == [
        f"voco: interrupted: {out}: {len(kept)} of {n} images compressed and kept; the same command resumes"
    ], err
    assert 2 <= len(kept) < n
    fingerprint = VoCoPipeline.from_pretrained(tiny_model_dir()).model.fingerprint()
    for path in kept:  # every file left is a whole cache
        VoCoCache.load(path, expected_fingerprint=fingerprint)
