"""``dwfhpc receive --staging S --inbox I``: the cluster end of a streamed push (started by push over ssh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("receive", help="(cluster side; push starts it over ssh with transport.stream) take parts "
                                       "from standard input into staging, publish each verified part into the inbox")
    p.add_argument("--staging", type=Path, required=True, help="where frames are written before they are checked")
    p.add_argument("--inbox", type=Path, required=True, help="where verified parts are published (manifest last)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..link.receiver import serve

    return serve(sys.stdin.buffer, sys.stdout.buffer, args.staging, args.inbox)
