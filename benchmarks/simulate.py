"""How long a full 62-CCD simulated DECam exposure takes (target <= 30 s on 2 cores).

Baseline in the same run: the least any simulator must do for the same output, i.e. draw the
same number of Gaussian uint16 pixels and RICE-compress them into a 62-extension MEF with fitsio
on one core. Writes benchmarks/results/simulate.md.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import fitsio
import numpy as np

from dwfhpc.simulate import simulate_decam_exposure


def baseline(path: Path, nccd: int = 62) -> float:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None)
        for _ in range(nccd):
            data = (2000 + 5 * rng.standard_normal((4146, 2160), dtype=np.float32)).astype(np.uint16)
            f.write(data, compress="RICE", tile_dims=[1, 2160])
    return time.perf_counter() - t


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        path = simulate_decam_exposure(tmp, expnum=1)
        sim = time.perf_counter() - t
        size = path.stat().st_size / 1e6
        base = baseline(tmp / "baseline.fits.fz")
    lines = [
        "# Simulator: one full DECam exposure (62 CCDs, 2160x4146, RICE tile-compressed)",
        "",
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        "",
        "| what | seconds | per CCD | ratio to baseline |",
        "|---|---|---|---|",
        f"| dwfhpc simulate (all cores) | {sim:.1f} | {sim / 62:.2f} | {sim / base:.2f} |",
        f"| baseline: Gaussian pixels + fitsio RICE, 1 core | {base:.1f} | {base / 62:.2f} | 1.00 |",
        "",
        f"Output {size:.0f} MB. Target: <= 30 s on this 2-core machine: {'met' if sim <= 30 else 'NOT met'}.",
    ]
    out = Path(__file__).parent / "results" / "simulate.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
