"""The `voco` command. Each verb lives in its own module, which adds its parser with
`register_cli(subparsers)` and runs as `args.func(args) -> exit code`:

  init, convert, compress, ask, chat    apps/           (using the model)
  serve                                 apps/ + serve/  (the OpenAI-compatible server)
  train, data check                     train/          (VoCo instruction tuning, data checks)
  eval, score, retention, submit        eval/           (benchmarks and the retention rate)
  bench, bench-train, bench-serve       bench/          (what compression costs and saves)
  demo                                  demo/           (the paper's tables on a synthetic world)

This is the one place where bad input becomes an exit code: any `InputError` (a missing or
unreadable file, a bad record or field, a cache from another model, a bad flag) prints one line on
stderr, `voco: error: ...`, and exits with code 2; Ctrl-C prints one line, `voco: interrupted...`,
and exits with code 130.

Only the module of the verb that runs is imported (`VERBS`), so `voco --help` and every verb start
without paying for the others' imports. Every parser is a `VocoArgumentParser`: help shows each
flag's default, and a flag answers to both `--num-voco` and `--num_voco` (the help shows the
spelling its verb declares).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import version

from .core.errors import InputError

# verb -> (the module whose `register_cli` adds it, the line `voco --help` shows for it)
VERBS = {
    "init": ("apps.init", "a randomly initialised model from a preset"),
    "convert": ("apps.convert", "an original-LLaVA or llava-hf checkpoint -> a VoCo model"),
    "compress": ("apps.compress", "images or a video -> VoCo cache file(s)"),
    "ask": ("apps.ask", "answer a question about an image, a video or a cache"),
    "chat": ("apps.chat", "a multi-turn conversation about one image or video"),
    "serve": ("apps.serve", "an OpenAI-compatible server answering from VoCo caches"),
    "train": ("train.finetune", "VoCo visual instruction tuning (LLaVA-1.5's flags, on transformers.Trainer)"),
    "data": ("train.data", "training data tools (data check)"),
    "eval": ("eval.evaluate", "answer a LLaVA question file (LLaVA answer-file format)"),
    "score": ("eval.score", "score a benchmark answer file as LLaVA-1.5's scripts do"),
    "retention": ("eval.score", "compression retention (method - lower) / (upper - lower)"),
    "submit": ("eval.submit", "a benchmark server's submission file from a LLaVA answer file"),
    "bench": ("bench.inference", "Table 7: no cache vs full caching vs VoCo caching, measured"),
    "bench-train": ("bench.train", "step time and peak memory of a training step: VoCo rule vs causal"),
    "bench-serve": ("bench.serve", "serving throughput and latency: VoCo cache vs full-token K/V vs no cache"),
    "demo": ("demo.command", "the project's main job: the paper's Tables 1 and 2 at toy scale"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, unless it is an uninformative None/False or the help
    already states it."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _other_spelling(option: str) -> str | None:
    body = option[2:] if option.startswith("--") else ""
    if "-" in body:
        return "--" + body.replace("-", "_")
    if "_" in body:
        return "--" + body.replace("_", "-")
    return None


class VocoArgumentParser(argparse.ArgumentParser):
    """The parser of `voco` and of every verb (subparsers inherit the class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # The other spelling of each flag parses as the flag itself; it stays out of the help.
        for action in self._actions:
            for option in action.option_strings:
                other = _other_spelling(option)
                if other is not None:
                    self._option_string_actions.setdefault(other, action)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        # argparse would print the usage and exit; a bad flag is bad input like any other: one line
        verb = self.prog.removeprefix("voco").strip()
        raise InputError(f"{verb}: {message}" if verb else message)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The `voco` parser, with `verb`'s own parser; every other verb is a help line only."""
    parser = VocoArgumentParser(prog="voco", description="VoCo-LLaMA vision compression for LLaVA models")
    parser.add_argument("--version", action="version", version=f"voco {version('voco-llama')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB", title="verbs")
    module = VERBS[verb][0] if verb in VERBS else None
    for name, (owner, help_line) in VERBS.items():
        if owner != module:
            sub.add_parser(name, help=help_line, add_help=False)
    if module is not None:
        importlib.import_module(f".{module}", __package__).register_cli(sub)
    return parser


def _quiet_weight_loading() -> None:
    """transformers' weight-loading bars of tiny models are noise (ours use tqdm): through the
    environment for a transformers imported later, directly for one a caller imported already."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)  # `voco` itself has no valued options
    try:
        args = build_parser(verb).parse_args(argv)
        _quiet_weight_loading()
        result = args.func(args)
    except InputError as err:
        print(f"voco: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:  # Ctrl-C: one line (an `Interrupted` says what was kept), not a traceback
        print(f"voco: interrupted: {stop}" if str(stop) else "voco: interrupted", file=sys.stderr)
        return 130
    except SystemExit as done:  # --help, --version (and `voco train`'s own parser): a code, not an exit
        return done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
