"""Codec benchmark on a simulated DECam exposure, with fpack/funpack measured in the same run.

For each codec: compression ratio (raw 16-bit bytes / compressed bytes), MB/s per core to
compress and decompress, the noise a lossy codec adds in units of the sky noise, and the median
relative flux error of bright unsaturated stars. fpack (Debian libcfitsio-bin) is the baseline.
Writes benchmarks/results/codecs.md. Usage: python benchmarks/codecs.py [--ccds 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import fitsio
import numpy as np

from dwfhpc.codecs.base import write_raw_fits
from dwfhpc.instruments import read_ccd_headers
from dwfhpc.parts.fidelity import measure
from dwfhpc.simulate import simulate_decam_exposure

CODECS = [("none", {}), ("rice", {}), ("rice-q", {"qlevel": 4}), ("rice-q", {"qlevel": 8}),
          ("jp2", {"ratio": 10}), ("jp2-lossless", {})]


def fpack_row(header, data, work: Path) -> tuple[float, float, float]:
    src = work / "ccd.fits"
    write_raw_fits(src, header, data)
    out = work / "ccd.fits.fz"
    t = time.perf_counter()
    subprocess.run(["fpack", "-r", "-O", str(out), str(src)], check=True)
    tc = time.perf_counter() - t
    back = work / "back.fits"
    t = time.perf_counter()
    subprocess.run(["funpack", "-O", str(back), str(out)], check=True)
    td = time.perf_counter() - t
    ratio = data.nbytes / out.stat().st_size
    for f in (src, out, back):
        f.unlink()
    return ratio, data.nbytes / 1e6 / tc, data.nbytes / 1e6 / td


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ccds", type=int, default=8)
    args = ap.parse_args()
    ccds = [25, 32, 1, 62, 10, 40, 20, 50, 5, 55][: args.ccds]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = simulate_decam_exposure(work, expnum=1, ccds=ccds, seed=1)
        inst, _, headers = read_ccd_headers(raw)
        rows: dict[str, list] = {}
        fp = []
        for h in headers:
            data = fitsio.read(str(raw), ext=h.hdu).astype(np.uint16)
            geometry = inst.geometry(h.header)
            for name, params in CODECS:
                f = measure(name, h.header, data, geometry, work, **params)
                rows.setdefault(f.codec, []).append(f)
            if shutil.which("fpack"):
                fp.append(fpack_row(h.header, data, work))
    lines = [
        "# Codecs on simulated DECam CCDs (real headers, g band, 20 s)",
        "",
        f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {len(ccds)} CCDs of 2160x4146 uint16 (17.9 MB each); "
        "one process, so MB/s is per core.",
        "",
        "| codec | ratio | compress MB/s/core | decompress MB/s/core | added noise / sky sigma | bright-star flux error |",
        "|---|---|---|---|---|---|",
    ]
    for name, fs in rows.items():
        lines.append(f"| {name} | {np.mean([f.ratio for f in fs]):.2f} | {np.mean([f.compress_mb_s for f in fs]):.0f} | "
                     f"{np.mean([f.decompress_mb_s for f in fs]):.0f} | {np.mean([f.added_noise for f in fs]):.3f} | "
                     f"{np.nanmedian([f.star_flux_error for f in fs]):.1e} |")
    if fp:
        r, c, d = np.mean(fp, axis=0)
        lines.append(f"| fpack -r / funpack (baseline, includes process start) | {r:.2f} | {c:.0f} | {d:.0f} | 0 | 0 |")
    budget = 1200 / 60
    lines += [
        "",
        f"Budget: one 1.2 GB DECam exposure per minute is {budget:.0f} MB/s; on an 8-core telescope machine that is "
        f"{budget / 8:.1f} MB/s per core for compression. Ratios are against the raw 16-bit bytes "
        "(cfitsio quotes rice-q against float32, i.e. twice these numbers).",
    ]
    out = Path(__file__).parent / "results" / "codecs.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
