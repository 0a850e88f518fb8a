"""The fault campaign's driver: runs the night (push, ingest, the telescope) and injects the faults one after the other.

Each fault is a class of :mod:`night_faults.registry`; the campaign gives them its processes (:meth:`Campaign.start`,
:meth:`Campaign.kill9`), its paths, its private Slurm and read-only queries of the journal and the state DB, and
observes the night meanwhile (every node result file seen, every change of the Slurm queue).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from common.procs import dwfhpc, env, say
from common.slurm import PrivateSlurm
from common.wan import wanlink
from dwfhpc.node.result import node_name
from dwfhpc.states import FILE_FINAL, PUSH_EXPOSURE_FINAL, TaskState
from night_telescope import Telescope

from .evidence import Evidence, snapshot
from .registry import FAULT_GAP, FAULTS


class Campaign:
    """Runs the night (push, ingest, telescope) and injects the faults one after the other."""

    def __init__(self, args, work: Path, wan: wanlink.Wan, slurm: PrivateSlurm, files, nccd: int, scratch: Path,
                 truncate: str):
        self.args, self.work, self.wan, self.slurm, self.files, self.nccd = args, work, wan, slurm, files, nccd
        self.scratch, self.truncate = scratch, truncate
        c = work / "cluster"
        self.raw, self.staging, self.inbox = work / "telescope" / "raw", c / "staging", c / "inbox"
        self.state, self.journal, self.specs = c / "state.sqlite", work / "telescope" / "push-journal.sqlite", c / "specs"
        self.site = work / "site.yaml"
        self.procs: dict[str, subprocess.Popen] = {}
        self.runs = {"push": 0, "ingest": 0}
        self.plock = threading.Lock()
        self.killed: set[int] = set()
        self.unexpected: list[dict] = []
        self.records: dict[str, dict] = {}
        self.results: dict[tuple, dict] = {}  # (result file, mtime_ns) -> what it said: every result ever seen
        self.squeue_log: list[tuple[float, list[dict]]] = []
        self.t_ref: float | None = None
        self.stop = threading.Event()
        self.sci_expids = {p.name.split(".")[0] for p, k in files if k == "science"}
        # worker mode (--workers N): the warm workers' queue root and what was seen of them during the night
        self.queue_root = c / "jobs" / "workers"
        self.worker_log: list[tuple[float, dict]] = []  # (t, worker -> [state, ticket, masters generation, pid])
        self.pool_log: list[tuple[float, list]] = []  # (t, pool.json) on each change
        self.gen_log: list[tuple[float, int]] = []  # (t, masters.generation) on each change
        self.night_beats: dict[str, dict] = {}
        self.night_caches: dict[str, int] = {}

    # ------------------------------------------------------------ processes
    def start(self, name: str) -> subprocess.Popen:
        with self.plock:
            self.runs[name] += 1
            log = (self.work / f"{name}-{self.runs[name]}.log").open("w")
            if name == "ingest":
                mode = ["--workers", str(self.args.workers)] if self.args.workers else ["--array"]
                argv, e = dwfhpc("ingest", "--config", str(self.site), *mode, "--executor", "slurm",
                                 "--no-report"), env(self.slurm.env)
            else:
                argv, e = self.wan.in_client(dwfhpc("push", "--config", str(self.site), "--streams",
                                                    str(self.args.streams), "--no-live")), env()
            p = self.procs[name] = subprocess.Popen(argv, env=e, stdout=log, stderr=subprocess.STDOUT)
            say(f"{name} started (run {self.runs[name]}, pid {p.pid})")
            return p

    def kill9(self, name: str) -> int:
        with self.plock:
            p = self.procs[name]
            self.killed.add(p.pid)
            cmd = Path(f"/proc/{p.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "dwfhpc" not in cmd:  # `ip netns exec` execs the command: the pid must be dwfhpc's own
                raise RuntimeError(f"pid {p.pid} is not dwfhpc's ({cmd!r})")
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
            say(f"{name} (pid {p.pid}) killed with SIGKILL")
            return p.pid

    def supervise(self) -> None:
        """A supervisor's job: a push or ingest that died without being killed here is recorded and restarted."""
        for name in ("push", "ingest"):
            p = self.procs.get(name)
            if p is not None and p.poll() is not None and p.pid not in self.killed:
                self.unexpected.append({"t": time.time(), "name": name, "run": self.runs[name], "rc": p.returncode})
                say(f"UNEXPECTED: {name} exited with {p.returncode} (see {name}-{self.runs[name]}.log); restarting")
                self.killed.add(p.pid)
                self.start(name)

    def terminate(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()

    # ------------------------------------------------------------ observation
    def sweep(self) -> None:
        """Every node result file seen so far (a retry of the same spec name replaces the file)."""
        for f in self.specs.glob("*.result-*.json") if self.specs.is_dir() else ():
            try:
                key = (str(f), f.stat().st_mtime_ns)
                if key in self.results:
                    continue
                r = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            w = r.get("worker") or {}
            # a warm worker's own failure (spec unreadable, calibrations not copied) names no expid nor attempt:
            # the result file's name does (<part>.a<attempt>.c<first CCD>.result-<index>.json)
            att = next((int(b[1:]) for b in f.name.split(".") if b[:1] == "a" and b[1:].isdigit()), None)
            self.results[key] = {"file": f.name, "expid": r.get("expid") or f.name.split(".")[0], "ccd": r.get("ccd"),
                                 "status": r.get("status"), "error": r.get("error"), "error_kind": r.get("error_kind"),
                                 "attempt": r.get("attempt") or att,
                                 "started": r.get("started"), "finished": r.get("finished"),
                                 "interrupted": r.get("interrupted"), "products": bool(r.get("products")),
                                 "kind": r.get("kind"), "host": node_name(r.get("host")),
                                 **({"worker": w.get("name"), "claimed": w.get("claimed"),
                                     "preload": w.get("preload_seconds"), "task_number": w.get("task_number"),
                                     "masters_generation": w.get("masters_generation"),
                                     "bias": (r.get("masters") or {}).get("bias")} if w else {})}

    # ------------------------------------------------------------ warm workers (--workers N)
    def beats(self) -> dict[str, dict]:
        """worker -> its last heartbeat (``<queue>/workers/<worker>.json``), read-only."""
        out = {}
        for f in sorted((self.queue_root / "workers").glob("*.json")):
            try:
                out[f.stem] = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
        return out

    def pool(self) -> list[dict]:
        try:
            return json.loads((self.queue_root / "pool.json").read_text())
        except (OSError, ValueError):
            return []

    def generation(self) -> int:
        try:
            return int((self.queue_root / "masters.generation").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def observe_workers(self) -> None:
        now = time.time()
        seen = {w: [b.get("state"), b.get("ticket"), b.get("masters_generation"), b.get("pid")]
                for w, b in self.beats().items()}
        if not self.worker_log or self.worker_log[-1][1] != seen:
            self.worker_log.append((now, seen))
        pool = self.pool()
        if not self.pool_log or self.pool_log[-1][1] != pool:
            self.pool_log.append((now, pool))
        gen = self.generation()
        if not self.gen_log or self.gen_log[-1][1] != gen:
            self.gen_log.append((now, gen))

    def observe(self) -> None:
        while not self.stop.is_set():
            self.sweep()
            if self.args.workers:
                self.observe_workers()
            try:
                q = self.slurm.squeue()
                if not self.squeue_log or self.squeue_log[-1][1] != q:
                    self.squeue_log.append((time.time(), q))
            except (OSError, subprocess.SubprocessError):
                pass
            self.stop.wait(2)

    def q(self, db: Path, sql: str, args: tuple = ()) -> list[dict]:
        return [dict(r) for r in wanlink.query(db, sql, args)]

    def wait_for(self, fn, timeout: float, every: float = 0.1):
        deadline = time.time() + timeout
        while time.time() < deadline and not self.stop.is_set():
            v = fn()
            if v:
                return v
            time.sleep(every)
        return None

    def active_tasks(self) -> list[dict]:
        waiting = (TaskState.QUEUED, TaskState.SUBMITTED, TaskState.RUNNING)  # not final (lost/failed/done)
        return self.q(self.state, "SELECT part, ccd, expid, state, attempt, job_id FROM tasks WHERE state IN (?,?,?)",
                      waiting)

    def undelivered(self) -> list[dict]:
        """Exposures of the push journal neither delivered nor failed."""
        return self.q(self.journal, "SELECT expid, state FROM exposures WHERE state NOT IN (%s)"
                      % ",".join("?" * len(PUSH_EXPOSURE_FINAL)), tuple(PUSH_EXPOSURE_FINAL))

    # ------------------------------------------------------------ the faults
    def run_faults(self) -> None:
        t_prev = 0.0
        for name in self.args.fault_list:
            fault = FAULTS[name]
            at = self.t_ref + fault.at * self.args.fault_scale
            if not fault.passive:
                at = max(at, t_prev + FAULT_GAP)
            if self.stop.wait(max(0.0, at - time.time())):
                return
            say(f"fault {name}: injecting")
            try:
                rec = fault.inject(self)
            except Exception as exc:  # noqa: BLE001 - recorded, the campaign goes on
                rec = {"t0": time.time(), "t1": time.time(), "error": f"{type(exc).__name__}: {exc}"}
                say(f"fault {name}: ERROR {rec['error']}")
            self.records[name] = rec
            t_prev = rec.get("t1", time.time())

    # ------------------------------------------------------------ the night
    def quiet(self) -> bool:
        """Nothing left to do: every written file settled in the journal, every exposure delivered or failed,
        the inbox empty, no task waiting or in flight."""
        files = self.q(self.journal, "SELECT state FROM files")
        if len([f for f in files if f["state"] in FILE_FINAL]) < len(self.files):
            return False
        if self.undelivered():
            return False
        if any(self.inbox.glob("*.manifest.json")) or self.active_tasks():
            return False
        return True

    def run(self) -> dict:
        self.tel = Telescope(self.files, self.raw, self.args.cal_cadence, self.args.cadence,
                             truncate={self.truncate})
        # calibration frames before the first science exposure (a fault may add more later in the night)
        n_cal = next((i for i, (_, k) in enumerate(self.files) if k == "science"), len(self.files))
        self.start("ingest")
        self.start("push")
        t0 = time.time()
        self.tel.start()
        # the first science exposure is written n_cal cal-cadences after the first file
        self.t_ref = t0 + n_cal * self.args.cal_cadence
        observer = threading.Thread(target=self.observe, name="observer", daemon=True)
        observer.start()
        faults = threading.Thread(target=self.run_faults, name="faults", daemon=True)
        faults.start()
        last, quiet_since, t_end = 0.0, None, None
        try:
            while True:
                if not wanlink.intact(self.wan):  # another run's setup-wan.sh tore ours down: the night is void
                    raise SystemExit("night.py: error: the emulated WAN was torn down by another run mid-night "
                                     f"(our sshd is gone; namespaces now hold: {'; '.join(wanlink.busy()[:3])})")
                self.supervise()
                if self.tel.error:
                    raise SystemExit(f"night.py: error: telescope: {self.tel.error}")
                if not self.tel.is_alive() and not faults.is_alive():
                    t_end = t_end or time.time()
                    if self.quiet():
                        quiet_since = quiet_since or time.time()
                        if time.time() - quiet_since >= 10:
                            break
                    else:
                        quiet_since = None
                    if time.time() - t_end > self.args.drain_timeout:
                        say(f"drain timeout: still not quiet {self.args.drain_timeout:.0f} s after the last fault")
                        break
                if time.time() - t0 > self.args.timeout:
                    say(f"timed out after {self.args.timeout:.0f} s")
                    break
                if time.time() - last > 30:
                    counts = {r["state"]: r["n"] for r in wanlink.query(self.state, "SELECT state, count(*) n FROM tasks GROUP BY state")}
                    say(f"tasks {counts}; load {Path('/proc/loadavg').read_text().split()[0]}")
                    last = time.time()
                time.sleep(1)
            self.drained = quiet_since is not None and time.time() - quiet_since >= 10
            self.t_quiet = time.time()
            self.squeue_log.append((time.time(), self.slurm.squeue()))
            self.sweep()
            if self.args.workers:
                self.observe_workers()
                self.night_beats = self.beats()  # each worker's last heartbeat: its life (started .. last beat)
                self.night_caches = {d.name: round(sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 1e6)
                                     for d in self.scratch.glob("dwfhpc-w*-cal")}  # workers' copies left in scratch
            # the night's evidence, before any operator's step: copies of both databases, the results, the products
            self.ev_night = Evidence(self, snapshot(self.state, self.work / "night-state.sqlite"),
                                     snapshot(self.journal, self.work / "night-journal.sqlite"), dict(self.results))
            self.ev_night_results = dict(self.results)
            if self.args.reconcile:
                self.reconcile()
        finally:
            self.stop.set()
            self.tel.stop.set()
            self.terminate()
        self.sweep()
        (self.work / "telescope" / "written.json").write_text(json.dumps(self.tel.written))
        return {"wall": time.time() - t0, "t0": t0}

    def reconcile(self) -> None:
        """What an operator would do next (not counted as automatic recovery): stop the continuous push and run
        ``push --once --mode end-of-night`` (the receiver's inbox and parts store are listed; parts missing are
        sent again), then let ingest take what came."""
        say("after the night: an operator's end-of-night reconcile (push --once --mode end-of-night)")
        p = self.procs["push"]
        self.killed.add(p.pid)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
        t = time.time()
        log = self.work / "push-reconcile.log"
        argv = self.wan.in_client(dwfhpc("push", "--config", str(self.site), "--streams", str(self.args.streams),
                                         "--no-live", "--once", "--mode", "end-of-night"))
        with log.open("w") as f:
            try:
                rc = subprocess.run(argv, env=env(), stdout=f, stderr=subprocess.STDOUT, timeout=300).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        t1 = time.time()
        time.sleep(5)
        self.wait_for(self.quiet, 180, every=2)
        self.reconciled = {"t0": t, "t1": t1, "rc": rc, "t_quiet": time.time(), "log": log.name}
        say(f"reconcile: push exited {rc} after {t1 - t:.0f} s")

