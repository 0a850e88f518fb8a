"""Faults on the cluster's side: ingest, slurmd, a running task, the node scratch."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from common.slurm import slurmctld_lines
from common.tables import count, rel, short
from common.procs import say
from dwfhpc.states import TASK_ACTIVE, TaskState

from .base import Fault


class IngestKill(Fault):
    """``kill -9`` of ingest while tasks are in flight, restarted by the harness (a supervisor)."""

    name = "ingest-kill"
    title = "(3) `kill -9` ingest, restart"
    at = 90

    def inject(self, c) -> dict:
        active = c.wait_for(lambda: [r for r in c.active_tasks() if r["state"] in TASK_ACTIVE], 60)
        inbox = sorted(p.name for p in c.inbox.glob("*.manifest.json"))
        t = time.time()
        pid = c.kill9("ingest")
        time.sleep(c.args.restart_after)
        t1 = time.time()
        c.start("ingest")
        return {"t0": t, "t1": t1, "pid": pid, "active": active or [], "inbox": inbox}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, a = camp.t_ref, camp.args
        t0, t1 = rec["t0"], rec["t1"]
        act = rec["active"]
        row["when"] += f" ({len(act)} tasks in flight, {len(rec['inbox'])} parts in the inbox)"
        affected = {r["expid"] for r in act}
        after = [ev.task(r["part"], r["ccd"]) for r in act]
        same_job = [r for r, t in zip(act, after) if t and t["state"] == TaskState.DONE and t["job_id"] == r["job_id"]
                    and t["attempt"] == r["attempt"]]
        fin = [t["t_finished"] for t in after if t and t["t_finished"]]
        first = next((e for e in ev.sevents if e["t"] >= t1), None)
        row["detected"] = ("nothing inside dwfhpc (a dead ingest is a supervisor's to see: the harness restarted it "
                           f"after {a.restart_after:g} s); the new ingest's first state-DB event at {rel(first['t'], t_ref) if first else 'never'}"
                           + (f": \"{short(first['message'], 90)}\"" if first else ""))
        row["recovered"] = (f"restart: {len(same_job)} of {len(act)} tasks in flight re-attached and finished under their "
                            f"original job ids (same attempt); final states "
                            + ", ".join(f"{s}: {n}" for s, n in count(t['state'] if t else 'missing' for t in after).items()))
        row["ttr"] = (f"{first['t'] - t0:.0f} s (kill to the new ingest's first action; restart after "
                      f"{a.restart_after:g} s)" if first else "never")
        if fin:
            row["notes"].append(f"the {len(act)} tasks in flight finished on the nodes at {', '.join(rel(t, t_ref) for t in fin)} "
                                f"(ingest killed at {rel(t0, t_ref)}); the new ingest collected them from their result files")
        row["ok"] = len(same_job) == len(act) and bool(act) and first is not None
        return affected


class SlurmdStop(Fault):
    """The private Slurm's slurmd stopped for ``--slurmd-seconds``, then started again by start-slurm.sh."""

    name = "slurmd-stop"
    title = "(4) slurmd stopped {slurmd:g} s"
    at = 120

    def inject(self, c) -> dict:
        c.wait_for(c.active_tasks, 30)
        active = c.active_tasks()
        t = time.time()
        how = c.slurm.stop_slurmd()
        say(f"fault: {how}")
        time.sleep(max(0.0, c.args.slurmd_seconds - (time.time() - t)))
        t1 = time.time()
        c.slurm.start()
        say(f"fault: slurmd started again by start-slurm.sh ({time.time() - t1:.1f} s)")
        return {"t0": t, "t1": t1, "t_up": time.time(), "how": how, "active": active}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref = camp.t_ref
        t0, t1 = rec["t0"], rec["t1"]
        act = rec["active"]
        row["when"] += f" ({len(act)} tasks queued or in flight; {rec['how']})"
        subs = [s for s in ev.subs if t0 - 1 <= (s["t_submitted"] or 0) <= rec["t_up"] + 5]
        touched = {(r["part"], r["ccd"]) for r in act}
        for s in subs:
            try:
                for ccd in json.loads(Path(s["spec"]).read_text()).get("ccds", []):
                    touched.add((s["part"], ccd))
            except (OSError, ValueError):
                pass
        tasks = [ev.task(p, c) for p, c in sorted(touched)]
        affected = {t["expid"] for t in tasks if t}
        reasons = sorted({f"{r['state']}/{r['reason']}" for ts, q in camp.squeue_log if t0 <= ts <= min(rec["t_up"] + 120, t_next)
                          for r in q if r["name"].startswith("dwf-") and r["reason"] not in ("None", "")})
        evs = ev.sev(t0, min(rec["t_up"] + 120, t_next))
        warn = [e for e in evs if e["level"] in ("warning", "error")]
        requeued = slurmctld_lines(camp.slurm.prefix, t0, min(rec["t_up"] + 60, t_next), "requeue")
        if requeued:
            row["notes"].append(f"slurmctld.log: {len(requeued)} lines of requeue in the window, e.g. "
                                + "; ".join(short(x, 90) for x in requeued[:2]))
        row["detected"] = ((f"state DB: {len(warn)} warnings/errors (first: \"{short(warn[0]['message'], 110)}\")"
                            if warn else "state DB: no warning or error (dwfhpc saw nothing)") +
                           (f"; Slurm: {len(requeued)} requeue lines in slurmctld.log (launch on the stopped slurmd failed)"
                            if requeued else "") +
                           (f"; Slurm queue reasons seen: {', '.join(reasons)}" if reasons else "; Slurm showed no pending reason"))
        fin = [t["t_finished"] for t in tasks if t and t["t_finished"]]
        during = [r for r in ev.results if t0 <= (r["finished"] or 0) <= t1]
        started = [r["started"] for r in ev.results if (r["started"] or 0) > t0]
        row["notes"].append(f"{len(during)} tasks finished while slurmd was down (their slurmstepd kept running); "
                            f"first task start after the stop: {rel(min(started), t_ref) if started else 'never'} "
                            f"(slurmd back at {rel(rec['t_up'], t_ref)})")
        row["recovered"] = (f"slurmd started again (start-slurm.sh, {rec['t_up'] - t1:.0f} s); the {len(tasks)} tasks "
                            f"queued/in flight/submitted around it: " +
                            ", ".join(f"{s}: {n}" for s, n in count(t['state'] if t else 'missing' for t in tasks).items())
                            + f", highest attempt {max((t['attempt'] for t in tasks if t), default=0)}")
        row["ttr"] = (f"{max(fin) - rec['t_up']:.0f} s after slurmd was back ({max(fin) - t0:.0f} s after the stop)"
                      if fin and len(fin) == len(tasks) else "never")
        row["ok"] = all(t and t["state"] == TaskState.DONE for t in tasks)
        return affected


class Scancel(Fault):
    """``scancel`` of one running task of ours."""

    name = "scancel"
    title = "(5) `scancel` of a running task"
    at = 165

    def inject(self, c) -> dict:
        if c.args.workers:  # worker mode: the running tasks are warm workers; cancel one busy with a CCD
            return self._inject_worker(c)

        def running():
            return [r for r in c.slurm.squeue() if r["state"] == "RUNNING" and r["name"].startswith("dwf-")]
        rows = c.wait_for(running, 90, every=0.5)
        if not rows:
            return {"t0": time.time(), "t1": time.time(), "error": "no task was running within 90 s"}
        time.sleep(0.5)
        jid = rows[0]["id"]
        t = time.time()
        proc = c.slurm.scancel(jid)
        task = c.q(c.state, "SELECT part, ccd, expid, attempt FROM tasks WHERE job_id=?", (jid,))
        say(f"fault: scancel {jid} -> {proc.returncode} {task}")
        return {"t0": t, "t1": t, "job": jid, "name": rows[0]["name"], "rc": proc.returncode,
                "task": task[0] if task else None}

    def _inject_worker(self, c) -> dict:
        from .warm import busy_worker, ticket_task

        got = c.wait_for(lambda: busy_worker(c), 90, every=0.2)
        if not got:
            return {"t0": time.time(), "t1": time.time(), "error": "no worker was busy with a CCD within 90 s"}
        worker, beat = got
        t = time.time()
        proc = c.slurm.scancel(beat["job_id"])
        task = ticket_task(c, beat["ticket"])
        say(f"fault: scancel {beat['job_id']} (worker {worker}, busy with {beat['ticket']}) -> {proc.returncode}")
        return {"t0": t, "t1": t, "job": beat["job_id"], "worker": worker, "name": "dwf-workers", "rc": proc.returncode,
                "task": task}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref = camp.t_ref
        t0 = rec["t0"]
        tk = rec.get("task") or {}
        row["when"] += (f" (`scancel {rec['job']}` = " + (f"worker {rec['worker']} busy with " if rec.get("worker") else "")
                        + f"{tk.get('part')} CCD {tk.get('ccd')}, attempt {tk.get('attempt')})")
        affected = {tk.get("expid")} if tk else set()
        t = ev.task(tk.get("part"), tk.get("ccd")) if tk else None
        evs = [e for e in ev.sev(t0, t0 + 600, part=tk.get("part")) if f"CCD {tk.get('ccd')}" in e["message"]]
        res = [r for r in ev.results if r["expid"] == tk.get("expid") and r["ccd"] == tk.get("ccd")]
        row["detected"] = (f"state DB event {rel(evs[0]['t'], t_ref)}: \"{short(evs[0]['message'], 140)}\"" if evs else
                           "no state DB event about this CCD")
        seen = {r["attempt"] for r in res}
        missing = [f"a{i} none (killed before the node code wrote one)" for i in range(1, (t["attempt"] if t else 0) + 1)
                   if i not in seen]
        row["recovered"] = (f"collector retry: task {t['state']} at attempt {t['attempt']}; node results: " +
                            "; ".join(missing + [f"a{r['attempt']} {r['status']}" + (f" ({short(r['error'], 60)})" if r["error"] else "")
                                                 for r in res]) if t else "task not found")
        row["ttr"] = f"{t['t_finished'] - t0:.0f} s (scancel to the CCD's products)" if t and t["state"] == TaskState.DONE else "never"
        row["ok"] = bool(t and t["state"] == TaskState.DONE)
        if rec.get("worker"):
            from .warm import pool_topped_up

            row["recovered"] += "; " + pool_topped_up(camp, t0, {rec["worker"]})
        return affected


class ScratchFull(Fault):
    """The node scratch tmpfs filled (all but ``--scratch-leave-mb``) for ``--scratch-seconds``."""

    name = "scratch-full"
    title = "(6) node scratch full {scratch:g} s"
    at = 190

    def inject(self, c) -> dict:
        free = shutil.disk_usage(c.scratch).free
        fill = c.scratch / "fill.bin"
        size = max(0, free - int(c.args.scratch_leave_mb * 1e6))
        t = time.time()
        with open(fill, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
        left = shutil.disk_usage(c.scratch).free
        say(f"fault: scratch {c.scratch} filled ({left / 1e6:.0f} MB left)")
        time.sleep(max(0.0, c.args.scratch_seconds - (time.time() - t)))
        fill.unlink()
        t1 = time.time()
        say(f"fault: scratch freed ({shutil.disk_usage(c.scratch).free / 1e6:.0f} MB free)")
        return {"t0": t, "t1": t1, "free_before": free, "free_during": left}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        a = camp.args
        t0, t1 = rec["t0"], rec["t1"]
        row["when"] += (f" ({rec['free_before'] / 1e6:.0f} MB free -> {rec['free_during'] / 1e6:.0f} MB, min_free_gb "
                        f"{a.scratch_min_free_gb:g}, freed after {t1 - t0:.0f} s)")
        hit = [r for r in ev.results if r["error"] and "scratch" in r["error"].lower() and t0 - 5 <= (r["finished"] or 0) <= t1 + 30]
        ccds = sorted({(r["expid"], r["ccd"]) for r in hit})
        tasks = [next((t for t in ev.tasks if t["expid"] == e and t["ccd"] == c), None) for e, c in ccds]
        affected = {e for e, _ in ccds}
        evs = ev.sev(t0, min(t1 + 120, t_next), "scratch")
        row["detected"] = (f"node result -> state DB: {len(hit)} failed attempts on {len(ccds)} CCDs, event "
                           f"\"{short(evs[0]['message'], 150)}\"" if evs else
                           f"{len(hit)} failed attempts; no state DB event naming the scratch")
        fin = [t["t_finished"] for t in tasks if t and t["state"] == TaskState.DONE]
        row["recovered"] = ("collector retries (immediately, attempt budget " + f"{camp.args.max_attempts}): " +
                            ", ".join(f"{s}: {n}" for s, n in count(t['state'] if t else 'missing' for t in tasks).items())
                            + f", attempts {sorted(t['attempt'] for t in tasks if t)}") if ccds else "nothing to recover (no task hit it)"
        row["ttr"] = (f"{max(fin) - t1:.0f} s after the scratch was freed" if fin and len(fin) == len(tasks) else
                      "never (failed for good)" if ccds else "n/a")
        row["ok"] = (not ccds) or len(fin) == len(tasks)
        if not ccds:
            row["notes"].append("no task started while the scratch was full")
        return affected
