"""The night model's simulation: parameters, the discrete-event core, the link and CPU sharing, summaries.

See :mod:`night_model` (the command line and the report) for what is modelled and how it is checked."""

from __future__ import annotations

import heapq
import json
import math
import random
import statistics
import sys
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SITE_SEEDS = 10
BOOT_SEEDS = 50  # seeds of the measured night with resampled task times

STAGES = ("wait", "pack", "transfer", "inbox", "hold", "queue", "start", "stage", "calibrate", "copyback", "other")
STAGE_NAMES = {"wait": "wait-for-complete", "hold": "hold (masters)", "queue": "scheduler queue",
               "copyback": "copy back"}

# Figures read by hand from the markdown results (the numbers this model uses, with their source).
MEASURED_MD = {
    "transfer.md": {  # run 1 (defaults), 2026-11-25 03:35 UTC: 60-CCD exposure, rice, 300 ms RTT, 200 Mbit/s
        "exposure_mb": 339.0,
        "link_capacity_mb_s": 20.0,        # 8 raw TCP streams (no ssh): 17.0 s, 20.0 MB/s (run 2: 20.7)
        "link_nominal_mbit": 200.0,
        "rtt_s": 0.300,
        "rsync_handshake_s": 2.2,          # "the rsync handshake (~2.2 s at this RTT)", per part
        "move_rtts": 2,                    # "plus the staging -> inbox move (one more remote command, ~2 RTT)"
        "streams1_s": 56.4,                # push --streams 1 (K=1), masters open
        "streams4_s": 22.8,                # push --streams 4 (K=4), masters open
        "streams8_s": 20.2,                # push --streams 8 (K=8), masters open
        "seed_scp_s": 59.0,                # one tarball, one scp
    },
    "transfer.md (streamed)": {  # 2026-12-04 20:57 UTC, lever (d): transport.stream, same exposure and link
        "streams1_s": 53.8,                # push --streams 1 (K=1), receiver open
        "streams4_s": 17.1,                # push --streams 4 (K=4): the link's capacity (8 raw TCP streams 17.2 s)
        "call_setup_s": 0.0,               # no handshake per part: one long-lived ssh + dwfhpc receive per stream
        "move_rtts": 1,                    # the manifest frame's answer (the receiver publishes the part itself)
    },
    "codecs.md": {  # 2026-11-25 02:49 UTC, one process per core
        "ccd_raw_mb": 17.9,                # 2160x4146 uint16
        "rice_ratio": 3.11,
        "rice_compress_mb_s_core": 109.0,
        "rice_decompress_mb_s_core": 157.0,
        "telescope_cores": 8,              # "on an 8-core telescope machine" (the budget line)
    },
    "node.md": {  # 2026-11-25 03:04 UTC, one full-size CCD, medians of 3 runs, alone on the VM
        "stage_s": 0.006 + 0.004 + 0.180,  # stage + verify + decompress
        "calibrate_s": 0.860 + 0.202,      # calibrate + qa
        "copyback_s": 0.015,
        "run_task_s": 1.295,
    },
    "ingest.md": {  # 2026-12-04 02:51 UTC: part in inbox -> array submitted (sha256 verify, sbatch)
        "part_to_submitted_p50_s": 0.27,
        "part_to_submitted_p95_s": 0.43,
        "inbox_scan_s": 0.25,              # ingest.inbox_poll_seconds
    },
    "night.json (arrays, run 2026-12-05 05:49 UTC)": {  # this machine's Slurm, for the site rows' job arrays
        "dispatch_s": -0.06,               # submit -> start on a free slot (median, StartTime has 1 s resolution)
        "release_s": 0.92,                 # slot free -> next task started, while tasks waited (mean of 344)
        "start_s": 2.32,                   # array task start-up (mean of 366 CCDs, under the night's load)
    },
    "dwfhpc/workers/worker.py": {
        "idle_poll_s": 0.2,                # a warm worker looks for a ticket every 0.2 s when idle
    },
}


# --------------------------------------------------------------------------- parameters
@dataclass
class Params:
    name: str = "model"
    cadence_s: float = 60.0
    n_exposures: int = 30
    nccd: int = 62
    mb_per_ccd: float = 5.61            # compressed bytes sent per CCD
    wait_s: float = 1.4                 # written -> file seen complete
    pack_start_s: float = 2.7           # complete -> packing starts (headers, checks)
    pack_ccd_s: float = 0.164           # one CCD compressed on one core
    telescope_cores: int = 8
    parts: int = 4                      # K
    streams: int = 4                    # N
    link_mbit: float = 200.0
    link_efficiency: float = 0.80       # usable fraction of the nominal rate (raw TCP, measured)
    stream_cap_mb_s: float = 6.35       # one ssh stream's ceiling (channel window / RTT)
    call_setup_s: float = 2.2           # per send call, before the data
    rtt_s: float = 0.3
    move_rtts: float = 2.0              # per send call, after the data
    inbox_s: float = 0.27               # confirmed -> verified and submitted
    masters_ready_s: float = 0.0        # tasks held until then (s after the first exposure was written)
    cluster_slots: int = 62
    mode: str = "arrays"                # "arrays" (a job array per part) or "workers" (warm workers)
    dispatch_s: float = 0.1             # submitted -> started, on a free slot
    release_s: float = 1.1              # finished -> slot free again
    start_s: float = 4.2                # task start-up on its slot
    stage_s: float = 0.19
    calibrate_s: float = 1.06
    copyback_s: float = 0.015
    other_s: float = 0.0
    # CPU contention (this VM: telescope, link emulator, ingest and the workers on the same cores); 0 = off:
    # every task has a core of its own (site scale: the cluster's nodes are not the telescope's machine)
    cluster_cores: float = 0.0          # cores the tasks share with the telescope side and the background
    telescope_cpu_s: float = 0.0        # telescope-side CPU-s per exposure (push, receiver, ssh, link emulator,
    telescope_busy_s: float = 30.0      # ingest...), spent evenly over this long from the exposure's complete
    background_cores: float = 0.0       # other load on those cores all night (cores busy)
    task_samples: list | None = field(default=None, repr=False)  # [(start, stage, calibrate, copyback, other)]
    seed: int = 0

    @property
    def link_mb_s(self) -> float:
        return self.link_mbit / 8.0 * self.link_efficiency


# --------------------------------------------------------------------------- the simulation
class _Sim:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list = []
        self._seq = 0

    def at(self, t: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def run(self) -> None:
        while self._heap:
            t, _, fn, args = heapq.heappop(self._heap)
            self.now = t
            fn(*args)


class _Link:
    """Fair sharing of ``capacity`` MB/s among the flows sending, each at most ``cap`` MB/s."""

    def __init__(self, sim: _Sim, capacity: float, cap: float):
        self.sim, self.capacity, self.cap = sim, capacity, cap
        self.flows: dict[int, list] = {}  # id -> [remaining MB, done callback]
        self.t = 0.0
        self.version = 0

    def _rate(self) -> float:
        return min(self.cap, self.capacity / len(self.flows)) if self.flows else 0.0

    def _advance(self) -> None:
        dt = self.sim.now - self.t
        if dt > 0 and self.flows:
            r = self._rate()
            for f in self.flows.values():
                f[0] = max(0.0, f[0] - r * dt)
        self.t = self.sim.now

    def _reschedule(self) -> None:
        self.version += 1
        if not self.flows:
            return
        r = self._rate()
        fid = min(self.flows, key=lambda k: self.flows[k][0])
        self.sim.at(self.sim.now + self.flows[fid][0] / r, self._finish, fid, self.version)

    def add(self, fid: int, mb: float, done) -> None:
        self._advance()
        if mb <= 0:
            self.sim.at(self.sim.now, done)
        else:
            self.flows[fid] = [mb, done]
        self._reschedule()

    def _finish(self, fid: int, version: int) -> None:
        if version != self.version:
            return
        self._advance()
        done = self.flows.pop(fid)[1]
        self._reschedule()
        done()


class _Cpu(_Link):
    """Processor sharing of ``cores`` among the running tasks (each wants one core) and a demand of ``load``
    cores from everything else: each task runs at ``min(1, cores / (tasks + load))`` of a core."""

    def __init__(self, sim: _Sim, cores: float, load: float = 0.0):
        super().__init__(sim, cores, 1.0)
        self.load = load

    def _rate(self) -> float:
        return min(1.0, self.capacity / (len(self.flows) + self.load)) if self.flows else 0.0

    def add_load(self, d: float) -> None:
        self._advance()
        self.load = max(0.0, self.load + d)
        self._reschedule()


def split_into_parts(ccds: list[int], k: int) -> list[list[int]]:
    """As ``dwfhpc.parts.pack.split_into_parts``: K groups dealt round-robin."""
    k = max(1, min(k, len(ccds)))
    return [ccds[i::k] for i in range(k)]


def simulate(p: Params, detail: bool = False) -> list[dict]:
    """One night; per exposure: ``total`` (written -> last CCD finished) and its last CCD's ``stages``
    (``detail``: also ``ccd_stages``, every CCD's)."""
    sim = _Sim()
    rng = random.Random(p.seed)
    link = _Link(sim, p.link_mb_s, p.stream_cap_mb_s)
    exps = [{"i": i, "written": i * p.cadence_s, "ccds": {}} for i in range(p.n_exposures)]

    # packing: FIFO pool of processes
    pool_free = [p.telescope_cores]
    pool_q: deque = deque()

    def pool_submit(job) -> None:
        pool_q.append(job)
        pool_next()

    def pool_next() -> None:
        while pool_free[0] > 0 and pool_q:
            job = pool_q.popleft()
            pool_free[0] -= 1
            sim.at(sim.now + p.pack_ccd_s, pool_done, job)

    def pool_done(job) -> None:
        pool_free[0] += 1
        job()
        pool_next()

    # CPU contention: the tasks' stage + calibrate share ``cluster_cores`` with the telescope side and the rest
    cpu = _Cpu(sim, p.cluster_cores, p.background_cores) if p.cluster_cores > 0 else None
    tel_rate = p.telescope_cpu_s / max(1e-9, p.telescope_busy_s)

    def written(e) -> None:
        e["complete"] = sim.now + p.wait_s
        sim.at(e["complete"] + p.pack_start_s, pack_start, e)
        if cpu and tel_rate > 0:
            sim.at(e["complete"], cpu.add_load, tel_rate)
            sim.at(e["complete"] + p.telescope_busy_s, cpu.add_load, -tel_rate)

    def pack_start(e) -> None:
        groups = split_into_parts(list(range(1, p.nccd + 1)), p.parts)
        e["parts"] = [{"k": k, "ccds": g, "left": len(g)} for k, g in enumerate(groups)]
        e["next_part"] = 0
        for part in e["parts"]:
            for _ in part["ccds"]:
                pool_submit(lambda part=part: ccd_packed(e, part))

    def ccd_packed(e, part) -> None:
        part["left"] -= 1
        while e["next_part"] < len(e["parts"]) and e["parts"][e["next_part"]]["left"] == 0:  # written in order
            done = e["parts"][e["next_part"]]
            done["packed"] = sim.now
            e["next_part"] += 1
            send_q.append((e, done))
        streams_next()

    # sending: N streams, parts FIFO
    streams_free = [p.streams]
    send_q: deque = deque()
    fids = [0]

    def streams_next() -> None:
        while streams_free[0] > 0 and send_q:
            e, part = send_q.popleft()
            streams_free[0] -= 1
            sim.at(sim.now + p.call_setup_s, data_phase, e, part)

    def data_phase(e, part) -> None:
        fids[0] += 1
        link.add(fids[0], len(part["ccds"]) * p.mb_per_ccd,
                 lambda: sim.at(sim.now + p.move_rtts * p.rtt_s, confirmed, e, part))

    def confirmed(e, part) -> None:
        part["confirmed"] = sim.now
        streams_free[0] += 1
        streams_next()
        sim.at(sim.now + p.inbox_s, verified, e, part)

    def verified(e, part) -> None:
        part["verified"] = sim.now
        sim.at(max(sim.now, p.masters_ready_s), submit, e, part)

    # the cluster: slots, tasks FIFO
    slots_free = [p.cluster_slots]
    task_q: deque = deque()

    def submit(e, part) -> None:
        part["submitted"] = sim.now
        for ccd in part["ccds"]:
            task_q.append((e, part, ccd))
        slots_next()

    def slots_next() -> None:
        while slots_free[0] > 0 and task_q:
            e, part, ccd = task_q.popleft()
            slots_free[0] -= 1
            sim.at(max(sim.now, part["submitted"] + p.dispatch_s), task_start, e, part, ccd)

    def task_start(e, part, ccd) -> None:
        if p.task_samples:
            start, stage, cal, copy, other = rng.choice(p.task_samples)
        else:
            start, stage, cal, copy, other = p.start_s, p.stage_s, p.calibrate_s, p.copyback_s, p.other_s
        stages = {
            "wait": e["complete"] - e["written"], "pack": part["packed"] - e["complete"],
            "transfer": part["confirmed"] - part["packed"], "inbox": part["verified"] - part["confirmed"],
            "hold": part["submitted"] - part["verified"], "queue": sim.now - part["submitted"], "start": start,
            "stage": stage, "calibrate": cal, "copyback": copy, "other": other}
        if cpu is None or stage + cal <= 0:
            task_end(e, ccd, stages, sim.now + start + stage + cal + copy + other)
            return
        fids[0] += 1  # stage + calibrate: CPU work at one full core, stretched by the sharing
        sim.at(sim.now + start, cpu.add, fids[0], stage + cal,
               lambda t0=sim.now + start: cpu_done(e, ccd, stages, t0))

    def cpu_done(e, ccd, stages, t0) -> None:
        stretch = (sim.now - t0) / (stages["stage"] + stages["calibrate"])
        stages["stage"] *= stretch
        stages["calibrate"] *= stretch
        task_end(e, ccd, stages, sim.now + stages["copyback"] + stages["other"])

    def task_end(e, ccd, stages, fin) -> None:
        e["ccds"][ccd] = {"finished": fin, "stages": stages}
        sim.at(fin + p.release_s, slot_free)

    def slot_free() -> None:
        slots_free[0] += 1
        slots_next()

    for e in exps:
        sim.at(e["written"], written, e)
    sim.run()
    out = []
    for e in exps:
        last = max(e["ccds"].values(), key=lambda c: c["finished"])
        out.append({"i": e["i"], "written": e["written"], "total": last["finished"] - e["written"],
                    "stages": last["stages"]})
        if detail:
            out[-1]["ccd_stages"] = [c["stages"] for c in e["ccds"].values()]
    return out


# --------------------------------------------------------------------------- statistics
def pct(values, q: float) -> float:
    """Linear-interpolated percentile (numpy's default), as ``night.py`` reports."""
    v = sorted(values)
    if not v:
        return float("nan")
    x = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(x), math.ceil(x)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


def summary(exps: list[dict]) -> dict:
    tot = [e["total"] for e in exps]
    p95 = pct(tot, 95)
    at95 = min(exps, key=lambda e: abs(e["total"] - p95))  # the exposure nearest the p95
    dominant = max(at95["stages"], key=at95["stages"].get)
    return {"p50": pct(tot, 50), "p95": p95, "max": max(tot), "dominant": dominant, "at95": at95,
            "stage_p95": {s: pct([e["stages"][s] for e in exps], 95) for s in STAGES},
            "growth": exps[-1]["total"] - exps[0]["total"]}


def replicate(p: Params, seeds: int) -> dict:
    """Several seeds (only matters with ``task_samples``): per-seed summaries and their medians."""
    runs = [summary(simulate(replace(p, seed=s))) for s in range(seeds)]
    mid = sorted(runs, key=lambda r: r["p95"])[len(runs) // 2]  # the seed with the median p95
    return {"runs": runs, **{k: statistics.median(r[k] for r in runs) for k in ("p50", "p95", "max")},
            "dominant": mid["dominant"], "at95": mid["at95"], "growth": max(r["growth"] for r in runs)}
