"""Warm-worker CPU for ``benchmarks/cpu.py``: run with one tree's ``PYTHONPATH``, pinned to one core.

In this one Python process, after one warm-up CCD, every science CCD goes through the node path
(``dwfhpc.node.run.run_spec_result``: stage the member out of its part, verify, decompress,
calibrate, QA, WCS, write products, copy back) and ``time.process_time()`` (user + system CPU of
this process, all threads) is read around it. Per step, the package's own functions are wrapped
(those a tree has; exclusive attribution: time in a nested wrapped call goes to the inner step);
what no wrapper covers is ``other``. Likewise the warm packer: ``pack_exposure`` of each science
raw with the package's default codec, compression in a thread of this process (``pool=``) so its
CPU is ours, after one warm-up exposure. Prints one JSON object.

Usage: PYTHONPATH=TREE python3 benchmarks/cpu_warm.py --specs DIR --products DIR --scratch DIR
       [--raws RAW...] [--pack-out DIR] [--cpu N]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # benchmarks/ holds modules named like stdlib ones (codecs.py)

STEPS = {  # function name -> step, wherever a tree defines or imports it (a tree may lack some names)
    "extract_member": "stage", "sha256_file": "verify", "check_member_file": "verify",
    "restore_ccd": "decompress", "check_restored": "decompress", "restore_pixels": "decompress",
    "read_raw_ccds": "read", "read_pixels": "read", "read_master": "read", "read_master_pixels": "read",
    "bpm_file": "read", "bad_pixel_mask": "read", "bad_pixel_boxes": "read", "find_masters": "read",
    "calibrate_array": "calibrate", "flag_boxes": "calibrate",
    "measure_qa": "qa", "check_wcs": "wcs", "apply_shift": "wcs",
    "write_image": "write", "write_mask": "write", "write_catalog": "write", "write_qa": "write",
    "copy_back": "copyback", "calibrate_file": "other (calibrator)",
}
MODULES = ("dwfhpc.node.run", "dwfhpc.node.stage", "dwfhpc.parts", "dwfhpc.calibrate", "dwfhpc.calibrate.calibrator",
           "dwfhpc.calibrate.rawio", "dwfhpc.calibrate.qa", "dwfhpc.calibrate.wcs", "dwfhpc.calibrate.products",
           "dwfhpc.calibrate.bpm", "dwfhpc.calibrate.masters", "dwfhpc.backends.embedded")
ORDER = ("stage", "verify", "decompress", "read", "calibrate", "qa", "wcs", "write", "other (calibrator)",
         "copyback", "other")


class Steps:
    """Exclusive CPU per step: a wrapped call pauses the step that called it."""

    def __init__(self):
        self.stack: list[str] = []
        self.cpu: dict[str, float] = {}
        self.mark = 0.0

    def _switch(self, now: float) -> None:
        if self.stack:
            self.cpu[self.stack[-1]] = self.cpu.get(self.stack[-1], 0.0) + now - self.mark
        self.mark = now

    def run(self, step: str, fn, *a, **k):
        self._switch(time.process_time())
        self.stack.append(step)
        try:
            return fn(*a, **k)
        finally:
            self._switch(time.process_time())
            self.stack.pop()

    def wrap(self, fn, step: str):
        @functools.wraps(fn)
        def wrapped(*a, **k):
            return self.run(step, fn, *a, **k)
        return wrapped

    def take(self) -> dict[str, float]:
        out, self.cpu = self.cpu, {}
        return out


def install(steps: Steps) -> list[str]:
    """Wrap every binding of the STEPS functions in the loaded dwfhpc modules (lazy imports included:
    ``from ..calibrate import calibrate_file`` inside a function reads the patched package attribute)."""
    import importlib

    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    wrappers: dict[int, object] = {}
    wrapped = []
    for modname, mod in sorted(sys.modules.items()):
        if not modname.startswith("dwfhpc") or mod is None:
            continue
        for name, step in STEPS.items():
            obj = mod.__dict__.get(name)
            if not callable(obj) or getattr(obj, "_cpu_step", None):
                continue
            if id(obj) not in wrappers:
                w = steps.wrap(obj, step)
                w._cpu_step = step
                wrappers[id(obj)] = w
            setattr(mod, name, wrappers[id(obj)])
            wrapped.append(f"{modname}.{name}")
    return wrapped


def science_tasks(specs: Path, products: Path, scratch: Path) -> list[tuple[object, int, str]]:
    from dwfhpc.node.spec import TaskSpec

    tasks = []
    for path in sorted(specs.rglob("*.json")):
        if ".result-" in path.name:
            continue
        try:
            spec = TaskSpec.read(path)
        except Exception:  # noqa: BLE001 - not a task spec
            continue
        if spec.kind in ("bias", "flat"):
            continue
        spec = dataclasses.replace(spec, products=str(products), scratch_vars=[], scratch_fallback=str(scratch),
                                   min_free_gb=0.01)
        for i in range(len(spec.ccds)):
            tasks.append((spec, i, f"{spec.expid}/{spec.ccd_for(i)}"))
    return sorted(tasks, key=lambda t: t[2])


def warm_worker(args, out: dict) -> None:
    from dwfhpc.node.run import run_spec_result

    steps = Steps()
    out["wrapped"] = install(steps)
    tasks = science_tasks(args.specs, args.products, args.scratch)
    if not tasks:
        raise SystemExit(f"no science task specs under {args.specs}")
    rows = []
    for n, (spec, i, name) in enumerate([tasks[0], *tasks]):
        steps.take()
        c0 = time.process_time()
        result = steps.run("other", run_spec_result, spec, i)
        cpu = time.process_time() - c0
        status = getattr(result, "status", None)
        status = getattr(status, "value", status)
        if status != "ok":
            raise SystemExit(f"{name}: {status}: {getattr(result, 'error', '')}")
        if n:  # the first run is the warm-up
            rows.append({"ccd": name, "cpu": cpu, "steps": steps.take(), "wall": result.timings.get("total")})
    out["worker"] = rows


def warm_packer(args, out: dict) -> None:
    from dwfhpc.parts import pack_exposure

    params = inspect.signature(pack_exposure).parameters
    codec = params["codec"].default if "codec" in params else None
    rows = []
    for n, raw in enumerate([args.raws[0], *args.raws]):
        dest = args.pack_out / f"{n}"
        with ThreadPoolExecutor(max_workers=1) as pool:
            c0 = time.process_time()
            parts = pack_exposure(raw, dest, parts=4, pool=pool)
            cpu = time.process_time() - c0
        from dwfhpc.parts import read_manifest
        m = read_manifest(parts[0].manifest)
        n_ccds = sum(len(read_manifest(p.manifest).members) for p in parts)
        if n:
            rows.append({"raw": Path(raw).name, "cpu": cpu, "ccds": n_ccds, "codec": m.codec})
        for p in parts:
            p.tar.unlink(missing_ok=True)
    out["packer"] = {"default_codec": codec, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--specs", type=Path, required=True)
    ap.add_argument("--products", type=Path, required=True)
    ap.add_argument("--scratch", type=Path, required=True)
    ap.add_argument("--raws", type=Path, nargs="*", default=[])
    ap.add_argument("--pack-out", type=Path, default=None)
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    core = args.cpu if args.cpu is not None else cpus[-1]
    os.sched_setaffinity(0, {core})
    args.scratch.mkdir(parents=True, exist_ok=True)
    out: dict = {"core": core, "affinity": sorted(os.sched_getaffinity(0))}
    c0 = time.process_time()
    import dwfhpc  # noqa: F401 - the import's CPU is reported apart
    import dwfhpc.node.run  # noqa: F401
    out["import_cpu"] = time.process_time() - c0
    warm_worker(args, out)
    if args.raws and args.pack_out:
        warm_packer(args, out)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["children_cpu"] = ch.ru_utime + ch.ru_stime  # should be ~0: everything ran in this process
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
