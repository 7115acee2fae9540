"""The ``gptlab`` command: generate, evaluate, inspect, download, convert.

Each verb lives in its own module and registers its parser; this module builds
the parser and turns exceptions into one line on stderr with an exit code:
2 for usage errors (bad option values), 1 for failures (a missing, unreadable
or damaged file, a full disk, a failed download), 130 when interrupted.
``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import evaluate, generate, inspection, weights
from .common import PROG, Failure, Formatter, Parser, UsageError, one_line

EPILOG = """\
examples:
  gptlab download --size 124M && gptlab convert results/gpt2/124M/tf
  gptlab generate --gpt2 124M --prompt "Every effort moves you" --top-k 25 --temperature 1.4 --stream
  gptlab evaluate --gpt2 124M --text ../shared/data/the-verdict.txt
  gptlab inspect results/pretrain/checkpoint.pt

exit codes: 0 success, 1 failure (missing, unreadable, unwritable or damaged file,
full disk, failed download), 2 usage error (bad option value), 130 interrupted.
Run 'gptlab VERB --help' for the options and examples of each verb; docs/cli.md has more.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Generate with, evaluate, inspect, download and convert the models of gptlab "
        "(chapter 5 of 'Build a Large Language Model (From Scratch)').",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    # The same flag after the verb; SUPPRESS keeps the verb's parser from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=Parser)
    for module in (generate, evaluate, inspection, weights):
        module.register(verbs, common)
    return parser


def _error(message: str, code: int) -> int:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return code


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already reported (2)
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except BrokenPipeError:  # the reader went away (e.g. '| head'): stop quietly
        # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if args.debug:
            raise
        return _error(*_describe(err))


def _describe(err: Exception) -> tuple[str, int]:
    """The message and exit code of an exception escaping a verb."""
    from gptlab.download import DownloadError
    from gptlab.io import NoSpaceError
    from gptlab.training.checkpoint import CheckpointError

    if isinstance(err, UsageError):
        return str(err), 2
    if isinstance(err, NoSpaceError):  # its message names the path and says what to do
        return err.strerror or str(err), 1
    if isinstance(err, (Failure, CheckpointError, DownloadError, FileNotFoundError, ValueError)):
        return str(err), 1
    if isinstance(err, ImportError):
        return f"{err} (install it, e.g. pip install 'gptlab[convert]' for TensorFlow)", 1
    if isinstance(err, MemoryError):
        return "out of memory; use a smaller model or another --device", 1
    if isinstance(err, OSError):
        return f"{type(err).__name__}: {err}", 1
    return f"unexpected {type(err).__name__}: {err} (run again with --debug for the traceback)", 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
