"""``dwfhpc push``: the telescope side, all night (or ``--once``, or ``--mode end-of-night``)."""

from __future__ import annotations

import argparse
import signal
from typing import get_args

from ..config import Codec, PushMode, load_site


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="watch the raw folder and send each exposure's parts to the cluster on N streams")
    p.add_argument("--config", default="local", help="site config name or file (default: local)")
    p.add_argument("--workdir", default=None, help="replace the config's workdir")
    p.add_argument("--streams", type=_streams, default=None, metavar="N|auto",
                   help="parallel transfer streams (config push.streams); auto: as many as fill the link "
                        "(transport.link_mbit at transport.rtt_ms)")
    p.add_argument("--mode", choices=get_args(PushMode), default=None, help="config push.mode")
    p.add_argument("--nbundle", type=int, default=None, help="batch mode: exposures per bundle")
    p.add_argument("--exp-min", type=int, default=None, help="end-of-night: only exposures above this number")
    p.add_argument("--codec", choices=get_args(Codec), default=None)
    p.add_argument("--parts", type=int, default=None, help="parts per exposure (K)")
    p.add_argument("--once", action="store_true", help="process what is there, then exit (cron, tests)")
    p.add_argument("--status", action="store_true", help="print the journal summary and exit")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="live terminal view (default: when stdout is a terminal)")
    p.set_defaults(func=run)


def _streams(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of streams or 'auto', not {value!r}") from None


def run(args: argparse.Namespace) -> int:
    from ..push import Push, PushOptions

    overrides = {k: v for k, v in (("streams", args.streams), ("mode", args.mode), ("nbundle", args.nbundle),
                                   ("exp_min", args.exp_min), ("codec", args.codec), ("parts", args.parts))
                 if v is not None}
    site = load_site(args.config, workdir=args.workdir, overrides={"push": overrides} if overrides else None)
    if args.status:
        return _status(site)
    opts = PushOptions(once=args.once or site.push.mode == "end-of-night", quiet=getattr(args, "quiet", False),
                       live=args.live)
    push = Push(site, opts)
    previous = {s: signal.signal(s, lambda *_: push.request_stop()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        outcome = push.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if outcome.x_of_y is not None:
        print(f"{outcome.x_of_y[0]} of {outcome.x_of_y[1]} delivered")
        return 0 if outcome.x_of_y[0] == outcome.x_of_y[1] else 1
    return 1 if outcome.failed else 0


def _status(site) -> int:
    from ..push import Journal

    path = site.path(site.push.journal)
    if not path.exists():
        print(f"{path}: no journal yet (push has not run with this config)")
        return 0
    j = Journal(path)
    try:
        s = j.summary()
    finally:
        j.close()
    print(f"journal {path}")
    for what in ("files", "exposures", "parts"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s[what].items())) or "none"
        print(f"  {what:10s} {counts}")
    if "latency_seconds" in s:
        lat = s["latency_seconds"]
        print(f"  latency    file complete -> delivered: median {lat['median']:.1f} s, max {lat['max']:.1f} s"
              f" over {lat['n']} exposures")
    for name, reason in s["failed"]:
        print(f"  failed     {name}: {reason}")
    return 0
