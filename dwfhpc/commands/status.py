"""``dwfhpc status``: exposures, parts and tasks by state, latency, failures with reasons (from the state DB)."""

from __future__ import annotations

import argparse
import json

from ._common import NO_STATE_DB, add_site_arguments, site_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the cluster side's state: parts and tasks by state, latency, failures")
    add_site_arguments(p, night="only this night (YYYY-MM-DD)", json="as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ingest.status import summary
    from ..report.counts import GROUPS, LABELS, CCDCounts
    from ..statedb import StateDB

    site = site_from(args)
    path = site.path(site.ingest.state_db)
    if not path.exists():
        print(f"{path}: {NO_STATE_DB}")
        return 0
    with StateDB(path) as db:
        s = summary(db, args.night, site=site)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"state {path}" + (f" (night {args.night})" if args.night else ""))
    for group in GROUPS:
        c = s["ccds"][group]
        print("  " + CCDCounts(c["calibrated"], c["failed"], c["lost"], c["in_flight"]).phrase(LABELS[group]))
    for what in ("exposures", "parts", "tasks"):
        print(f"  {what:10s} " + (", ".join(f"{k} {v}" for k, v in s[what].items()) or "none"))
    if s.get("mode") == "workers":
        w = s["workers"]
        print(f"  mode       warm workers: {w['alive']} alive ({w['busy']} busy, {w['idle']} idle)")
    else:
        print("  mode       one job array per part")
    for key, label in (("queue_seconds", "submitted -> running"), ("run_seconds", "running -> products")):
        q = s[key]
        if q["n"]:
            print(f"  per CCD    {label}: p50 {q['p50']:.1f} s, p95 {q['p95']:.1f} s over {q['n']} CCDs")
    lat = s["latency_part_to_products"]
    if lat["n"]:
        print(f"  latency    part in inbox -> products: p50 {lat['p50']:.1f} s, p95 {lat['p95']:.1f} s over {lat['n']} parts")
    if s["retried"]:
        print(f"  retried    {s['retried']} CCDs needed more than one attempt")
    held: dict[str, list[str]] = {}
    for w in s["waiting"]:
        held.setdefault(w["waiting"], []).append(f"{w['part']} CCD {w['ccd']}")
    for why, which in held.items():
        print(f"  held       {len(which)} CCD{'s' if len(which) > 1 else ''} by the scheduler, {why}: "
              + ", ".join(which[:4]) + (f" (+{len(which) - 4} more)" if len(which) > 4 else ""))
    for w in s.get("masters_waiting", []):
        print(f"  waiting for masters: night {w['night']} ({w['reason']}): {w['ccds']} science CCD"
              f"{'s' if w['ccds'] > 1 else ''}")
    for stop in s["resubmission_stops"]:
        print(f"  stopped    {stop['scope']} {stop['name']}: {stop['reason']}")
    for node in s.get("excluded_nodes", []):
        print(f"  excluded   node {node['node']}: {node['reason']}")
    if s.get("resource_retried"):
        print(f"  nodes      {s['resource_retried']} CCDs retried after a node's resources failed (not counted as attempts)")
    for f in s["failures"]:
        ccd = f" CCD {f['ccd']}" if f["ccd"] is not None else ""
        print(f"  {f['state']:10s} {f['part']}{ccd}: {f['reason']}")
    return 0
