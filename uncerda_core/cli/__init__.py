"""``uncerda <stage>``: every workflow stage as a command, with the same inputs and outputs as its rule.

The command line only parses and calls: :mod:`.registry` holds the ``@command`` registry and the
config options every stage shares, :mod:`.stages` the stage commands, :mod:`.report` the result
tables' and the report's. Each calls one function of the package; nothing in the package below
imports this one.
"""

from __future__ import annotations

import argparse
import sys

# Importing a command module registers its @command functions; the help lists them in this order.
from uncerda_core.cli import stages  # noqa: F401  isort: skip
from uncerda_core.cli import report  # noqa: F401  isort: skip
from uncerda_core.cli.registry import COMMANDS
from uncerda_core.errors import Interrupted, UncerdaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uncerda", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for name, (help_text, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        func(p=p)
        p.set_defaults(func=func)
    return parser


# The exit status of a command stopped by Ctrl-C: 128 + SIGINT, what shells report for it.
INTERRUPTED_STATUS = 130


def main(argv: list[str] | None = None) -> int:
    """Run one command: 0 when it succeeds, 2 on an :class:`UncerdaError` (its message on stderr).

    Ctrl-C prints one line instead of a traceback, ``uncerda <command>: interrupted`` or what the
    stage says about it (a trainer: the iteration it reached and the one its rerun resumes at,
    :class:`~uncerda_core.errors.Interrupted`), and returns 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.own_process = argv is None   # the `uncerda` command itself, not a call from Python
    try:
        args.func(args=args)
    except UncerdaError as exc:
        print(f"uncerda {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"uncerda {args.command}: {exc if isinstance(exc, Interrupted) else 'interrupted'}",
              file=sys.stderr, flush=True)
        return INTERRUPTED_STATUS
    return 0

