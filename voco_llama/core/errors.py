"""The one error type users see: `InputError` (bad input: a missing or unreadable file, a record
or field that is wrong, a cache made by another model, a flag out of range). The `voco` command
turns it into one line on stderr and exit code 2 (cli.py); every user-facing failure derives from it.
`Interrupted` is Ctrl-C with a line saying what was kept (exit code 130).

`positive_int` / `positive_float` are the argparse types of counts and rates: 0 or less is refused
on the command line instead of silently meaning "the default" somewhere below; `non_negative_float`
that of a temperature (0 is greedy)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """Bad user input, named in the message (file, record or field): exit code 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a verb that keeps its work: the message says what was kept and how to resume. The
    `voco` command prints it as one line, `voco: interrupted: ...`, and exits with code 130 (a bare
    KeyboardInterrupt gets `voco: interrupted`)."""


@contextmanager
def interruptible_progress(total: int, desc: str, unit: str, kept: Callable[[], str]) -> Iterator:
    """A progress bar (on a terminal only) around work that keeps what it did: Ctrl-C becomes
    `Interrupted` with the line `kept()` gives (what was kept, how to resume), and on any early stop
    the bar is wiped, so an error stays one line."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=None)
    try:
        yield bar
    except KeyboardInterrupt:
        bar.leave = False
        raise Interrupted(kept()) from None
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()


def positive_int(text: str) -> int:
    value = int(text)  # not a number: argparse says "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a sampling temperature: 0 is greedy); -1, nan and inf are refused."""
    value = float(text)  # not a number: argparse says "invalid non_negative_float value"
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value
