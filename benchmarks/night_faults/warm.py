"""Faults of warm workers (``--faults --workers N``): a busy worker killed, every worker's walltime rolled over, the
whole worker array cancelled; and what the campaign reads about workers (heartbeats, pool, their logs)."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

from common.procs import say
from common.tables import count, rel, short
from dwfhpc.states import TaskState

from .base import Fault

#: a heartbeat older than this is a dead worker's (3 beats of 5 s + 5, as ``dwfhpc.ingest.executors.workers``)
STALE = 20.0
#: the warm workers' Slurm job name (``job_name("workers")``)
WORKERS_JOB = "dwf-workers"


# ---------------------------------------------------------------- reading the workers
def ticket_task(c, name: str | None) -> dict | None:
    """part, CCD, attempt, expid of a ticket name ``<seq>.<part>.<ccd>.a<attempt>.json``."""
    if not name:
        return None
    bits = (name[:-5] if name.endswith(".json") else name).split(".")
    try:
        part, ccd, attempt = ".".join(bits[1:-2]), int(bits[-2]), int(bits[-1].lstrip("a"))
    except (ValueError, IndexError):
        return None
    return {"part": part, "ccd": ccd, "attempt": attempt, "expid": part.split(".")[0], "ticket": name}


def busy_worker(c, exclude=()) -> tuple[str, dict] | None:
    """A live worker busy with a CCD (its heartbeat: busy, a ticket, fresh), the youngest first (the older ones are
    left to reach their walltime: fault worker-walltime)."""
    now = time.time()
    for w, b in sorted(c.beats().items(), key=lambda x: -(x[1].get("started") or 0)):
        if (w not in exclude and b.get("state") == "busy" and b.get("ticket") and b.get("job_id")
                and now - (b.get("beat") or 0) < STALE):
            return w, b
    return None


def live_workers(c) -> dict[str, dict]:
    now = time.time()
    return {w: b for w, b in c.beats().items()
            if b.get("state") != "exited" and now - (b.get("beat") or 0) < STALE}


def lifetimes(camp) -> dict[str, dict]:
    """worker -> ``started``, ``end`` (its exit beat; a dead worker's last beat + one beat period; a worker alive at
    the end of the night: then), ``state``, ``pid`` from the heartbeats at the end of the night."""
    beats = getattr(camp, "night_beats", None) or {}
    t_end = camp.t_quiet or time.time()
    out = {}
    for w, b in beats.items():
        last = b.get("beat") or b.get("started")
        if b.get("state") == "exited":
            end = last
        elif t_end - last < STALE:
            end = t_end
        else:
            end = last + 5.0
        out[w] = {"started": b.get("started"), "end": end, "state": b.get("state"), "pid": b.get("pid"),
                  "tasks": b.get("tasks_done"), "job_id": b.get("job_id")}
    return out


_EXIT = re.compile(r"^(\S+ \S+) \S+ worker (\S+) exits after (\d+) tasks: (.+)$")


def exit_reasons(camp) -> dict[str, dict]:
    """worker -> ``t``, ``tasks``, ``reason`` of its exit line in its Slurm log (``<jobs_dir>/<job>/*_log.err``)."""
    out = {}
    for f in (camp.work / "cluster" / "jobs").rglob("*_log.err"):
        for line in f.read_text(errors="replace").splitlines():
            m = _EXIT.match(line.strip())
            if m:
                try:
                    t = time.mktime(time.strptime(m.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S"))
                except ValueError:
                    t = None
                out[m.group(2)] = {"t": t, "tasks": int(m.group(3)), "reason": m.group(4)}
    return out


def at_walltime(reason: str) -> bool:
    """A worker's exit reason meaning it reached its walltime."""
    return "walltime" in reason or "SIGUSR2" in reason


def ingest_lines(camp, word: str) -> list[tuple[float, str]]:
    """(time, line) of the ingest logs' lines containing ``word`` (ingest-1.log, ingest-2.log, ...)."""
    out = []
    for f in sorted(camp.work.glob("ingest-*.log")):
        for line in f.read_text(errors="replace").splitlines():
            if word in line:
                try:
                    out.append((time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")), line))
                except ValueError:
                    continue
    return sorted(out)


def new_workers(camp, t0: float, old=()) -> list[tuple[float, str]]:
    """(first heartbeat, worker) of the workers started after ``t0`` (not in ``old``), earliest first."""
    return sorted((lt["started"], w) for w, lt in lifetimes(camp).items()
                  if w not in old and (lt["started"] or 0) > t0)


def pool_topped_up(camp, t0: float, gone: set[str]) -> str:
    """How the pool was made whole again after ``gone`` left at ``t0``."""
    subs = ingest_lines(camp, "worker(s) submitted")
    sub = next(((t, ln) for t, ln in subs if t >= t0 - 1), None)
    new = new_workers(camp, t0, gone)
    return ((f"pool topped up: ingest submitted a worker {sub[0] - t0:.0f} s after (\"{short(sub[1].split(': ', 1)[-1], 60)}\")"
             if sub else "no worker submitted by ingest after it (ingest log)")
            + (f", first new worker {new[0][1]} up {new[0][0] - t0:.0f} s after" if new else ", no new worker came up"))


def results_of(ev, task: dict) -> list[dict]:
    return [r for r in ev.results if r["expid"] == task.get("expid") and r["ccd"] == task.get("ccd")]


def attempts_text(res: list[dict]) -> str:
    return "; ".join(f"a{r['attempt']} {r['status']}" + (f" by {r['worker']}" if r.get("worker") else "")
                     + (f" (interrupted {r['interrupted']})" if r.get("interrupted") else "") for r in res) or "none"


# ---------------------------------------------------------------- the faults
class WorkerKill(Fault):
    """``kill -9`` of a warm worker's process while it is busy with a CCD (its pid from its heartbeat)."""

    name = "worker-kill"
    title = "(10) `kill -9` of a busy warm worker"
    at = 315
    workers_only = True

    def inject(self, c) -> dict:
        got = c.wait_for(lambda: busy_worker(c), 90, every=0.2)
        if not got:
            return {"t0": time.time(), "t1": time.time(), "error": "no worker was busy with a CCD within 90 s"}
        worker, beat = got
        pid = int(beat["pid"])
        if beat.get("host") != socket.gethostname():
            raise RuntimeError(f"worker {worker} runs on {beat.get('host')}, not here: its pid is not ours to kill")
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if "python" not in cmd:
            raise RuntimeError(f"pid {pid} of worker {worker} is not a Python process ({cmd!r})")
        t = time.time()
        os.kill(pid, signal.SIGKILL)
        task = ticket_task(c, beat["ticket"])
        say(f"fault: worker {worker} (pid {pid}, job {beat['job_id']}) killed with SIGKILL while busy with {beat['ticket']}")
        return {"t0": t, "t1": t, "worker": worker, "pid": pid, "job": beat["job_id"], "task": task,
                "live": sorted(live_workers(c))}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, t0 = camp.t_ref, rec["t0"]
        tk = rec["task"] or {}
        row["when"] += (f" (worker {rec['worker']}, pid {rec['pid']}, busy with {tk.get('part')} CCD {tk.get('ccd')} "
                        f"attempt {tk.get('attempt')}; {len(rec['live'])} workers live)")
        t = ev.task(tk.get("part"), tk.get("ccd")) if tk else None
        left = ev.sev(t0, t0 + 300, f"worker {rec['job']} left the queue")
        evs = [e for e in ev.sev(t0, t0 + 600, part=tk.get("part")) if f"CCD {tk.get('ccd')}" in e["message"]]
        row["detected"] = ("; ".join(
            ([f"ingest's pool upkeep {rel(left[0]['t'], t_ref)}: \"{short(left[0]['message'], 110)}\""] if left else [])
            + ([f"collector {rel(evs[0]['t'], t_ref)}: \"{short(evs[0]['message'], 130)}\""] if evs else []))
            or "no state DB event about the worker or its CCD")
        res = results_of(ev, tk)
        retry = [r for r in res if (r["attempt"] or 0) > tk.get("attempt", 0) and r["status"] == "ok"]
        row["recovered"] = ((f"collector retry: task {t['state']} at attempt {t['attempt']}; node results: {attempts_text(res)}"
                             if t else "task not found") + "; " + pool_topped_up(camp, t0, {rec["worker"]}))
        row["ttr"] = (f"{t['t_finished'] - t0:.0f} s (kill to the CCD's products)" if t and t["state"] == TaskState.DONE
                      else "never")
        row["ok"] = bool(t and t["state"] == TaskState.DONE and retry and all(r.get("worker") != rec["worker"] for r in retry))
        if t and t["state"] == TaskState.DONE and not retry:
            row["notes"].append("the CCD ended done without a later attempt by another worker (result written before "
                                "the kill?)")
        return {tk.get("expid")} if tk else set()


class WorkerWalltime(Fault):
    """Every worker reaches its walltime under load (the campaign's short ``ingest.worker_time_minutes``): its
    successor must be running before it stops, and no CCD is lost or run twice across the roll."""

    name = "worker-walltime"
    title = "(11) warm workers reach their walltime (rolled all night)"
    at = 0
    passive = True  # the short walltime is the site's; nothing to inject
    workers_only = True

    def inject(self, c) -> dict:
        a = c.args
        return {"t0": time.time(), "t1": time.time(), "minutes": a.worker_minutes,
                "replace": a.worker_replace_minutes, "stop": a.worker_stop_minutes}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref = camp.t_ref
        lt, why = lifetimes(camp), exit_reasons(camp)
        # stopped at their walltime during the night (exited by the end of it: later exits are the drain's time)
        # at their walltime: the worker's own stop ("walltime near") or Slurm's warning signal ahead of the limit
        # (submitit's --signal USR2, ``signal_delay_s`` before it) when that came first
        rolled = sorted((w for w, x in why.items() if at_walltime(x["reason"]) and w in lt and lt[w]["state"] == "exited"),
                        key=lambda w: lt[w]["end"])
        row["when"] = (f"all night: `worker_time_minutes` {rec['minutes']}, successor {rec['replace']:g} min before "
                       f"the end, no new CCD {rec['stop']:g} min before; {len(lt)} workers ran, {len(rolled)} stopped "
                       "at their walltime" + (f" ({', '.join(rel(lt[w]['end'], t_ref) for w in rolled)})" if rolled else ""))
        succ = ingest_lines(camp, "starting its successor")
        row["detected"] = (f"ingest's pool upkeep: {len(succ)} \"walltime ends in ..., starting its successor\" lines "
                           f"(first {rel(succ[0][0], t_ref)}: \"{short(succ[0][1].split(': ', 1)[-1], 80)}\")"
                           if succ else "no successor started by ingest (ingest log)")
        rolls, bad, overl = [], [], []
        for w in rolled:
            end = lt[w]["end"]
            # its successor: started once ingest saw its walltime near (replace minutes before the end), running
            # when it stopped
            t_rep = lt[w]["started"] + (rec["minutes"] - rec["replace"]) * 60 - 5
            before = [(lt[s]["started"], s) for s in lt if s != w and t_rep <= lt[s]["started"] < end and lt[s]["end"] > end]
            if before:
                st, s = min(before)
                rolls.append(f"{w} -> {s} (up {end - st:.0f} s before {w} stopped)")
                overl.append(end - st)
            else:
                bad.append(w)
                rolls.append(f"{w} -> no successor running when it stopped")
        # moments with no live worker, outside the planned one (every worker cancelled at once)
        skip = []
        sa = camp.records.get("worker-scancel-all")
        if sa and not sa.get("error"):
            back = new_workers(camp, sa["t0"])
            skip.append((sa["t0"] - 1, back[0][0] + 1 if back else float("inf")))
        gaps = [g for g in zero_live(lt, camp.t_quiet - 10) if not any(a <= g[0] and g[1] <= b for a, b in skip)]
        cut = [r for r in ev.results if r.get("worker") in rolled and r.get("interrupted")]
        row["recovered"] = ("the pool's rolling successors: " + ("; ".join(rolls) or "no roll happened")
                            + ("; no moment without a live worker (outside the cancel-all fault)" if not gaps else
                               "; NO live worker during " + ", ".join(f"{rel(a, t_ref)}..{rel(b, t_ref)}" for a, b in gaps))
                            + f"; CCDs interrupted on rolled workers: {len(cut)}")
        row["ttr"] = (f"0 s (no gap; successors up {min(overl):.0f}-{max(overl):.0f} s before their predecessors stopped)"
                      if overl and not gaps else "n/a" if not rolled else "gap: see recovered")
        row["ok"] = bool(rolled) and not bad and not gaps and not cut
        if not rolled:
            row["notes"].append("no worker reached its walltime during the night (night shorter than "
                                f"{rec['minutes'] - rec['stop']:g} min of a worker's life?)")
        near = set()
        for w in rolled:
            end = lt[w]["end"]
            near |= {r["expid"] for r in ev.results if r.get("claimed") and end - 120 <= r["claimed"] <= end + 60}
        return near


def zero_live(lt: dict[str, dict], t_to: float) -> list[tuple[float, float]]:
    """Intervals between the first worker's start and ``t_to`` with no worker alive (from the lifetimes)."""
    spans = sorted((x["started"], x["end"]) for x in lt.values() if x["started"])
    if not spans:
        return []
    gaps, cur = [], spans[0][1]
    for s, e in spans[1:]:
        if s > cur + 1 and s < t_to:
            gaps.append((cur, s))
        cur = max(cur, e)
    if cur < t_to - 1:
        gaps.append((cur, t_to))
    return gaps


class WorkerScancelAll(Fault):
    """``scancel`` of the whole worker array (every job named dwf-workers) while workers are busy."""

    name = "worker-scancel-all"
    title = "(12) `scancel` of every warm worker"
    at = 420
    workers_only = True

    def inject(self, c) -> dict:
        if not c.wait_for(lambda: busy_worker(c), 90, every=0.2):
            return {"t0": time.time(), "t1": time.time(), "error": "no worker was busy with a CCD within 90 s"}
        live = live_workers(c)
        jobs = [r for r in c.slurm.squeue() if r["name"] == WORKERS_JOB]
        t = time.time()
        proc = c.slurm.scancel("--name", WORKERS_JOB)
        busy = [ticket_task(c, b["ticket"]) for b in live.values() if b.get("state") == "busy" and b.get("ticket")]
        say(f"fault: scancel --name {WORKERS_JOB} -> {proc.returncode}: {len(jobs)} jobs, workers {sorted(live)}, "
            f"busy with {[b['ticket'] for b in live.values() if b.get('ticket')]}")
        return {"t0": t, "t1": t, "rc": proc.returncode, "jobs": [r["id"] for r in jobs], "workers": sorted(live),
                "busy": [b for b in busy if b]}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, t0 = camp.t_ref, rec["t0"]
        busy = rec["busy"]
        row["when"] += (f" (`scancel --name {WORKERS_JOB}`: jobs {', '.join(rec['jobs'])}; workers "
                        f"{', '.join(rec['workers'])}; {len(busy)} busy: "
                        + ", ".join(f"{b['part']} CCD {b['ccd']} a{b['attempt']}" for b in busy) + ")")
        left = ev.sev(t0, t0 + 300, "left the queue")
        evs = [e for b in busy for e in ev.sev(t0, t0 + 600, part=b["part"]) if f"CCD {b['ccd']}" in e["message"]]
        evs.sort(key=lambda e: e["t"])
        row["detected"] = ("; ".join(
            ([f"ingest's pool upkeep: {len(left)} \"left the queue\" warnings from {rel(left[0]['t'], t_ref)}"] if left else [])
            + ([f"collector {rel(evs[0]['t'], t_ref)}: \"{short(evs[0]['message'], 120)}\""] if evs else []))
            or "no state DB event about the workers or their CCDs")
        tasks = [ev.task(b["part"], b["ccd"]) for b in busy]
        new = new_workers(camp, t0, set(rec["workers"]))
        claims = sorted((r["claimed"], r["worker"]) for r in ev.results
                        if r.get("claimed") and r["claimed"] > t0 and r.get("worker") not in rec["workers"])
        row["recovered"] = (f"pool restarted by ingest ({len(new)} new workers, first up {new[0][0] - t0:.0f} s after)"
                            if new else "no new worker came up") + (
            "; the claimed CCDs: " + "; ".join(f"{b['part']} CCD {b['ccd']}: {t['state'] if t else 'missing'} at attempt "
                                                f"{t['attempt'] if t else '?'} ({attempts_text(results_of(ev, b))})"
                                                for b, t in zip(busy, tasks)))
        row["ttr"] = (f"{claims[0][0] - t0:.0f} s (scancel to a new worker's first claim, {claims[0][1]}); CCDs done "
                      + (f"{max(t['t_finished'] for t in tasks) - t0:.0f} s after" if tasks and all(
                          t and t["state"] == TaskState.DONE for t in tasks) else "never")
                      if claims else "never (no new worker claimed a ticket)")
        row["ok"] = bool(claims) and bool(tasks) and all(t and t["state"] == TaskState.DONE for t in tasks)
        states = count(r["state"] for ts, q in camp.squeue_log if t0 - 5 <= ts <= t0 + 120
                       for r in q if r["name"] == WORKERS_JOB)
        if states:
            row["notes"].append(f"worker jobs in the Slurm queue in the 2 min after: {states}")
        return {b["expid"] for b in busy}


def workers_summary(camp) -> str:
    """One line about the night's workers: how many ran, why each stopped, the masters generations seen."""
    lt, why = lifetimes(camp), exit_reasons(camp)
    reasons = count(why[w]["reason"] if w in why else ("alive at the end" if lt[w]["end"] >= (camp.t_quiet or 0) - 1
                                                       else "no exit line (killed or cancelled)") for w in lt)
    gens = sorted({g for _, g in camp.gen_log})
    caches = getattr(camp, "night_caches", None) or {}
    live = {f"dwfhpc-{w}-cal" for w, x in lt.items() if x["end"] >= (camp.t_quiet or 0) - 1}
    orphans = {d: mb for d, mb in caches.items() if d not in live}
    return (f"Warm workers: {len(lt)} ran during the night; how each ended: {reasons}; `masters.generation` values "
            f"seen: {gens or 'none'}. Workers' calibration copies in the node scratch at the end of the night: "
            f"{len(caches)} ({sum(caches.values())} MB), of workers no longer running: "
            + (", ".join(f"{d} {mb} MB" for d, mb in sorted(orphans.items())) or "none")
            + " (a worker removes its copy when it stops; one killed cannot).")
