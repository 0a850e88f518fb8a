"""The night model's inputs: a measured ``night.json`` (arrays or warm workers), the markdown results' figures
and the parameters they give for this machine and for a site (:func:`site_params`)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from night_model_sim import *  # noqa: F403 - Params, simulate and the constants the inputs use
from night_model_sim import HERE, RESULTS, STAGES, Params, pct  # noqa: F401

# --------------------------------------------------------------------------- inputs
#: the measured night main() reads by default (and the validation test)
NIGHT_JSON = RESULTS / "night.json"
TASK_KEYS = ("start", "stage", "calibrate", "copyback", "other")
#: ``meta.cpu.components`` (benchmarks/common/cpusample.py) that run beside the workers on this VM's cores
TELESCOPE_SIDE = ("push (watch, pack, send)", "receiver (sshd, dwfhpc receive, rsync)", "ssh client",
                  "ingest daemon", "Slurm daemons", "WAN emulator", "benchmark driver (telescope writes, queries)")
WORKER_CPU = "warm workers (node code)"


def _model_stages(st: dict) -> dict:
    """A record's stages in the model's names: worker mode's wait_worker + dispatch are the model's queue."""
    out = {k: (v or 0.0) for k, v in st.items() if k not in ("wait_worker", "dispatch")}
    if "queue" not in st:
        out["queue"] = (st.get("wait_worker") or 0.0) + (st.get("dispatch") or 0.0)
    return {k: out.get(k, 0.0) for k in STAGES}


def cpu_inputs(cpu: dict | None, n_ccds: int, n_exposures: int) -> dict | None:
    """From ``meta.cpu``: the workers' CPU-s per CCD, the telescope side's CPU-s per exposure, the other load in
    cores and the machine's cores (capacity / window); None without the figures or the workers' row."""
    if not cpu or not cpu.get("components") or not cpu["components"].get(WORKER_CPU) or not n_ccds:
        return None
    comp, mach = cpu["components"], cpu.get("machine") or {}
    window = mach.get("window_s") or 0.0
    tel = sum(comp.get(k, 0.0) for k in TELESCOPE_SIDE)
    known = sum(comp.values())
    # the rest of the machine (other processes, kernel threads; /proc/stat busy that no sampled process
    # explains): background
    rest = (sum(v for k, v in comp.items() if k not in TELESCOPE_SIDE and k != WORKER_CPU)
            + max(0.0, (mach.get("busy_s") or 0.0) - known))
    return {"worker_cpu_per_ccd": comp[WORKER_CPU] / n_ccds, "telescope_cpu_per_exp": tel / max(1, n_exposures),
            "telescope_cpu_s": tel, "background_cores": rest / window if window > 0 else 0.0,
            "cores": float(max(1, round(mach["capacity_s"] / window))) if window > 0 and mach.get("capacity_s") else 2.0,
            "busy_share": (mach.get("busy_s") or 0.0) / mach["capacity_s"] if mach.get("capacity_s") else None,
            "window_s": window, "components": comp}


def night_inputs(path: Path = NIGHT_JSON) -> dict:
    """Everything the measured-night configuration takes from a ``night.json`` (``night_run.write_results``).

    Both formats: job arrays (per CCD ``queue`` and ``start`` from Slurm's StartTime) and warm workers
    (``meta.ingest_mode == "workers"``: ``wait_worker``, ``dispatch``, ``start`` = claimed -> started, ``worker``);
    older files have no ``ingest_mode`` (arrays) and no ``cpu``."""
    d = json.loads(Path(path).read_text())
    meta, ours = d["meta"], d["ours"]
    mode = meta.get("ingest_mode") or ours.get("ingest_mode") or "arrays"
    warm = mode == "workers"
    raw_ex = sorted(ours["exposures"], key=lambda e: e["written"])
    raw_ccds = ours["ccds"]
    ex = [{**e, "stages": _model_stages(e["stages"])} for e in raw_ex]
    ccds = [{**c, "stages": _model_stages(c["stages"])} for c in raw_ccds]
    written = {e["expid"]: e["written"] for e in ex}
    cadences = [b["written"] - a["written"] for a, b in zip(ex, ex[1:])]
    nccd = meta.get("nccd") or max(e.get("ccds", 0) for e in ex)
    jobs = 2  # packing processes: PushSettings.jobs default = os.cpu_count() = 2 on this VM
    # per exposure: pack_busy = t_packed - t_pack_start; the last part's "pack" stage - pack_busy = complete -> start
    pack_busy = [e["pack_busy"] for e in ex]
    pack_lag = [e["stages"]["pack"] - e["pack_busy"] for e in ex]
    # the cluster: when each task started on its slot (Slurm StartTime / a worker's claim) and finished
    runs = []
    for c in ccds:
        s = c["stages"]
        sub = written[c["expid"]] + sum(s[k] for k in ("wait", "pack", "transfer", "inbox", "hold"))
        runs.append((sub + s["queue"], c["finished"], sub))
    runs.sort()
    first_sci_submitted = min(sub for _, _, sub in runs) - ex[0]["written"]
    if warm:
        # a worker's dispatch: from the ticket (a worker idle) or from the end of its previous CCD (all busy: the
        # worker's turnover, its poll of the queue and the claim) -> claimed
        waited = [c["stages"] for c in raw_ccds if (c["stages"].get("wait_worker") or 0) > 0]
        idle = [c["stages"].get("dispatch") or 0.0 for c in raw_ccds if not (c["stages"].get("wait_worker") or 0) > 0]
        gaps = [max(0.0, s.get("dispatch") or 0.0) for s in waited]
    else:
        finishes = sorted(f for _, f, _ in runs)
        gaps, idle = [], []  # slot free -> next start while tasks waited; submit -> start on a free slot
        for start, _, sub in runs:
            prev = [f for f in finishes if f <= start]
            if sub < start - 0.5 and prev:  # it waited: the slot's turnover
                gaps.append(start - max(prev))
            else:
                idle.append(start - sub)
    samples = [tuple(c["stages"][k] for k in TASK_KEYS) for c in ccds]
    # complete -> the exposure delivered (its last part packed + all parts sent): the telescope side works on it
    busy = [e["stages"]["pack"] + e.get("send_busy", e["stages"]["transfer"]) for e in ex]
    workers = meta.get("workers") or ours.get("workers_seen") or 0
    return {
        "meta": meta, "path": str(path), "mode": mode, "workers": workers if warm else 0,
        "streams": meta.get("streams", 4), "exposures": ex, "ccds": ccds,
        "transport": meta.get("transport", "rsync"),
        "cadence_s": statistics.mean(cadences) if cadences else 60.0, "n_exposures": len(ex), "nccd": nccd,
        "mb_per_ccd": meta["mb_per_exp"] / nccd,
        "wait_s": statistics.median(c["stages"]["wait"] for c in ccds),
        "pack_start_s": statistics.median(pack_lag),
        "pack_ccd_s": statistics.median(pack_busy) * jobs / nccd, "jobs": jobs,
        "transfer_part_p50": statistics.median({round(c["stages"]["transfer"], 3) for c in ccds}),
        "inbox_s": max(0.0, statistics.median(c["stages"]["inbox"] for c in ccds)),
        "masters_ready_s": max(0.0, first_sci_submitted),
        "dispatch_s": statistics.median(idle) if idle else 0.1,
        "release_s": statistics.mean(gaps) if gaps else 0.0, "gaps_n": len(gaps),
        "task_means": {k: statistics.mean(c["stages"][k] for c in ccds) for k in TASK_KEYS},
        "task_samples": samples, "telescope_busy_s": statistics.median(busy),
        "cpu": cpu_inputs(meta.get("cpu"), len(ccds), len(ex)),
        "measured": {"p50": pct([e["total"] for e in ex], 50), "p95": pct([e["total"] for e in ex], 95),
                     "max": max(e["total"] for e in ex), "totals": [e["total"] for e in ex]},
    }


TRANSPORTS = ("rsync", "stream")


def link_params(transport: str = "rsync") -> dict:
    """The link model from transfer.md: usable rate, one stream's ceiling, per-call costs.

    ``rsync``: a handshake and a remote move per call; ``stream`` (``transport.stream``): neither, one
    answer per part."""
    t = MEASURED_MD["transfer.md"]
    own = t if transport == "rsync" else MEASURED_MD["transfer.md (streamed)"]
    call = t["rsync_handshake_s"] if transport == "rsync" else own["call_setup_s"]
    eff = t["link_capacity_mb_s"] / (t["link_nominal_mbit"] / 8)
    setup = call + own["move_rtts"] * t["rtt_s"]
    cap = t["exposure_mb"] / (own["streams1_s"] - setup)  # one stream, one part: setup + data at its ceiling
    return {"link_efficiency": eff, "stream_cap_mb_s": cap, "call_setup_s": call,
            "move_rtts": own["move_rtts"], "rtt_s": t["rtt_s"]}


def measured_night_params(ni: dict, contention: bool | None = None, resample: bool = False, **kw) -> Params:
    """The measured night's configuration: its sizes, cadence, link, mode (job arrays on 4 Slurm slots, or its warm
    workers: ``cluster_slots`` = workers, dispatch / turnover / start-up from the workers' figures).

    ``contention`` (default: on for worker mode when the run has its CPU figures): the tasks' stage + calibrate
    are the workers' CPU-s per CCD at one full core, stretched by sharing this VM's cores with the telescope
    side (its CPU-s per exposure over the exposure's busy time) and the other load; off: the run's measured
    wall times (which include that night's contention). ``resample``: task times drawn from the run's CCDs."""
    tm = ni["task_means"]
    warm = ni["mode"] == "workers"
    cpu = ni.get("cpu")
    use_cpu = (warm and cpu is not None) if contention is None else (contention and cpu is not None)
    base = dict(
        name="this machine's night", cadence_s=ni["cadence_s"], n_exposures=ni["n_exposures"], nccd=ni["nccd"],
        mb_per_ccd=ni["mb_per_ccd"], wait_s=ni["wait_s"], pack_start_s=ni["pack_start_s"],
        pack_ccd_s=ni["pack_ccd_s"], telescope_cores=ni["jobs"], parts=ni["streams"], streams=ni["streams"],
        link_mbit=200.0, **link_params(ni["transport"]), inbox_s=ni["inbox_s"], masters_ready_s=ni["masters_ready_s"],
        cluster_slots=max(1, ni["workers"]) if warm else 4, mode=ni["mode"], dispatch_s=ni["dispatch_s"],
        release_s=ni["release_s"], start_s=tm["start"], stage_s=tm["stage"], calibrate_s=tm["calibrate"],
        copyback_s=tm["copyback"], other_s=tm["other"])
    f = 1.0
    if use_cpu:
        wall = tm["stage"] + tm["calibrate"]
        f = cpu["worker_cpu_per_ccd"] / wall if wall > 0 else 1.0  # wall at one core = CPU-s, split as measured
        base.update(stage_s=tm["stage"] * f, calibrate_s=tm["calibrate"] * f, cluster_cores=cpu["cores"],
                    telescope_cpu_s=cpu["telescope_cpu_per_exp"], telescope_busy_s=ni["telescope_busy_s"],
                    background_cores=cpu["background_cores"])
    if resample:
        base["task_samples"] = [(a, b * f, c * f, d, e) for a, b, c, d, e in ni["task_samples"]]
    base.update(kw)
    return Params(**base)


def slurm_figures(ni: dict) -> dict:
    """This machine's Slurm (job arrays): from the night when it ran arrays, else the copy in MEASURED_MD."""
    if ni["mode"] == "arrays":
        return {"dispatch_s": ni["dispatch_s"], "release_s": ni["release_s"], "start_s": ni["task_means"]["start"]}
    return dict(MEASURED_MD["night.json (arrays, run 2026-12-05 05:49 UTC)"])


def auto_streams(link_mbit: float, rtt_s: float) -> int:
    """``push.streams: auto``: ``dwfhpc.link.capacity.streams_for_link`` (ceil(link / one ssh stream's
    2 MiB-per-RTT ceiling), 2..64); push then packs at least as many parts as streams."""
    from dwfhpc.link.capacity import streams_for_link  # the package is installed, as for every benchmark

    return streams_for_link(link_mbit, rtt_s * 1000.0)


def site_params(ni: dict, link_mbit: float, mode: str, transport: str = "rsync", streams: int | str = 4,
                **kw) -> Params:
    """62 slots, a 62-CCD exposure every 60 s: isolated benchmarks for the work, this machine's fixed costs.

    ``streams``: a number, or ``"auto"`` (:func:`auto_streams` for the link at the measured RTT); parts =
    streams. The telescope packs on its own cores and the tasks run on the cluster's: no CPU contention."""
    if streams == "auto":
        streams = auto_streams(link_mbit, MEASURED_MD["transfer.md"]["rtt_s"])
    c, n, ing = MEASURED_MD["codecs.md"], MEASURED_MD["node.md"], MEASURED_MD["ingest.md"]
    warm = mode == "workers"
    slurm = slurm_figures(ni)
    base = dict(
        name=f"site {link_mbit:g} Mbit/s {mode} {transport}", cadence_s=60.0, n_exposures=60, nccd=62,
        mb_per_ccd=ni["mb_per_ccd"], wait_s=ni["wait_s"], pack_start_s=ni["pack_start_s"],
        pack_ccd_s=c["ccd_raw_mb"] / c["rice_compress_mb_s_core"], telescope_cores=c["telescope_cores"],
        parts=streams, streams=streams, link_mbit=link_mbit, **link_params(transport),
        inbox_s=ing["part_to_submitted_p50_s"],
        masters_ready_s=0.0, cluster_slots=62, mode=mode,
        dispatch_s=MEASURED_MD["dwfhpc/workers/worker.py"]["idle_poll_s"] / 2 if warm else slurm["dispatch_s"],
        release_s=0.0 if warm else slurm["release_s"], start_s=0.0 if warm else slurm["start_s"],
        stage_s=n["stage_s"], calibrate_s=n["calibrate_s"], copyback_s=n["copyback_s"], other_s=0.0)
    base.update(kw)
    # spread: each task's times are the means above times one CCD's (value / mean) ratios from the night
    means = ni["task_means"]
    fixed = (base["start_s"], base["stage_s"], base["calibrate_s"], base["copyback_s"], base["other_s"])
    keys = ("start", "stage", "calibrate", "copyback", "other")
    # a start-up is spread only by the same kind's (a warm worker's claim -> start is no array task's start-up)
    spread = {k: means[k] > 0 and (k != "start" or ni["mode"] == mode) for k in keys}
    base.setdefault("task_samples", [tuple(f * (v / means[k] if spread[k] else 1.0)
                                           for f, v, k in zip(fixed, smp, keys)) for smp in ni["task_samples"]])
    if base["task_samples"] is None:
        del base["task_samples"]
    return Params(**base)
