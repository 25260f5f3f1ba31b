"""The one error type users see: `InputError` (bad input: a missing or unreadable file, a record
or field that is wrong, a cache made by another model, a flag out of range). The `voco` command
turns it into one line on stderr and exit code 2 (cli.py); every user-facing failure derives from it."""


class InputError(ValueError):
    """Bad user input, named in the message (file, record or field): exit code 2."""
