"""Inbox fuzzing at length: the generator of ``tests/test_inbox_fuzz.py`` for many more batches and seeds.

Each batch puts ``--bad`` fuzzed parts and ``--good`` good ones into a fresh inbox and scans it once;
every invariant of the test is checked (nothing written outside the configured folders, every bad
part quarantined with a reason naming what is wrong, nothing queued for it, good parts accepted,
the inbox empty). A failing batch prints its seed: ``--seed S --batches 1`` reproduces it.

``--hostile`` runs the issue-26 campaign instead: one hostile delivery beside one good part per case
(links of every kind under both names, FIFO / folder / device manifests, crafted tar headers: long
pax records with a right or made-up checksum, GNU sparse records and members, long extended-header
chains; sparse and oversized tarballs; two bad copies of a part in one second; tarballs whose manifest
never comes), scanned the way the daemon scans, and prints a table by class: cases, handled
(quarantined with a reason naming the problem), daemon exits (an exception out of a scan), scan time
p95 / max, good parts delayed past the first scan, writes outside the configured folders. Then the rows of
``fuzz_hostile_members.py`` (FITS size claims and calibration liars run through the inbox, the node task
in-process and the masters build; re-delivery of an exposure under other part counts) and of
``fuzz_hostile_link.py`` (bad manifest frames to a real ``dwfhpc receive``; YAML alias bombs to
``dwfhpc config check``), with a notes column (node task time, peak RSS growth, ...).

Usage::

    python benchmarks/fuzz_inbox.py [--batches 200] [--bad 25] [--good 3] [--seed 0] [--keep]
    python benchmarks/fuzz_inbox.py --hostile [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

import test_inbox_fuzz as fuzz  # noqa: E402


# ------------------------------------------------------------------------------------ --hostile
def _hostile_cases():
    """(class, name, make(world, expnum) -> (bad stems, words one of which each reason must hold), grace)."""
    import json
    import os
    import stat
    import tarfile

    import test_inbox_hostile as h

    def link(where: str, kind: str):
        def make(w, n):
            if where == "manifest":
                stem = f"DECam_{n:08d}.p1of1"
                h._link_kinds(w, w.inbox / f"{stem}{h.MANIFEST}", kind)
                return [stem], ("not a regular file",)
            tar, mpath, m = fuzz.good_part(w.inbox, n, random.Random(n))
            tar.unlink()
            h._link_kinds(w, tar, kind)
            mpath.write_text(json.dumps(m))
            return [mpath.name[: -len(h.MANIFEST)]], ("not a regular file",)
        return make

    def special(kind: str):
        def make(w, n):
            stem = f"DECam_{n:08d}.p1of1"
            path = w.inbox / f"{stem}{h.MANIFEST}"
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "folder":
                path.mkdir()
            else:
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
            return [stem], ("not a regular file",)
        return make

    def crafted(entries_for, words, fake_sha=False):
        def make(w, n):
            tar, mpath, m = h.signed_part(w, n, entries_for)
            if fake_sha:
                m["tar_sha256"] = "ab" * 32
                mpath.write_text(json.dumps(m))
            return [mpath.name[: -len(h.MANIFEST)]], words
        return make

    def chain(members):
        info, data = members[0]
        long = tarfile.TarInfo("L" * 300)  # a GNU long name, then a pax header, then another long name
        info.pax_headers = {"comment": "c" * 200}
        return [(info, data)] + members[1:] + [(long, None)]

    def sparse_member(members):
        info, data = members[0]
        info.type = tarfile.GNUTYPE_SPARSE
        return [(info, data)] + members[1:]

    def gnu_longname(members):  # a 1 MiB GNU long name record
        info, data = members[0]
        info.name = "x" * (1 << 20)
        return [(info, data)] + members[1:]

    def oversized(claim: bool):
        def make(w, n):
            tar, mpath, m = fuzz.good_part(w.inbox, n, random.Random(n))
            fuzz.sign(tar, m)
            h._sparse_tar(tar, 16 << 30)
            if claim:
                m["tar_bytes"], m["tar_sha256"] = 16 << 30, "cd" * 32
            mpath.write_text(json.dumps(m))
            return [mpath.name[: -len(h.MANIFEST)]], ("field tar_bytes",) if claim else ("tarball has",)
        return make

    def collision(w, n):  # a second bad copy of the part right after the first: both kept, each with its reason
        stem = None
        for fake in ("12", "34"):
            tar, mpath, m = fuzz.good_part(w.inbox, n, random.Random(n))
            m["tar_sha256"] = fake * 32
            mpath.write_text(json.dumps(m))
            stem = mpath.name[: -len(h.MANIFEST)]
            yield
        return [stem], ("sha256",)

    def orphan(w, n):
        tar, mpath, m = fuzz.good_part(w.inbox, n, random.Random(n))
        return [mpath.name[: -len(h.MANIFEST)]], ("tarball without a manifest",)

    cases = []
    for where in ("manifest", "tar"):
        for kind in h.LINKS:
            cases.append(("links", f"{where} -> {kind}", link(where, kind), 0))
    for kind in ("fifo", "folder") + (("device",) if os.geteuid() == 0 else ()):
        cases.append(("fifo/folder/device", f"manifest is a {kind}", special(kind), 0))
    cases += [("tar headers", "long pax, right sha256", crafted(h._long_pax, ("extended tar header",)), 0),
              ("tar headers", "long pax, made-up sha256", crafted(h._long_pax, ("sha256",), fake_sha=True), 0),
              ("tar headers", "GNU sparse pax record", crafted(h._sparse_pax, ("GNU sparse",)), 0),
              ("tar headers", "GNU sparse member", crafted(sparse_member, ("GNU sparse",)), 0),
              ("tar headers", "1 MiB GNU long name", crafted(gnu_longname, ("extended tar header", "field tar_bytes")), 0),
              ("tar headers", "unlisted long-name member", crafted(chain, ("not listed",)), 0),
              ("sparse/oversized", "16 GiB, manifest small", oversized(False), 0),
              ("sparse/oversized", "16 GiB, manifest agrees", oversized(True), 0),
              ("collisions", "2 bad copies in 1 s", collision, 0),
              ("orphan tarballs", "no manifest, grace 0.5 s", orphan, 0.5)]
    return cases


def hostile(rounds: int) -> int:
    """The issue-26 campaign; returns 1 if a target is missed."""
    import inspect

    from dwfhpc.ingest.inbox import Inbox
    from dwfhpc.statedb import StateDB

    import fuzz_hostile_link
    import fuzz_hostile_members

    def new_row() -> dict:
        return {"cases": 0, "handled": 0, "exits": 0, "scans": [], "delayed": 0, "outside": 0, "notes": ""}

    rows: dict[str, dict] = {}
    failures = []
    n = 700_000
    for r in range(rounds):
        for cls, name, make, grace in _hostile_cases():
            n += 1
            row = rows.setdefault(cls, new_row())
            tmp = Path(tempfile.mkdtemp(prefix="dwf-hostile-"))
            try:
                w = fuzz.make_world(tmp)
                roots = (Path("/"), Path("/tmp"), *w.root.parents[:3], w.root)
                before_escaped = set(fuzz.escaped(roots, w.allowed + (w.outside,)))
                with StateDB(w.db_path) as db:
                    box = Inbox(w.inbox, w.store, w.quarantine, db, mem_gb=1, time_minutes=5, arrival_grace=grace,
                                verify_threads=1)
                    quarantined: dict[str, list[str]] = {}
                    good_stem, accepted_at = None, None
                    t_start = time.time()
                    try:
                        gen = make(w, n) if inspect.isgeneratorfunction(make) else None
                        steps = 0
                        while True:  # the daemon's loop: scan, 0.25 s, scan ...
                            if gen is not None:
                                try:
                                    next(gen)
                                except StopIteration as stop:
                                    stems, words = stop.value
                                    gen = None
                            elif steps == 0:
                                stems, words = make(w, n)
                            if steps == 0:
                                _, good_manifest, m = fuzz.good_part(w.inbox, n + 500_000, random.Random(n))
                                good_manifest.write_text(json.dumps(m))  # the good part beside it, manifest last
                                good_stem = good_manifest.name[: -len(".manifest.json")]
                            t0 = time.perf_counter()
                            try:
                                out = box.scan(t_start + 0.25 * steps)
                            except Exception as exc:  # noqa: BLE001 - a daemon exit
                                row["exits"] += 1
                                failures.append(f"{cls}: {name}: scan raised {type(exc).__name__}: {exc}")
                                break
                            row["scans"].append(time.perf_counter() - t0)
                            for stem, reason in out.quarantined:
                                quarantined.setdefault(stem, []).append(reason)
                            if good_stem in out.accepted:
                                accepted_at = steps
                            steps += 1
                            if gen is None and accepted_at is not None and all(s in quarantined for s in stems):
                                break
                            if steps > 40:
                                break
                    finally:
                        box.close()
                    ok = gen is None and all(any(any(wd in rr for wd in words) for rr in quarantined.get(s, []))
                                             for s in stems)
                    if name.startswith("2 bad copies"):
                        ok = ok and len(list(w.quarantine.glob(f"{stems[0]}.*"))) == 2
                    row["cases"] += 1
                    row["handled"] += ok
                    if not ok:
                        failures.append(f"{cls}: {name}: not handled: {quarantined}")
                    if accepted_at != 0 and not name.startswith("2 bad copies"):
                        row["delayed"] += 1
                        failures.append(f"{cls}: {name}: good part accepted at scan {accepted_at}")
                    if set(fuzz.escaped(roots, w.allowed + (w.outside,))) != before_escaped:
                        row["outside"] += 1
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    for more in (fuzz_hostile_members, fuzz_hostile_link):  # what the node, the masters, the receiver and config see
        table, more_failures = more.rows(rounds, new_row)
        rows.update(table)
        failures += more_failures
    print("| class | cases | handled | daemon exits | scan p95 / max (s) | good parts delayed | writes outside | notes |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for cls, row in rows.items():
        scans = sorted(row["scans"]) or [0.0]
        p95 = scans[min(len(scans) - 1, int(0.95 * len(scans)))]
        worst = max(worst, scans[-1])
        print(f"| {cls} | {row['cases']} | {row['handled']} | {row['exits']} | {p95:.3f} / {scans[-1]:.3f} | "
              f"{row['delayed']} | {row['outside']} | {row['notes']} |")
    for f in failures:
        print("FAILED:", f)
    missed = failures or worst >= 2.0
    print("scan: an inbox scan; receiver frames: a bad part + a good one answered; YAML: the refusal, after the imports")
    print(f"targets: 0 exits, 0 outside, all named, slowest scan {worst:.2f} s < 2 s, 0 delayed: "
          + ("MISSED" if missed else "met"))
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--bad", type=int, default=25)
    ap.add_argument("--good", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first batch (batch i uses seed + i)")
    ap.add_argument("--keep", action="store_true", help="keep the folders of a failing batch")
    ap.add_argument("--hostile", action="store_true", help="the issue-26 campaign (links, crafted tar headers, "
                    "sparse tarballs, quarantine collisions, orphan tarballs) instead of the fuzz batches")
    ap.add_argument("--rounds", type=int, default=2, help="--hostile: times each case is run")
    args = ap.parse_args(argv)
    logging.getLogger("dwfhpc").setLevel(logging.CRITICAL)  # every quarantine is logged as an error
    if args.hostile:
        return hostile(args.rounds)
    t0 = time.perf_counter()
    total = bad = 0
    failures = 0
    for i in range(args.batches):
        seed = args.seed + i
        tmp = Path(tempfile.mkdtemp(prefix="dwf-fuzz-"))
        ok = False
        try:
            w = fuzz.make_world(tmp)
            cases = fuzz.make_batch(w.inbox, w.outside, random.Random(seed), args.bad, args.good,
                                    expnum0=10_000 * (i + 1) % 400_000 + 10_000)
            counts = fuzz.run_batch(w, cases)
            total, bad = total + counts["cases"], bad + counts["bad"]
            ok = True
        except AssertionError as exc:
            failures += 1
            print(f"seed {seed}: FAILED: {exc}" + (f" (kept in {tmp})" if args.keep else ""), flush=True)
        finally:
            if ok or not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        if (i + 1) % 20 == 0:
            print(f"{i + 1} batches, {total} parts ({bad} bad), {time.perf_counter() - t0:.0f} s", flush=True)
    dt = time.perf_counter() - t0
    print(f"{args.batches} batches, {total} parts ({bad} bad) checked in {dt:.1f} s "
          f"({1000 * dt / max(total, 1):.1f} ms a part); {failures} failing batch(es)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
