"""The one error type users see: `InputError` (bad input: a missing or unreadable file, a record
or field that is wrong, a cache made by another model, a flag out of range). The `voco` command
turns it into one line on stderr and exit code 2 (cli.py); every user-facing failure derives from it.

`positive_int` / `positive_float` are the argparse types of counts and rates: 0 or less is refused
on the command line instead of silently meaning "the default" somewhere below."""

from __future__ import annotations

import argparse


class InputError(ValueError):
    """Bad user input, named in the message (file, record or field): exit code 2."""


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
