"""The ``hamflow`` command: one sub-command per pipeline stage, thin wrappers over the library.

Each handler parses its arguments, calls the stage's library function and prints a short result.
Every expected failure is a :class:`hamflow.errors.HamflowError`, printed as one line on stderr
(``hamflow: error: ...``) with the error's exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hamflow import __version__
from hamflow.errors import HamflowError

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------------------------------
# Sub-commands. Each has an ``_add_<name>(subparsers)`` that declares its arguments and sets
# ``handler``; the handler imports the library lazily (start-up stays fast, JAX loads only when used).
# --------------------------------------------------------------------------------------------------


# (sub-command sections go here, one per command)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    # (each section appends its _add_<name> here)
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hamflow`` command with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="hamflow",
        description="DFT calculations -> trained E(3)-equivariant Hamiltonian network (DeepH method).",
    )
    parser.add_argument("--version", action="version", version=f"hamflow {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except HamflowError as error:
        print(f"hamflow: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("hamflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
