"""The fault campaign's evidence: consistent copies of the databases and read-only views of them, the node results,
the products and the logs at one moment; and which failures are named with a reason."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from common.tables import short
from common.wan import wanlink
from dwfhpc.node.result import TaskStatus
from dwfhpc.states import FileState, PartState, SentPartState, TaskState


def snapshot(db: Path, dest: Path) -> Path:
    """A consistent copy of a live SQLite database (read-only source, SQLite's backup API)."""
    dest.unlink(missing_ok=True)
    src, dst = wanlink.ro(db), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return dest


class Evidence:
    """Read-only views of the journal, the state DB, the result files, the products and the logs at one moment."""

    def __init__(self, camp, state: Path, journal: Path, results: dict):
        c = camp
        self.c = c
        q = c.q
        self.jexp = {r["expid"]: r for r in q(journal, "SELECT * FROM exposures")}
        self.jparts = q(journal, "SELECT * FROM parts")
        self.jfiles = q(journal, "SELECT * FROM files")
        self.jevents = q(journal, "SELECT * FROM events ORDER BY t")
        self.sparts = {r["stem"]: r for r in q(state, "SELECT * FROM parts")}
        self.tasks = q(state, "SELECT * FROM tasks")
        self.subs = q(state, "SELECT * FROM submissions ORDER BY id")
        self.sevents = q(state, "SELECT * FROM events ORDER BY t")
        self.results = sorted(results.values(), key=lambda r: r.get("finished") or 0)
        self.written = dict(c.tel.written)
        self.kind = {p.name.split(".")[0]: k for p, k in c.files}
        prod = c.work / "cluster" / "products"
        self.products: dict[str, int] = {}
        self.stray = sorted(str(p.relative_to(prod)) for p in prod.rglob(".*")) if prod.is_dir() else []
        for p in prod.rglob("*.cal.fits.fz") if prod.is_dir() else ():
            self.products[p.parent.name] = self.products.get(p.parent.name, 0) + 1
        # calibrations that ended with products, per CCD: distinct (result file, start) pairs with status ok
        self.ok: dict[tuple[str, int], list[dict]] = {}
        for r in self.results:
            if r["status"] == TaskStatus.OK and r["products"]:
                self.ok.setdefault((r["expid"], r["ccd"]), []).append(r)
        self.twice = {k: v for k, v in self.ok.items() if len({(x["file"], x["started"]) for x in v}) > 1}
        # submissions per (part, ccd, attempt): from the spec each array ran
        self.submitted: dict[tuple[str, int, int], list[dict]] = {}
        for s in self.subs:
            try:
                spec = json.loads(Path(s["spec"]).read_text())
            except (OSError, ValueError):
                continue
            for ccd in spec.get("ccds", []):
                self.submitted.setdefault((s["part"], ccd, spec.get("attempt", 1)), []).append(s)
        self.sub_twice = {k: v for k, v in self.submitted.items() if len(v) > 1}
        done: dict[str, int] = {}
        for t in self.tasks:
            if t["state"] == TaskState.DONE:
                done[t["expid"]] = done.get(t["expid"], 0) + 1
        self.done = done
        self.sci_done = sum(1 for t in self.tasks if t["state"] == TaskState.DONE and t["kind"] == "science")
        self.whole = {e for e in self.written if done.get(e, 0) >= c.nccd}
        self.lost = sorted(e for e in self.written if e not in self.whole)

    def task(self, part: str, ccd: int) -> dict | None:
        return next((t for t in self.tasks if t["part"] == part and t["ccd"] == ccd), None)

    def sev(self, t0: float, t1: float, like: str | None = None, part: str | None = None) -> list[dict]:
        return [e for e in self.sevents if t0 <= e["t"] <= t1 and (like is None or like.lower() in e["message"].lower())
                and (part is None or (e["part"] or "").startswith(part))]

    def jev(self, t0: float, t1: float, like: str | None = None) -> list[dict]:
        return [e for e in self.jevents if t0 <= e["t"] <= t1 and (like is None or like.lower() in e["message"].lower())]

    def push_log(self, run: int, event: str) -> list[str]:
        f = self.c.work / f"push-{run}.log"
        return [ln for ln in f.read_text(errors="replace").splitlines() if f"event={event}" in ln] if f.exists() else []

    def lost_of(self, expids) -> list[str]:
        return sorted(e for e in set(expids) if e in self.written and e not in self.whole)

    def twice_of(self, expids) -> list[str]:
        return sorted(f"{e}/{c}" for (e, c) in self.twice if e in set(expids))


def failures_named(ev: Evidence, camp) -> dict:
    bad = []
    for t in ev.tasks:
        if t["state"] in (TaskState.FAILED, TaskState.LOST):
            bad.append((f"task {t['part']} CCD {t['ccd']} {t['state']}", t["reason"]))
    for p in ev.sparts.values():
        if p["state"] in (PartState.QUARANTINED, PartState.FAILED):
            reason = p["reason"]
            if not reason and p["state"] == PartState.FAILED:  # a part fails through its tasks: their reasons name it
                why = [t["reason"] for t in ev.tasks if t["part"] == p["stem"] and t["state"] != TaskState.DONE]
                reason = f"(parts.reason empty; its tasks say: {why[0]})" if why and all(why) else None
            bad.append((f"part {p['stem']} {p['state']}", reason))
    for f in ev.jfiles:
        if f["state"] == FileState.FAILED:
            bad.append((f"raw {Path(f['path']).name} failed", f["reason"]))
    for p in ev.jparts:
        if p["state"] == SentPartState.FAILED:
            bad.append((f"sent part {p['expid']}.p{p['k']} failed", p["reason"]))
    unnamed = [w for w, r in bad if not r]
    # an exposure not whole must be explained by one of those rows
    for e in ev.lost:
        if not any(e in w for w, _ in bad) and not any(e in (t["part"] or "") for t in ev.tasks if t["state"] != TaskState.DONE):
            unnamed.append(f"{e}: not whole ({ev.done.get(e, 0)}/{camp.nccd} CCDs done) and no failed/quarantined row names it")
    text = "; ".join(f"{w}: \"{short(r, 90)}\"" for w, r in bad) or "no failure rows"
    if unnamed:
        text += " | UNNAMED: " + "; ".join(unnamed)
    return {"rows": bad, "unnamed": unnamed, "text": text}

