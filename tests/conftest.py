"""Shared fixtures. Tiny models come from one builder, `voco_llama.core.presets.build_model("tiny",
**overrides)` (nothing is downloaded); tests call it directly when they need a model in memory.

`tiny_model_dir(**overrides)` saves one such bundle (model + tokenizer + image processor) once per
test session and returns its folder, for tests that load a model the way users do: read-only.
"""

from __future__ import annotations

import pytest

from voco_llama.core.presets import build_model, save_bundle


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    saved = {}

    def directory(**overrides):
        key = tuple(sorted(overrides.items()))
        if key not in saved:
            name = "tiny-" + "-".join(f"{k}={v}" for k, v in key) if key else "tiny"
            saved[key] = save_bundle(tmp_path_factory.mktemp("models") / name, *build_model("tiny", **overrides))
        return saved[key]

    return directory


def interrupt_voco(argv: list[str], ready, timeout: float = 600.0) -> tuple[int, str]:
    """Run `voco ARGV` in a subprocess, press Ctrl-C (SIGINT) once `ready()` holds; (exit code, stderr)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "voco_llama.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a background job (CI, `make test &`) starts with SIGINT ignored, and Python keeps it so
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"finished before Ctrl-C: {proc.stderr.read()[-2000:]}"
    if not ready():
        proc.kill()
        raise AssertionError(f"not ready after {timeout:g} s: {proc.communicate()[1][-2000:]}")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err
