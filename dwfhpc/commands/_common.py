"""What many subcommands share: the site arguments and the state DB they read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DwfError

if TYPE_CHECKING:
    from ..config import SiteSettings

NO_STATE_DB = "no state DB here (dwfhpc ingest has not run with this config)"


def add_site_arguments(p: argparse.ArgumentParser, *, night: str | None = None, json: str | None = None) -> None:
    """``--config`` and ``--workdir``; ``--night`` and ``--json`` with these help texts when given."""
    p.add_argument("--config", default="local", help="site config name or file (default: local)")
    p.add_argument("--workdir", default=None, help="replace the config's workdir")
    if night is not None:
        p.add_argument("--night", default=None, help=night)
    if json is not None:
        p.add_argument("--json", action="store_true", help=json)


def ccd_list(text: str) -> list[int]:
    """``--ccds 1-4,25,33`` (:func:`dwfhpc.simulate.parse_ccd_list`, imported only when the option is given)."""
    from ..simulate import parse_ccd_list

    return parse_ccd_list(text)


def site_from(args: argparse.Namespace, **kw) -> SiteSettings:
    from ..config import load_site  # pydantic: not for --help

    return load_site(args.config, workdir=args.workdir, **kw)


def state_db_path(site: SiteSettings) -> Path:
    """The site's state DB, or a clear error naming where it was looked for."""
    path = site.path(site.ingest.state_db)
    if not path.is_file():
        raise DwfError(NO_STATE_DB, path)
    return path
