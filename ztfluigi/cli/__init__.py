"""The ``ztfluigi`` command: operating the Luigi tasks (night, status, clean, archive, slurm)."""

from __future__ import annotations

import argparse
import importlib
import sys

from ztfluigi import __version__

#: Subcommand modules of this package; each defines ``add_parser(subparsers)`` that registers its
#: parser and sets ``func`` (``args -> exit code``) as the parser default.
SUBCOMMANDS: tuple[str, ...] = ("night", "status", "clean", "plan", "archive", "slurm")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="ztfluigi", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ztfluigi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ztfluigi`` console script."""
    from ztfluigi.tasks.progress import expected_error_types

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, *expected_error_types()) as exc:
        # bad dates and names, unreachable stores or archives, ports in use: one line
        print(f"ztfluigi: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
