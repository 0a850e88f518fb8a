"""What many subcommands share: the site arguments and the state DB they read."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import SiteSettings, load_site
from ..errors import DwfError

NO_STATE_DB = "no state DB here (dwfhpc ingest has not run with this config)"


def add_site_arguments(p: argparse.ArgumentParser, *, night: str | None = None, json: str | None = None) -> None:
    """``--config`` and ``--workdir``; ``--night`` and ``--json`` with these help texts when given."""
    p.add_argument("--config", default="local", help="site config name or file (default: local)")
    p.add_argument("--workdir", default=None, help="replace the config's workdir")
    if night is not None:
        p.add_argument("--night", default=None, help=night)
    if json is not None:
        p.add_argument("--json", action="store_true", help=json)


def site_from(args: argparse.Namespace, **kw) -> SiteSettings:
    return load_site(args.config, workdir=args.workdir, **kw)


def state_db_path(site: SiteSettings) -> Path:
    """The site's state DB, or a clear error naming where it was looked for."""
    path = site.path(site.ingest.state_db)
    if not path.is_file():
        raise DwfError(NO_STATE_DB, path)
    return path
