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


# -- convert: other data formats -> the DeepH format (one sub-command per source format) ----------


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser("convert", help="convert data from another format into the DeepH format")
    formats = convert.add_subparsers(dest="convert_format", metavar="FORMAT", required=True)
    legacy = formats.add_parser(
        "legacy",
        help="legacy DeepH/DeepH-E3 folders (element.dat, lat.dat, hamiltonians.h5, ...)",
        description="Convert legacy DeepH/DeepH-E3 data (1-based atoms, OpenMX orbital order) into "
        "the DeepH format. SRC is one structure folder (holding element.dat) or a tree of them.",
    )
    legacy.add_argument("src", metavar="SRC", help="legacy structure folder, or a folder of them")
    legacy.add_argument("dst", metavar="DST", help="output folder (same layout below it as SRC)")
    legacy.add_argument(
        "--depth",
        type=int,
        default=0,
        help="for a tree: folder levels between SRC and the structure folders (default 0: SRC/<sid>)",
    )
    legacy.set_defaults(handler=_run_convert_legacy)


def _run_convert_legacy(args: argparse.Namespace) -> int:
    from hamflow.data.legacy import convert_legacy, convert_legacy_tree, is_legacy_structure

    if is_legacy_structure(args.src):
        convert_legacy(args.src, args.dst)
        print(f"converted 1 structure: {args.src} -> {args.dst}")
    else:
        converted = convert_legacy_tree(args.src, args.dst, depth=args.depth)
        print(f"converted {len(converted)} structure(s): {args.src} -> {args.dst}")
    return 0


# (sub-command sections go here, one per command)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    # (each section appends its _add_<name> here)
    _add_convert,
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
