"""Node task benchmark: one full-size DECam CCD through ``dwfhpc node run``, time by stage.

Baseline in the same run: ``calibrate_file`` on the same CCD, already decompressed, in the same
process (what calibration costs without the node's staging). Reports, as medians over repeats:
per-stage times, the node overhead (stage + verify + decompress + copy back) as a fraction of the
calibration time (target < 25%), and the bytes the task wrote to the "shared FS" folders
(products, library, spec folder: measured by listing them before and after, not from the task's
own report) against the final products' size (target <= 1.1x). Here scratch and the "shared FS"
are folders on the same local disk; on a cluster the copy-back goes over Lustre/GPFS.
Writes benchmarks/results/node.md. Usage: python benchmarks/node.py [--repeats 3] [--codec rice]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from dwfhpc.calibrate import build_night_masters, calibrate_file, find_master
from dwfhpc.config import load_site
from dwfhpc.node import TaskSpec, run_task
from dwfhpc.parts import pack_exposure, unpack_part
from dwfhpc.simulate import simulate_decam_exposure

CCD = 25
STAGES = ("stage", "verify", "decompress", "calibrate", "qa", "copyback")


def tree(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def written(before: dict, after: dict) -> int:
    return sum(size for p, (size, mtime) in after.items() if before.get(p) != (size, mtime))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--codec", default="rice")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "node.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dwf-bench-node-") as tmp:
        root = Path(tmp)
        (root / "scratch").mkdir()
        site = load_site("local", workdir=root, overrides={"node": {"scratch_vars": [], "min_free_gb": 0.05,
                                                                     "scratch_fallback": str(root / "scratch")}})
        parts = {}
        for expnum, obstype in ((1, "zero"), (2, "dome flat"), (3, "object")):
            raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=[CCD], seed=expnum, jobs=1)
            parts[obstype] = pack_exposure(raw, root / "parts", codec=args.codec, parts=1, jobs=1)[0]
        for obstype in ("zero", "dome flat"):
            spec = TaskSpec.from_site(site, parts[obstype].manifest, parts[obstype].tar)
            assert run_task(spec.write(root / "specs" / f"{obstype[0]}.json"), 0)["status"] == "ok"
        night = TaskSpec.from_site(site, parts["object"].manifest, parts["object"].tar).night
        masters = site.path(site.calibration.masters)
        build_night_masters(site.path(site.calibration.library), masters, night, progress=lambda line: None)
        bias, flat = find_master(masters, "bias", night, CCD), find_master(masters, "flat", night, CCD, "g")
        raw_ccd = unpack_part(parts["object"].tar, root / "ccd")[0]
        member_bytes = parts["object"].tar.stat().st_size

        shared = [site.path(site.calibration.products), site.path(site.calibration.library), root / "specs"]
        node_rows, direct, shared_bytes, product_bytes, cli_bytes = [], [], [], [], []
        for i in range(args.repeats):
            t = time.perf_counter()
            calibrate_file(raw_ccd, root / f"direct{i}", bias=bias, flat=flat, ccd=CCD)
            direct.append(time.perf_counter() - t)

            spec = TaskSpec.from_site(site, parts["object"].manifest, parts["object"].tar, attempt=i + 1)
            spec_path = spec.write(root / "specs" / f"science-{i}.json")
            before = {r: tree(r) for r in shared}
            t = time.perf_counter()
            result = run_task(spec_path, 0)
            wall = time.perf_counter() - t
            assert result["status"] == "ok", result["error"]
            shared_bytes.append(sum(written(before[r], tree(r)) for r in shared))
            product_bytes.append(sum(Path(p).stat().st_size for p in result["products"].values()))
            node_rows.append({**result["timings"], "wall": wall})

            before = {r: tree(r) for r in shared}  # the CLI path also leaves a result file beside the spec
            proc = subprocess.run([sys.executable, "-m", "dwfhpc.cli", "node", "run", str(spec_path), "--index", "0"],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            cli_bytes.append(sum(written(before[r], tree(r)) for r in shared))

    med = {k: statistics.median(r.get(k, 0.0) for r in node_rows) for k in (*STAGES, "total", "wall")}
    calib = med["calibrate"] + med["qa"]
    overhead = med["stage"] + med["verify"] + med["decompress"] + med["copyback"]
    d = statistics.median(direct)
    prod = statistics.median(product_bytes)
    ratio = statistics.median(shared_bytes) / prod
    cli_ratio = statistics.median(cli_bytes) / prod
    lines = [
        "# Node task benchmark",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores (shared with other work), "
        f"python {platform.python_version()}. `python benchmarks/node.py --repeats {args.repeats} --codec {args.codec}`",
        "",
        f"One full-size simulated DECam CCD ({CCD}, 2160x4146 int16, `{args.codec}` member {member_bytes / 1e6:.1f} MB in its part), "
        f"master bias + flat, no reference catalog. Medians of {args.repeats} runs. Scratch and the \"shared FS\" are "
        "folders on the same local disk here.",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {med[k]:.3f} |" for k in STAGES],
        f"| total (run_task) | {med['total']:.3f} |",
        "",
        f"- baseline `calibrate_file` on the decompressed CCD, same process: **{d:.3f} s** "
        f"(node calibrate + qa: {calib:.3f} s)",
        f"- node overhead (stage + verify + decompress + copy back) = {overhead:.3f} s = "
        f"**{100 * overhead / calib:.1f}%** of calibrate + qa (target < 25%: {'met' if overhead / calib < 0.25 else 'NOT met'}); "
        f"whole task vs baseline: {100 * (med['total'] / d - 1):+.1f}%",
        f"- bytes written to the shared-FS folders per CCD: {statistics.median(shared_bytes) / 1e6:.2f} MB vs final products "
        f"{prod / 1e6:.2f} MB = **{ratio:.3f}x** (target <= 1.1x: {'met' if ratio <= 1.1 else 'NOT met'}); "
        f"with the CLI's result JSON beside the spec: {cli_ratio:.3f}x",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
