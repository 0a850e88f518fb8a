"""``dwfhpc unpack PART.tar --out DIR``: verify a part and restore its CCDs as raw FITS files."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unpack", help="verify a part against its manifest and decompress its CCDs")
    p.add_argument("tar", type=Path)
    p.add_argument("--manifest", type=Path, default=None, help="default: the .manifest.json beside the tarball")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..parts import unpack_part

    files = unpack_part(args.tar, args.out, args.manifest)
    print(f"{args.tar.name}: {len(files)} CCDs verified and restored -> {args.out}")
    return 0
