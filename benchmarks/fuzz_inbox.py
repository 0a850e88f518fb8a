"""Inbox fuzzing at length: the generator of ``tests/test_inbox_fuzz.py`` for many more batches and seeds.

Each batch puts ``--bad`` fuzzed parts and ``--good`` good ones into a fresh inbox and scans it once;
every invariant of the test is checked (nothing written outside the configured folders, every bad
part quarantined with a reason naming what is wrong, nothing queued for it, good parts accepted,
the inbox empty). A failing batch prints its seed: ``--seed S --batches 1`` reproduces it.

Usage::

    python benchmarks/fuzz_inbox.py [--batches 200] [--bad 25] [--good 3] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
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

import test_inbox_fuzz as fuzz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--bad", type=int, default=25)
    ap.add_argument("--good", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first batch (batch i uses seed + i)")
    ap.add_argument("--keep", action="store_true", help="keep the folders of a failing batch")
    args = ap.parse_args(argv)
    logging.getLogger("dwfhpc").setLevel(logging.CRITICAL)  # every quarantine is logged as an error
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
