"""CPU-seconds per CCD of the embedded calibrator in a warm process, split by step.

One full-size DECam CCD (2160x4146 raw -> 2048x4096), simulated on the real headers, with master
bias, master flat, the shipped bad-pixel boxes and a reference catalog (the full path a node task
runs). Staging (extract + verify + decompress, the node's ``stage_ccd``) is timed too. Steps are
timed with ``time.process_time`` by wrapping the functions ``calibrate_file`` calls:

read (headers, pixels, masters, bad pixels), overscan/trim, bias/flat/mask (the rest of
``calibrate_array``), QA (sep), WCS (header trim, reference match, shift, catalog sky positions),
write (the four products), other (what is left: building the catalog table, header cards).

Usage: python benchmarks/calibrate_lean.py [--repeats 5] [--ccd 25] [--profile]
Run it against another checkout with PYTHONPATH=<that checkout> to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

STEPS = ("stage", "read", "overscan/trim", "bias/flat/mask", "QA", "WCS", "write", "other")
WRAP = {"read_raw_ccds": "read", "read_pixels": "read", "read_master": "read", "bpm_file": "read",
        "bad_pixel_mask": "read", "read_raw": "read", "overscan_trim_assemble": "overscan/trim",
        "measure_qa": "QA", "check_wcs": "WCS", "apply_shift": "WCS", "trimmed_header": "WCS", "WCS": "WCS",
        "sky_positions": "WCS", "write_image": "write", "write_mask": "write", "write_catalog": "write",
        "write_qa": "write", "write_products": "write"}


class Clock:
    """Exclusive process time per step: nested wrapped calls are charged to the innermost step."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []

    def wrap(self, step: str, fn):
        @functools.wraps(fn)
        def timed(*a, **k):
            now = time.process_time()
            if self.stack:
                self.spent[self.stack[-1][0]] += now - self.stack[-1][1]
            self.stack.append([step, now])
            try:
                return fn(*a, **k)
            finally:
                end = time.process_time()
                s, start = self.stack.pop()
                self.spent[s] += end - start
                if self.stack:
                    self.stack[-1][1] = end
        return timed


def fixtures(root: Path, ccd: int):
    from astropy.io import fits

    from dwfhpc.calibrate import build_master
    from dwfhpc.parts import pack_exposure, read_manifest, unpack_part
    from dwfhpc.simulate import simulate_decam_exposure

    files, parts = {}, {}
    for expnum, obstype in ((1, "zero"), (2, "dome flat"), (3, "object")):
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=[ccd], seed=expnum, jobs=1,
                                      catalog_out=root / "refcat.fits" if expnum == 3 else None)
        parts[obstype] = pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1)[0]
        files[obstype] = unpack_part(parts[obstype].tar, root / "ccd" / obstype)[0]
    bias = build_master("bias", [files["zero"]], root / "bias.fits")
    flat = build_master("flat", [files["dome flat"]], root / "flat.fits", bias=bias)
    assert fits.getheader(files["object"])["CCDNUM"] == ccd
    return files["object"], parts["object"], read_manifest(parts["object"].manifest), bias, flat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ccd", type=int, default=25)
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of one calibrate_file")
    args = ap.parse_args()

    import dwfhpc
    import dwfhpc.calibrate.calibrator as cal
    from dwfhpc.calibrate import calibrate_file
    from dwfhpc.node.stage import stage_ccd

    bpm = Path(dwfhpc.__file__).parent / "data" / "bpm_decam"
    with tempfile.TemporaryDirectory(prefix="dwf-lean-") as tmp:
        root = Path(tmp)
        raw, part, manifest, bias, flat = fixtures(root, args.ccd)
        kw = dict(bias=bias, flat=flat, bpm=bpm, refcat=root / "refcat.fits", ccd=args.ccd)
        out = calibrate_file(raw, root / "warm", **kw)  # warm: imports, caches (bpm index, refcat)
        print(f"warm-up: {out.qa['n_sources']} sources, wcs {out.wcs['status']} rms {out.wcs['rms']}", file=sys.stderr)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            calibrate_file(raw, root / "prof", **kw)
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)

        clock = Clock()
        for name, step in WRAP.items():
            if hasattr(cal, name):
                setattr(cal, name, clock.wrap(step, getattr(cal, name)))
        calibrate_array = clock.wrap("bias/flat/mask", cal.calibrate_array)
        cal.calibrate_array = calibrate_array
        rows: list[dict[str, float]] = []
        totals = []
        for i in range(args.repeats):
            clock.spent.clear()
            t = time.process_time()
            staged = stage_ccd(part.tar, manifest, args.ccd, root / f"scratch{i}")
            stage = time.process_time() - t
            t = time.process_time()
            calibrate_file(raw, root / f"out{i}", **kw)
            total = time.process_time() - t
            row = dict(clock.spent)
            row["other"] = total - sum(row.values())
            row["stage"] = stage
            rows.append(row)
            totals.append(total)
            staged.raw.unlink()
    print(f"| step | CPU-s median of {args.repeats} | min |")
    print("|---|---|---|")
    for s in STEPS:
        values = [r.get(s, 0.0) for r in rows]
        print(f"| {s} | {statistics.median(values):.3f} | {min(values):.3f} |")
    both = [t + r["stage"] for t, r in zip(totals, rows)]
    print(f"| calibrate_file total | {statistics.median(totals):.3f} | {min(totals):.3f} |")
    print(f"| stage + calibrate_file | {statistics.median(both):.3f} | {min(both):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
