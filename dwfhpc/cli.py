"""The ``dwfhpc`` command.

Every subcommand lives in its own module under :mod:`dwfhpc.commands` and exposes
``register(subparsers)``; the module list is discovered, so adding a command never
touches this file. Errors derived from :class:`~dwfhpc.errors.DwfError` print as one
line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__, commands
from .errors import DwfError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dwfhpc",
        description="Move survey images from the telescope to a Slurm cluster and calibrate them there.",
    )
    parser.add_argument("--version", action="version", version=f"dwfhpc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the console's level holds even where a logger is opened
        handler.setLevel(level)                    # wider for the state DB's events (dwfhpc.db.EventHandler)
    for noisy in ("matplotlib", "PIL", "submitit"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except DwfError as exc:
        if args.debug:
            raise
        print(f"dwfhpc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"dwfhpc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
