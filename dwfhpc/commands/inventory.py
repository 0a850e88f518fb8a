"""``dwfhpc inventory``: fields x filters x number of calibrated exposures (the seed's imageinv)."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from ._common import add_site_arguments, site_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inventory", help="calibrated exposures by field and filter")
    add_site_arguments(p, night="only this night (YYYY-MM-DD)", json="as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ops.qa_index import exposures

    site = site_from(args)
    items = exposures(site.path(site.calibration.products), args.night)
    counts = Counter((e.field, e.filter) for e in items)
    if args.json:
        print(json.dumps([{"field": f, "filter": b, "exposures": n} for (f, b), n in sorted(counts.items())]))
        return 0
    filters = sorted({b for _, b in counts})
    print(f"{'field':24s}" + "".join(f"{b:>8s}" for b in filters))
    for field in sorted({f for f, _ in counts}):
        print(f"{field:24s}" + "".join(f"{counts.get((field, b), 0):8d}" for b in filters))
    print(f"{len(items)} calibrated exposures" + (f" in night {args.night}" if args.night else ""))
    return 0
