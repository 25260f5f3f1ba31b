"""`voco score BENCH` and `voco retention`.

``voco score BENCH --answers-file F --annotation-file A [--extra-file P] [--out S.json]`` and
``voco retention --upper U.json --lower L.json --method NAME=M.json [...] [--out R.json]``.
Handlers follow the package convention ``args.func(args) -> exit code``: 0 on success; on bad
input (missing/unreadable file, bad JSON, an answer not in the key, ...) they raise an
``InputError``, which the `voco` command prints as one ``voco: error: ...`` line, exit 2 (cli.py).
Output JSON is written atomically.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from ..core.errors import InputError
from ..core.files import write_json_atomic
from .answers import ScoringError, ScoringWarning
from .retention import bench_order, load_scores, retention_report
from .scorers import DISPLAY_NAMES, SCORERS, score, scorer

# ---- what the verbs print ------------------------------------------------------------------


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def format_table(summary: dict) -> str:
    """A score() summary as plain text with a markdown table of the per-category metrics."""
    name = DISPLAY_NAMES.get(summary["bench"], summary["bench"])
    lines = [
        f"{name}: {summary['score_name']} = {summary['score']:.2f}",
        f"questions {summary['n_questions']}, answered {summary['n_answered']}, missing {summary['n_missing']}"
        + (
            f" ({'left out of the score' if summary['missing_as'] == 'skip' else 'scored as wrong'})"
            if summary["n_missing"]
            else ""
        ),
    ]
    if summary.get("metrics"):
        lines.append(", ".join(f"{k} {_fmt(v)}" for k, v in summary["metrics"].items()))
    if summary.get("absent_subtasks"):
        lines.append("absent subtasks: " + ", ".join(summary["absent_subtasks"]))
    categories = summary.get("categories") or {}
    if categories:
        columns = list(dict.fromkeys(k for row in categories.values() for k in row))
        lines.append("")
        lines += _markdown(
            ["category", *columns], [[cat, *(_fmt(row.get(c, "")) for c in columns)] for cat, row in categories.items()]
        )
    return "\n".join(lines)


def format_retention(report: dict) -> str:
    """A retention_report() as a markdown table: bounds, then each method's scores and retention."""
    benches = bench_order(
        set(report["upper"]) | set(report["lower"]) | {b for m in report["methods"].values() for b in m["scores"]}
    )
    header = ["", *(DISPLAY_NAMES.get(b, b) for b in benches), "mean retention"]

    def score_row(label, scores):
        return [label, *(f"{scores[b]:g}" if b in scores else "-" for b in benches), ""]

    rows = [score_row("upper bound", report["upper"]), score_row("lower bound", report["lower"])]
    for name, m in report["methods"].items():
        rows.append(score_row(name, m["scores"]))
        mean = f"{100 * m['mean']:.1f}%" if m["mean"] is not None else "-"
        rows.append(
            [
                f"{name} retention",
                *(f"{100 * m['retention'][b]:.1f}%" if b in m["retention"] else "-" for b in benches),
                mean,
            ]
        )
    return "\n".join(_markdown(header, rows))


# ---- the verbs -------------------------------------------------------------------------------


def run_cli(work: Callable[[], None]) -> int:
    """Run a command body; print its warnings as single lines. Unreadable files become an
    InputError (ScoringError is one), which the `voco` command turns into one line and exit 2."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScoringWarning)
        try:
            work()
        except (OSError, UnicodeError) as err:
            raise InputError(str(err)) from None
        finally:
            for w in caught:
                print(f"voco: warning: {w.message}", file=sys.stderr)
    return 0


def _cmd_score(args) -> int:
    def work():
        bench = scorer(args.bench)
        options = {}
        for other in SCORERS.values():  # --<bench>-<option>: given for another bench, refused by name
            for option in other.options:
                value = getattr(args, f"{other.name}_{option}")
                if value is not None and other is not bench:
                    raise InputError(f"--{other.name}-{option.replace('_', '-')} is for {other.name}, not {bench.name}")
                if value is not None:
                    options[option] = value
        summary = score(bench.name, args.answers_file, args.annotation_file, args.missing, args.extra_file, **options)
        print(format_table(summary))
        if args.out:
            write_json_atomic(args.out, summary)

    return run_cli(work)


def _parse_method(spec: str) -> tuple[str, list[str]]:
    name, sep, files = spec.partition("=")
    if not sep or not name or not files:
        raise ScoringError(f"--method {spec!r}: expected NAME=FILE[,FILE...]")
    return name, files.split(",")


def _cmd_retention(args) -> int:
    def work():
        methods = {}
        for spec in args.method:
            name, files = _parse_method(spec)
            methods[name] = load_scores(*files)
        report = retention_report(load_scores(*args.upper), load_scores(*args.lower), methods)
        print(format_retention(report))
        if args.out:
            write_json_atomic(args.out, report)

    return run_cli(work)


def register_cli(subparsers) -> None:
    """Add `voco score` and `voco retention`; handlers are `args.func(args) -> exit code`."""
    p = subparsers.add_parser(
        "score",
        help="score a benchmark answer file as LLaVA-1.5's scripts do",
        description="Print a table and optionally write a JSON summary. Exit 0 on success, 2 on unusable input.",
    )
    p.add_argument("bench", help=f"one of {', '.join(SCORERS)}")
    p.add_argument("--answers-file", required=True, help="LLaVA answer JSONL")
    p.add_argument(
        "--annotation-file", required=True, help="answer key: generic JSONL or the benchmark's own file/directory"
    )
    p.add_argument(
        "--extra-file",
        default=None,
        help="; ".join(f"{s.name}: {s.extra_file}" for s in SCORERS.values() if s.extra_file)
        + " (no other bench takes one)",
    )
    missing = p.add_mutually_exclusive_group()
    missing.add_argument(
        "--strict",
        dest="missing",
        action="store_const",
        const="strict",
        default="official",
        help="count every unanswered question as wrong (default: as the benchmark's official script does: "
        "pope, textvqa and sqa score the answers present, the others count them wrong)",
    )
    missing.add_argument(
        "--answered-only",
        dest="missing",
        action="store_const",
        const="answered",
        help="score only the answered questions, on every benchmark",
    )
    p.add_argument("--sqa-split", default=None, help="ScienceQA split (default test)")
    p.add_argument(
        "--seed-data-type",
        choices=("image", "video"),
        default=None,
        help="SEED: score only image or video questions (default all)",
    )
    p.add_argument("--out", default=None, help="write the JSON summary here (atomically)")
    p.set_defaults(func=_cmd_score)

    r = subparsers.add_parser(
        "retention",
        help="compression retention (method - lower) / (upper - lower)",
        description="Scores come from score() summaries or plain {bench: number} JSON.",
    )
    r.add_argument("--upper", nargs="+", required=True, help="upper-bound score JSON file(s)")
    r.add_argument("--lower", nargs="+", required=True, help="lower-bound score JSON file(s)")
    r.add_argument(
        "--method",
        action="append",
        required=True,
        metavar="NAME=FILE[,FILE...]",
        help="a method's score JSON file(s); repeat for several methods",
    )
    r.add_argument("--out", default=None, help="write the JSON report here (atomically)")
    r.set_defaults(func=_cmd_retention)
