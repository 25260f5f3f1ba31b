"""The `voco` command. Each verb lives in its own module, which adds its parser with
`register_cli(subparsers)` and runs as `args.func(args) -> exit code`:

  init, convert, compress, ask, chat    apps/           (using the model)
  train, data check                     train/          (VoCo instruction tuning, data checks)
  eval, score, retention                eval/           (benchmarks and the retention rate)
  bench, bench-train                    bench/          (what compression costs and saves)
  demo                                  demo/           (the paper's tables on a synthetic world)

This is the one place where bad input becomes an exit code: any `InputError` (a missing or
unreadable file, a bad record or field, a cache from another model) prints one line on stderr,
`voco: error: ...`, and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .core.errors import InputError

VERB_MODULES = (
    "apps.init",
    "apps.convert",
    "apps.compress",
    "apps.ask",
    "apps.chat",
    "train.finetune",
    "train.data",
    "eval.evaluate",
    "eval.score",
    "bench.inference",
    "bench.train",
    "demo.image",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voco", description="VoCo-LLaMA vision compression for LLaVA models")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in VERB_MODULES:
        importlib.import_module(f".{module}", __package__).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars of tiny models are noise; ours use tqdm
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except InputError as err:
        print(f"voco: error: {err}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
