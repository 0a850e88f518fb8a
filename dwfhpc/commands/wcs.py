"""``dwfhpc wcs convert FILE``: rewrite a SIP WCS as TPV so SWarp-based tools read it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DwfError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wcs", help="WCS utilities")
    s = p.add_subparsers(dest="wcs_command", metavar="ACTION", required=True)
    c = s.add_parser("convert", help="SIP to TPV (HSC products for SWarp/SCAMP/photpipe)")
    c.add_argument("file", type=Path)
    c.add_argument("--out", type=Path, help="write here (default: replace FILE in place, atomically)")
    c.add_argument("--hdu", type=int, default=None, help="HDU to convert (default: every HDU with a SIP WCS)")
    c.set_defaults(func=convert)


def convert(args: argparse.Namespace) -> int:
    from ..atomic import atomic_path
    from ..fitsio_utils import open_fits
    from ..sip_tpv import sip_to_tpv

    src: Path = args.file
    dest: Path = args.out or src
    with open_fits(src, lazy=False) as hdul:
        targets = [args.hdu] if args.hdu is not None else [
            i for i, h in enumerate(hdul) if str(h.header.get("CTYPE1", "")).endswith("-SIP")
        ]
        if not targets:
            raise DwfError("no HDU with a SIP WCS (CTYPE1 ...-SIP)", src)
        for i in targets:
            if i >= len(hdul):
                raise DwfError(f"no HDU {i} (the file has {len(hdul)})", src)
            hdul[i].header = sip_to_tpv(hdul[i].header, str(src))
        with atomic_path(dest) as tmp:
            tmp.unlink()
            hdul.writeto(tmp, output_verify="silentfix")
    print(f"{dest}: converted HDU {', '.join(map(str, targets))} from SIP to TPV")
    return 0
