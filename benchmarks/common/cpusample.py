"""CPU-seconds by component during a night, from the kernel's accounting in ``/proc``.

A sampler (a thread, or this file run on its own beside a benchmark) reads every process's own
``utime + stime`` (``/proc/<pid>/stat`` fields 14-15, in clock ticks: children are not added, so
nothing is counted twice) and the machine's totals (``/proc/stat``) once a second, and appends one
JSON line per sample. :func:`by_component` then gives, for a time window, each component's
CPU-seconds: a process's CPU at the last sample in the window minus its CPU at the last sample
before it. What a process spent after its last sample (at most one interval) is not seen, so
short-lived processes (under a second) are missed: the night's processes are long-lived (push and
its packing pool, ingest, warm workers, one ssh + ``dwfhpc receive`` per stream, the Slurm and
WAN daemons); the machine total from ``/proc/stat`` catches everything.

    python3 benchmarks/common/cpusample.py --out cpu.jsonl            # sample until killed
    python3 benchmarks/common/cpusample.py --report cpu.jsonl T0 T1   # the table for [T0, T1]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

#: component -> words of the command line (first match wins, in this order)
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("warm workers (node code)", ("submitit", "worker_main", "node worker")),
    ("node tasks (arrays, seed)", ("node run", "dwfhpc calibrate")),
    ("push (watch, pack, send)", ("dwfhpc push", "multiprocessing.forkserver", "multiprocessing.spawn")),
    ("receiver (sshd, dwfhpc receive, rsync)", ("sshd", "dwfhpc receive", "rsync")),
    ("ssh client", ("ssh ",)),
    ("ingest daemon", ("dwfhpc ingest",)),
    ("Slurm daemons", ("slurmctld", "slurmd", "slurmstepd", "munged")),
    ("WAN emulator", ("delayline", "wanlink", "tc ", "ip netns")),
    ("benchmark driver (telescope writes, queries)", ("night.py", "cpusample.py")),
)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _own_cpu(pid: str) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _machine() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine since boot."""
    parts = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / TICK, sum(parts[:8]) / TICK


def classify(cmdline: str) -> str:
    for name, words in COMPONENTS:
        if any(w in cmdline for w in words):
            return name
    return "other processes (kernel threads: network, I/O)" if not cmdline else "other processes"


def sample() -> dict:
    procs: dict[str, list] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        cpu = _own_cpu(pid)
        if cpu is not None:
            procs[pid] = [cpu, _cmdline(pid)[:200]]
    busy, total = _machine()
    return {"t": time.time(), "busy": busy, "total": total, "procs": procs}


class CpuSampler(threading.Thread):
    """Samples into ``path`` (JSON lines) every ``every`` seconds until ``stop`` is set."""

    def __init__(self, path: Path, every: float = 1.0):
        super().__init__(name="cpu-sampler", daemon=True)
        self.path, self.every = Path(path), every
        self.stop = threading.Event()

    def run(self) -> None:
        seen: dict[str, str] = {}  # pid -> cmdline already written (later lines give only the CPU)
        with self.path.open("a") as out:
            while not self.stop.is_set():
                s = sample()
                s["procs"] = {pid: (v[0] if seen.get(pid) == v[1] else v) for pid, v in s["procs"].items()}
                for pid, v in s["procs"].items():
                    if isinstance(v, list):
                        seen[pid] = v[1]
                out.write(json.dumps(s) + "\n")
                out.flush()
                self.stop.wait(self.every)


def by_component(path: Path, t0: float, t1: float) -> dict:
    """CPU-seconds per component in ``[t0, t1]``, the machine's busy CPU-seconds and its capacity."""
    names: dict[str, str] = {}
    before: dict[str, float] = {}
    last: dict[str, float] = {}
    m0 = m1 = None
    for line in Path(path).read_text().splitlines():
        try:
            s = json.loads(line)
        except ValueError:
            continue  # a line cut by the sampler's end
        if s["t"] > t1:
            break
        for pid, v in s["procs"].items():
            cpu = v[0] if isinstance(v, list) else v
            if isinstance(v, list) and v[1]:  # an empty command line: a kernel thread, or a process exiting
                if names.get(pid) not in (None, v[1]):  # the pid was reused by a new process
                    before.pop(pid, None), last.pop(pid, None)
                names[pid] = v[1]
            if s["t"] <= t0:
                before[pid] = cpu
            elif s["t"] <= t1:
                last[pid] = cpu
        if s["t"] <= t0:
            m0 = (s["busy"], s["total"], s["t"])
        elif s["t"] <= t1:
            m1 = (s["busy"], s["total"], s["t"])
    out: dict[str, float] = {}
    for pid, cpu in last.items():
        comp = classify(names.get(pid, ""))
        out[comp] = out.get(comp, 0.0) + max(0.0, cpu - before.get(pid, 0.0))
    machine = {}
    if m0 and m1:
        machine = {"busy_s": m1[0] - m0[0], "capacity_s": m1[1] - m0[1], "window_s": m1[2] - m0[2]}
    return {"components": dict(sorted(out.items(), key=lambda kv: -kv[1])), "machine": machine}


def table(cpu: dict, per: dict[str, float]) -> list[str]:
    """Markdown rows: component, CPU-s, then CPU-s per each ``per`` unit (e.g. {"science CCD": 610})."""
    units = list(per)
    lines = ["| component | CPU-s | " + " | ".join(f"per {u}" for u in units) + " |",
             "|---|---:|" + "---:|" * len(units)]
    total = 0.0
    for comp, s in cpu["components"].items():
        total += s
        lines.append(f"| {comp} | {s:.1f} | " + " | ".join(f"{s / per[u]:.3f}" for u in units) + " |")
    lines.append(f"| **all processes seen** | {total:.1f} | " + " | ".join(f"{total / per[u]:.3f}" for u in units) + " |")
    m = cpu.get("machine")
    if m:
        lines.append(f"| machine, `/proc/stat` busy (of {m['capacity_s']:.0f} CPU-s in {m['window_s']:.0f} s: "
                     f"{m['busy_s'] / max(1e-9, m['capacity_s']):.0%}) | {m['busy_s']:.1f} | "
                     + " | ".join(f"{m['busy_s'] / per[u]:.3f}" for u in units) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="sample into this JSON-lines file until killed")
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--report", nargs=3, metavar=("FILE", "T0", "T1"), help="print the table for [T0, T1]")
    args = ap.parse_args()
    if args.report:
        path, t0, t1 = args.report
        print("\n".join(table(by_component(Path(path), float(t0), float(t1)), {"second": float(t1) - float(t0)})))
        return 0
    sampler = CpuSampler(args.out, args.every)
    sampler.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
