"""The ``dwfhpc`` command.

Every subcommand lives in its own module under :mod:`dwfhpc.commands` and exposes
``register(subparsers)``. :data:`COMMANDS` names each one with its one-line help, so the top-level
parser (``dwfhpc --help``) imports none of them; only the chosen subcommand's module is imported, to
add its arguments and run it (a node task does not pay for the ingest daemon's or the report's
imports). A new module in ``dwfhpc/commands/`` needs a line in :data:`COMMANDS`
(``tests/test_cli_startup.py`` checks both ways). Errors derived from :class:`~dwfhpc.errors.DwfError`
print as one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import DwfError

#: subcommand -> its one-line help in ``dwfhpc --help`` (the same text its module's ``register`` passes);
#: the module is ``dwfhpc.commands.<name>``
COMMANDS: dict[str, str] = {
    "calibrate": "overscan, bias, flat, masks, QA and WCS check of raw CCDs",
    "cals": "master calibrations",
    "config": "check or show configuration files",
    "demo": "run a simulated night through the whole toolkit on this machine",
    "fullred": "submit a full hscPipe reduction of one HSC visit (an array, one task per CCD)",
    "image": "build, check, deploy and roll back Apptainer images",
    "info": "instrument, exposure, night, obstype, filter, field and CCDs of a FITS file",
    "ingest": "verify delivered parts and calibrate them as job arrays (one task per CCD)",
    "inventory": "calibrated exposures by field and filter",
    "jobs": "our queued/running/held array tasks by state (one squeue or qstat call)",
    "node": "what runs on a compute node (one CCD per array task)",
    "pack": "compress an exposure per CCD into K part tarballs with manifests",
    "push": "watch the raw folder and send each exposure's parts to the cluster on N streams",
    "receive": "(cluster side; push starts it over ssh with transport.stream) take parts "
               "from standard input into staging, publish each verified part into the inbox",
    "report": "regenerate the night report(s) (HTML with plots) from the state DB",
    "reprocess": "run parts or CCDs again as a new attempt (a list of tarballs, the failed ones, a night)",
    "seeing": "seeing (median stellar FWHM, arcsec) of calibrated exposures",
    "simulate": "write simulated raw exposures (biases, dome flats, science) on real headers",
    "status": "the cluster side's state: parts and tasks by state, latency, failures",
    "unpack": "verify a part against its manifest and decompress its CCDs",
    "wcs": "WCS utilities",
}

def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, if it is one of ours: its first word that is not an option (no
    top-level option takes a value)."""
    word = next((w for w in argv if not w.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(command: str | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The ``dwfhpc`` parser: every subcommand listed; ``command``'s module (every one if ``full``) imported
    to add its arguments, the others a name and a help line only."""
    parser = argparse.ArgumentParser(
        prog="dwfhpc",
        description="Move survey images from the telescope to a Slurm cluster and calibrate them there.",
    )
    parser.add_argument("--version", action="version", version=f"dwfhpc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        if full or name == command:
            importlib.import_module(f"{__package__}.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen_command(argv))
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
