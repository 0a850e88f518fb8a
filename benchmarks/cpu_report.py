"""The markdown for ``benchmarks/cpu.py``: benchmarks/results/cpu.md."""

from __future__ import annotations

import statistics
from pathlib import Path

ALL_IN, PACK, WARM = 1.0, 0.05, 0.6  # targets, CPU-s per science CCD (issue 24 item 1)


def components(r: dict, phase: str) -> dict[str, float | None]:
    """CPU-seconds of one tree's phase ("sci" or "cal") by component (not divided)."""
    ing = r[f"ingest_{phase}"]
    out = {"pack (`dwfhpc pack` processes, incl. their pools)": sum(x["cpu"] for x in r[f"pack_{phase}"]),
           "rsync + ssh client (rsync, ssh mux, ControlMaster)": r[f"xfer_{phase}"]["client"],
           "sshd + remote rsync": r[f"xfer_{phase}"]["server"],
           "ingest daemon": ing.get("daemon"),
           "node tasks (submitit local processes)": ing.get("tasks")}
    if not ing.get("split"):
        out["ingest daemon"] = None
        out["node tasks (submitit local processes)"] = None
        out["ingest daemon + node tasks (not split)"] = ing["total"]
    out["**total**"] = sum(v for v in out.values() if v is not None)
    return out


def nt(comp: dict) -> float:
    v = comp.get("node tasks (submitit local processes)")
    return float("nan") if v is None else v


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a in (None, 0) or b is None else f"{b / a:.2f}x"


def verdict(value: float, target: float) -> str:
    if value <= target:
        return f"**met** ({value:.3f} <= {target}, {100 * (1 - value / target):.0f}% under)"
    return f"**not met** ({value:.3f} > {target}: {value / target:.2f}x the target, {value - target:+.3f} CPU-s)"


def warm_steps(w: dict) -> tuple[dict[str, float], float, float]:
    rows = w["worker"]
    n = len(rows)
    steps: dict[str, float] = {}
    for r in rows:
        for k, v in r["steps"].items():
            steps[k] = steps.get(k, 0.0) + v / n
    return steps, sum(r["cpu"] for r in rows) / n, statistics.median(r["cpu"] for r in rows)


def warm_pack(w: dict) -> float:
    rows = w["packer"]["rows"]
    return sum(r["cpu"] for r in rows) / max(1, sum(r["ccds"] for r in rows))


def write_report(out: Path, results: dict[str, dict], meta: dict) -> None:
    b, c = results["baseline"], results["current"]
    n_sci = meta["ccds"] * meta["exposures"]
    n_cal = meta["ccds"] * meta["cal_exposures"]
    sb, sc = components(b, "sci"), components(c, "sci")
    cb, cc = components(b, "cal"), components(c, "cal")
    lb, lc = meta["load_before"], meta["load_after"]
    codec = lambda r: ",".join(sorted({x["codec"] for x in r["pack_sci"]}))  # noqa: E731
    mb = lambda r: sum(x["bytes"] for x in r["pack_sci"]) / n_sci / 1e6  # noqa: E731
    lines = [
        "# CPU accounting: CPU-seconds per science CCD, by component",
        "",
        f"{meta['date']}; nproc {meta['nproc']}; load average (1, 5, 15 min) before "
        f"{lb[0]:.2f}, {lb[1]:.2f}, {lb[2]:.2f}, after {lc[0]:.2f}, {lc[1]:.2f}, {lc[2]:.2f} "
        f"(other work shared the machine). `{meta['command']}` ({meta['seconds']:.0f} s in all)"
        + (" -- **--quick smoke run**" if meta["quick"] else "") + ".",
        "",
        f"- baseline: `{b['tree']}` at {b['commit']}",
        f"- current: `{c['tree']}` at {c['commit']}",
        "",
        f"Inputs, made once by the current tree's simulator and used by both trees: DECam CCDs 1-{meta['ccds']}, "
        f"{meta['cal_exposures'] // 2} biases + {meta['cal_exposures'] // 2} dome flats + {meta['exposures']} "
        f"science exposures, RICE tile-compressed `.fits.fz` MEFs as SISPI writes them (the simulator already "
        f"writes these, so no fpack step; both trees' pack take `.fits.fz`), "
        f"{meta['raw_mb'] / (n_sci):.1f} MB per science CCD. {n_sci} science CCDs, {n_cal} calibration CCDs.",
        "",
        "Kernel accounting only (user + system CPU): each component is a child process reaped with "
        "`os.wait4`, whose rusage includes every descendant it reaped; the ingest daemon runs inside a "
        "wrapper that records its own `RUSAGE_SELF` and its reaped children's `RUSAGE_CHILDREN` at exit "
        "(daemon = wait4 total - children, so interpreter teardown is the daemon's; node tasks = its children, "
        "submitit's local task processes). Per science CCD = science-phase CPU / science CCDs.",
        "",
        "## All-in, per science CCD",
        "",
        "| component | baseline CPU-s / sci CCD | current CPU-s / sci CCD | current / baseline |",
        "|---|---|---|---|",
    ]
    for k in sb:
        vb = sb[k] / n_sci if sb[k] is not None else None
        vc = sc.get(k) / n_sci if sc.get(k) is not None else None
        lines.append(f"| {k} | {fmt(vb)} | {fmt(vc)} | {ratio(vb, vc)} |")
    for k in sc:
        if k not in sb:
            lines.append(f"| {k} | n/a | {fmt(sc[k] / n_sci)} | n/a |")
    wb_steps, wb, wb_med = warm_steps(b["warm"])
    wc_steps, wc, wc_med = warm_steps(c["warm"])
    pb, pc = warm_pack(b["warm"]), warm_pack(c["warm"])
    total_c = sc["**total**"] / n_sci
    cli_pack_c = sc["pack (`dwfhpc pack` processes, incl. their pools)"] / n_sci
    lines += [
        "",
        f"Context: codec (each tree's default) baseline `{codec(b)}`, current `{codec(c)}`; part bytes per science "
        f"CCD {mb(b):.2f} MB vs {mb(c):.2f} MB. Ingest science phase wall {b['ingest_sci']['wall']:.1f} s vs "
        f"{c['ingest_sci']['wall']:.1f} s; `{b['ingest_sci']['tasks_line']}` / `{c['ingest_sci']['tasks_line']}`; "
        f"product files {b['products']} / {c['products']}. The transfer holds one ControlMaster per phase "
        "(its key exchange is in the client and sshd rows; push keeps one per stream for the night).",
        "",
        "## Targets (current tree)",
        "",
        f"- all-in CPU per science CCD <= {ALL_IN}: {verdict(total_c, ALL_IN)}",
        f"- packing an already tile-compressed raw <= {PACK} CPU-s per CCD: warm packer (a running packer, as "
        f"push's pool; default codec `{c['warm']['packer']['default_codec']}`): {verdict(pc, PACK)}; "
        f"a cold `dwfhpc pack` process per exposure (interpreter start + imports + pool, spread over "
        f"{meta['ccds']} CCDs): {verdict(cli_pack_c, PACK)}",
        f"- warm worker <= {WARM} CPU-s per CCD on one core: {verdict(wc, WARM)}",
        "",
        "## Warm worker, per CCD on one core (`benchmarks/cpu_warm.py`)",
        "",
        "One Python process per tree pinned to one core (`os.sched_setaffinity`), one warm-up CCD, then every "
        "science CCD through `dwfhpc.node.run.run_spec_result` (the `node run` path: stage the member out of "
        "its part into scratch, verify, decompress, calibrate, QA, WCS, write the products, copy back); "
        "`time.process_time()` (this process's user + system CPU, all threads) per CCD. Steps: the package's "
        "functions wrapped in that process, exclusive (a nested wrapped call counts to the inner step); "
        "`other` = the task's own code outside them (scratch, result, manifest).",
        "",
        "| step | baseline CPU-s / CCD | current CPU-s / CCD | current / baseline |",
        "|---|---|---|---|",
    ]
    order = ("stage", "verify", "decompress", "read", "calibrate", "qa", "wcs", "write", "other (calibrator)",
             "copyback", "other")
    for k in [*order, *sorted((set(wb_steps) | set(wc_steps)) - set(order))]:
        if k in wb_steps or k in wc_steps:
            lines.append(f"| {k} | {fmt(wb_steps.get(k))} | {fmt(wc_steps.get(k))} | "
                         f"{ratio(wb_steps.get(k), wc_steps.get(k))} |")
    lines += [
        f"| **per CCD (mean)** | **{wb:.3f}** | **{wc:.3f}** | {ratio(wb, wc)} |",
        f"| per CCD (median) | {wb_med:.3f} | {wc_med:.3f} | {ratio(wb_med, wc_med)} |",
        f"| warm packer, per CCD (`pack_exposure`, its compression in a thread of the process) | {pb:.4f} | "
        f"{pc:.4f} | {ratio(pb, pc)} |",
        f"| import dwfhpc + dwfhpc.node.run, once per process (not per CCD) | {b['warm']['import_cpu']:.3f} | "
        f"{c['warm']['import_cpu']:.3f} | {ratio(b['warm']['import_cpu'], c['warm']['import_cpu'])} |",
        "",
        f"Measured over {len(c['warm']['worker'])} CCDs (core {c['warm']['core']}). CPU of the warm process's "
        f"reaped children (not in the figures; the node path runs in-process): baseline "
        f"{b['warm']['children_cpu']:.3f} s, current {c['warm']['children_cpu']:.3f} s.",
        "",
        f"What a cold task pays beyond a warm worker (node tasks per science CCD in the all-in table minus the warm "
        f"per-CCD figure: a fresh interpreter, its imports, submitit's pickles and the result file): baseline "
        f"{nt(sb) / n_sci - wb:.3f} CPU-s, current {nt(sc) / n_sci - wc:.3f} CPU-s per CCD.",
        "",
        "## Calibration frames, shown apart",
        "",
        "Biases and dome flats go through pack, transfer and ingest in a phase of their own before the science "
        "(ingest `--drain` files them and builds the night's masters, in a thread of the daemon); none of "
        "it is in the science figures above. Masters on disk after the calibration phase: baseline "
        f"{b['masters_after_cal']} files, current {c['masters_after_cal']} files.",
        "",
        "| component | baseline CPU-s (all) | current CPU-s (all) | baseline / cal CCD | current / cal CCD |",
        "|---|---|---|---|---|",
    ]
    for k in dict.fromkeys([*cb, *cc]):
        vb, vc = cb.get(k), cc.get(k)
        lines.append(f"| {k} | {fmt(vb, 2)} | {fmt(vc, 2)} | {fmt(vb / n_cal if vb is not None else None)} | "
                     f"{fmt(vc / n_cal if vc is not None else None)} |")
    lines += [
        "",
        "## Notes",
        "",
        "- CPU-seconds, not wall: still, a busy machine (see the load average) inflates them somewhat "
        "(shared caches, SMT siblings); both trees ran in sequence under similar load. Wall times above are "
        "context only.",
        "- The ingest daemon's figure includes its interpreter start and imports and, in the calibration "
        "phase, the master building (a thread of the daemon). Node tasks include every task's fresh "
        "interpreter and imports (a cold task per CCD); the warm-worker table is the same path without them.",
        "- Every `python -m dwfhpc` runs from the work folder, never from a checkout (`python -m` puts the "
        "working folder first on `sys.path`, so from /work/main `PYTHONPATH=BASELINE python3 -m dwfhpc` would "
        "run the current tree); each tree's `import dwfhpc` is checked before it is measured.",
        "- A tree being edited is measured as it is at the time of the run (the diff hash above).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
