"""Faults of a node of the three-node cluster (``--faults --nodes 3``, issue 28 item 3): a node lost mid-night with a
worker busy on it, and a node whose scratch keeps failing until the ingest excludes it.

The nodes are ``tests/infra/start-slurm.sh`` with ``SLURM_NODES=3``: each slurmd in its own network, UTS and mount
namespaces with a private tmpfs scratch; ``tests/infra/node-ctl.sh`` loses, returns and enters them.
"""

from __future__ import annotations

import os
import subprocess
import time

from common.procs import REPO, say
from common.tables import count, rel, short
from dwfhpc.states import TaskState

from .base import Fault
from .warm import attempts_text, busy_worker, live_workers, pool_topped_up, results_of, ticket_task

NODE_CTL = REPO / "tests" / "infra" / "node-ctl.sh"


def node_ctl(c, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``node-ctl.sh ARGV`` on the campaign's cluster (its prefix's nodes.env)."""
    return subprocess.run(["bash", str(NODE_CTL), *argv], env={**os.environ, **c.slurm.script_env},
                          capture_output=True, text=True, timeout=timeout)


def node_of(beat: dict) -> str | None:
    return (beat.get("host") or "").split(".", 1)[0] or None


def results_on(ev, node: str, t0: float, t1: float = float("inf")) -> list[dict]:
    """Results that finished on ``node`` between t0 and t1."""
    return [r for r in ev.results if r.get("host") == node and t0 <= (r.get("finished") or 0) <= t1]


def fresh_busy_worker(c, timeout: float, within: float = 0.5) -> tuple[str, dict] | None:
    """A live worker that took a new CCD less than ``within`` seconds ago (its heartbeat's ticket changed between
    two looks): one mid-CCD for the next second or two, so a fault hits the CCD and not the moment after it."""
    seen: dict[str, str | None] = {}
    deadline = time.time() + timeout
    while time.time() < deadline and not c.stop.is_set():
        t = time.time()
        beats = live_workers(c)
        for w, b in beats.items():
            if b.get("state") == "busy" and b.get("ticket") and w in seen and seen[w] != b["ticket"]:
                return w, b
        seen = {w: b.get("ticket") for w, b in beats.items()}
        time.sleep(max(0.0, within - (time.time() - t)))
    return None


class NodeLost(Fault):
    """A node lost with a busy warm worker on it: every process in its namespaces ``kill -9``'d, its scratch and
    ``/tmp`` gone (``node-ctl.sh lose``); returned after ``--node-down-seconds`` (``node-ctl.sh return``)."""

    name = "node-lost"
    title = "(15) a node lost ({node_down:g} s) with a busy worker on it"
    at = 150
    nodes_only = True
    workers_only = True

    def inject(self, c) -> dict:
        got = fresh_busy_worker(c, 120)
        if not got:
            return {"t0": time.time(), "t1": time.time(), "error": "no worker took a CCD within 120 s"}
        worker, beat = got
        node = node_of(beat)
        on_node = sorted(w for w, b in live_workers(c).items() if node_of(b) == node)
        t = time.time()
        proc = node_ctl(c, "lose", node)
        t_dead = time.time()  # every process of the node is gone by now
        if proc.returncode != 0:
            raise RuntimeError(f"node-ctl.sh lose {node}: {proc.stderr.strip()[-300:]}")
        say(f"fault: {proc.stdout.strip()} (worker {worker} was busy with {beat['ticket']})")
        time.sleep(max(0.0, c.args.node_down_seconds - (time.time() - t)))
        t_back = time.time()
        proc = node_ctl(c, "return", node, timeout=180)
        say(f"fault: {proc.stdout.strip() or proc.stderr.strip()[-200:]}")
        return {"t0": t, "t1": time.time(), "t_dead": t_dead, "t_back": t_back, "node": node, "worker": worker, "job": beat.get("job_id"),
                "task": ticket_task(c, beat["ticket"]), "on_node": on_node, "returned": proc.returncode == 0}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, t0, node = camp.t_ref, rec["t0"], rec["node"]
        tk = rec["task"] or {}
        row["when"] += (f" ({node}: workers {', '.join(rec['on_node'])}; {rec['worker']} busy with {tk.get('part')} "
                        f"CCD {tk.get('ccd')} attempt {tk.get('attempt')}; back at {rel(rec['t_back'], t_ref)})")
        down = camp.slurm.ctld_lines(t0, t0 + 300, node)
        down = [ln for ln in down if any(w in ln.lower() for w in ("not responding", "down", "node_fail", "nodefail"))]
        left = ev.sev(t0, t0 + 300, f"worker {rec['job']} left the queue")
        row["detected"] = "; ".join(
            ([f"slurmctld: \"{short(down[0].split('] ', 1)[-1], 90)}\""] if down else ["slurmctld: no line about the node"])
            + ([f"ingest's pool upkeep {rel(left[0]['t'], t_ref)}: \"{short(left[0]['message'], 90)}\""] if left else []))
        t = ev.task(tk.get("part"), tk.get("ccd")) if tk else None
        res = results_of(ev, tk)
        redo = [r for r in res if r["status"] == "ok" and r.get("host") != node and (r.get("finished") or 0) > t0]
        back = results_on(ev, node, rec["t_back"])
        row["recovered"] = ((f"the CCD {t['state']} at attempt {t['attempt']} ({attempts_text(res)}"
                             + (f", on {redo[0].get('host')}" if redo else "") + ")" if t else "task not found")
                            + "; " + pool_topped_up(camp, t0, set(rec["on_node"]))
                            + f"; {node} returned ({'ok' if rec['returned'] else 'node-ctl failed'}), "
                            + (f"{len(back)} CCDs calibrated there after, the first {rel(back[0]['finished'], t_ref)}"
                               if back else "no CCD calibrated there after its return"))
        row["ttr"] = (f"{t['t_finished'] - t0:.0f} s (loss to the CCD's products)" if t and t["state"] == TaskState.DONE
                      else "never")
        before = [r for r in res if r.get("host") == node and r["status"] == "ok"
                  and (r.get("finished") or 0) <= rec.get("t_dead", t0)]
        if before and not redo:
            row["notes"].append(f"the CCD's result was written on {node} {before[0]['finished'] - t0:.2f} s after the "
                                f"loss began, before its processes were all killed ({rec.get('t_dead', t0) - t0:.2f} s): "
                                "the loss hit no CCD in flight")
        row["ok"] = bool(t and t["state"] == TaskState.DONE and redo and rec["returned"] and back)
        if not back:
            row["notes"].append(f"{node} took no work after it returned (before the night ended)")
        return {tk.get("expid")} if tk else set()


class NodeScratchFailing(Fault):
    """A node's scratch filled (all but ``--scratch-leave-mb``) under a busy worker and kept full until the ingest
    excludes the node (at most ``--node-scratch-seconds``); then freed. Its failures are resource failures: they
    must not use up the CCDs' attempts, and ``dwfhpc status`` must name the exclusion."""

    name = "node-scratch"
    title = "(16) a node's scratch keeps failing (full until excluded, at most {node_scratch:g} s)"
    at = 330
    nodes_only = True
    workers_only = True

    def inject(self, c) -> dict:
        got = c.wait_for(lambda: busy_worker(c), 120, every=0.2)
        if not got:
            return {"t0": time.time(), "t1": time.time(), "error": "no worker was busy with a CCD within 120 s"}
        worker, beat = got
        node = node_of(beat)
        scratch = c.slurm.scratch_dir
        free = int(node_ctl(c, "exec", node, "df", "-B1", "--output=avail", scratch).stdout.split()[-1])
        size = max(0, free - int(c.args.scratch_leave_mb * 1e6))
        t = time.time()
        fill = node_ctl(c, "exec", node, "fallocate", "-l", str(size), f"{scratch}/fill.bin")
        if fill.returncode != 0:
            raise RuntimeError(f"fallocate on {node}: {fill.stderr.strip()[-300:]}")
        say(f"fault: {node}'s scratch filled ({c.args.scratch_leave_mb:g} MB left; worker {worker} busy there)")
        status = ""
        excluded = c.wait_for(lambda: c.q(c.state, "SELECT t, message FROM events WHERE t >= ? AND message LIKE ?",
                                         (t, f"node {node} excluded%")), c.args.node_scratch_seconds, every=1)
        if excluded:
            st = subprocess.run(["python3", "-m", "dwfhpc", "status", "--config", str(c.site)], env=os.environ,
                                capture_output=True, text=True, timeout=120)
            status = next((ln.strip() for ln in st.stdout.splitlines() if node in ln and "exclu" in ln), "")
        node_ctl(c, "exec", node, "rm", "-f", f"{scratch}/fill.bin")
        t1 = time.time()
        say(f"fault: {node}'s scratch freed" + (f" (excluded {excluded[0]['t'] - t:.0f} s after)" if excluded else
                                               " (never excluded)"))
        return {"t0": t, "t1": t1, "node": node, "worker": worker, "free_before": free,
                "t_excluded": excluded[0]["t"] if excluded else None, "status_line": status}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, t0, t1, node = camp.t_ref, rec["t0"], rec["t1"], rec["node"]
        a = camp.args
        row["when"] += f" ({node}; full {t1 - t0:.0f} s)"
        hit = [r for r in results_on(ev, node, t0 - 5, t1 + 30) if r["status"] != "ok" and r.get("error_kind") == "resource"]
        ccds = sorted({(r["expid"], r["ccd"]) for r in hit})
        tasks = [next((t for t in ev.tasks if t["expid"] == e and t["ccd"] == c), None) for e, c in ccds]
        excl = ev.sev(t0, t1 + 60, f"node {node} excluded")
        row["detected"] = (f"{len(hit)} resource failures on {node} ({len(ccds)} CCDs); "
                           + (f"ingest {rel(excl[0]['t'], t_ref)}: \"{short(excl[0]['message'], 120)}\"" if excl
                              else "never excluded")
                           + (f"; dwfhpc status: \"{short(rec['status_line'], 110)}\"" if rec["status_line"]
                              else "; dwfhpc status did not name it"))
        fin = [t for t in tasks if t and t["state"] == TaskState.DONE]
        # the attempt number counts up on every retry; ``resource_retries`` of them are not counted as attempts
        spent = [t for t in tasks if t and (t["attempt"] or 1) - (t.get("resource_retries") or 0) > 1]
        elsewhere = [r for r in ev.results if (r["expid"], r["ccd"]) in set(ccds) and r["status"] == "ok"]
        back = ev.sev(t1, float("inf"), f"node {node} back")
        row["recovered"] = (f"retried elsewhere: {', '.join(f'{s}: {n}' for s, n in count(t['state'] if t else 'missing' for t in tasks).items())}"
                            f" on {', '.join(sorted({r.get('host') or '?' for r in elsewhere})) or 'nowhere'}; attempts "
                            f"{sorted(t['attempt'] for t in tasks if t)} (budget {a.max_attempts}, resource retries "
                            f"{sorted(t.get('resource_retries') or 0 for t in tasks if t)})"
                            + (f"; {node} back in use {rel(back[0]['t'], t_ref)}" if back else ""))
        row["ttr"] = (f"{rec['t_excluded'] - t0:.0f} s to the exclusion; the CCDs' products "
                      f"{max(t['t_finished'] for t in fin) - t0:.0f} s after the fill" if rec["t_excluded"] and fin
                      and len(fin) == len(tasks) else "never")
        row["ok"] = bool(excl and rec["status_line"] and ccds and len(fin) == len(tasks) and not spent)
        if spent:
            row["notes"].append(f"{len(spent)} CCDs used up an attempt on a resource failure")
        return {e for e, _ in ccds}
