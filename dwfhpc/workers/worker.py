"""A warm worker: one long-lived scheduler task that runs CCD tasks one after another.

It claims tickets from the shared-FS :class:`~dwfhpc.workers.queue.WorkQueue`, runs each exactly
as an array task would (``dwfhpc node run SPEC --index I``'s path: stage, verify, decompress,
calibrate, copy back) with its calibrations read from node-local copies, and leaves the result file
where the collector looks for it. Python, numpy, astropy, fitsio and sep are imported once, and the
masters are copied once, so a CCD's latency no longer pays for a queue wait or a process start.

It stops claiming when a drain is requested (``dwfhpc ingest --drain``, end of night), when its
walltime is near (ingest has started its replacement by then), on SIGTERM/SIGUSR2 between tasks,
or after ``max_idle`` seconds without work; a signal during a task interrupts that task, which
reports itself interrupted (the collector retries it elsewhere).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass

from ..errors import DwfError
from ..node.result import ErrorKind, TaskResult, WorkerRun
from ..node.run import run_spec_result, write_result
from ..node.scratch import SIGNALS, scratch_root, scratch_trouble
from ..node.spec import TaskSpec
from ..states import WorkerState
from .preload import CalibrationCache
from .queue import Ticket, WorkerBeat, WorkQueue
from .settings import WorkerSettings

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


def worker_identity(env: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(worker name, scheduler task id): ``w<task id>`` with submitit's id (``<array>_<index>`` under
    Slurm, the process id locally), else the batch system's variables, else ``w<host>-<pid>``."""
    if env is None:
        try:
            import submitit

            jid = str(submitit.JobEnvironment().job_id)
            return f"w{jid}", jid
        except RuntimeError:  # not started by submitit (a template, or by hand)
            env = dict(os.environ)
    job, idx = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if job and idx:
        return f"w{job}_{idx}", f"{job}_{idx}"
    for var in ("SLURM_JOB_ID", "PBS_JOBID"):
        if env.get(var):
            return f"w{env[var]}", env[var]
    return f"w{socket.gethostname()}-{os.getpid()}", None


@dataclass
class WorkerSummary:
    worker: str
    tasks: int
    reason: str  # why it stopped
    copied_bytes: int


class Worker:
    """The loop of one warm worker (see the module docstring)."""

    def __init__(self, queue_root: str | os.PathLike[str], *, walltime_end: float | None = None,
                 stop_margin: float | None = None, idle_poll: float = 0.2, max_idle: float | None = None,
                 scratch_vars: list[str] | None = None, scratch_fallback: str | None = None,
                 name: str | None = None, job_id: str | None = None):
        """``stop_margin`` (seconds), ``max_idle``, ``scratch_vars``, ``scratch_fallback``: None takes the
        queue's ``settings.json`` (written by ingest), else the config's defaults."""
        self.queue = WorkQueue(queue_root)
        ident, jid = worker_identity()
        self.name, self.job_id = name or ident, job_id or jid
        shared = WorkerSettings.read(queue_root)
        if shared is None and None in (stop_margin, scratch_vars, scratch_fallback):
            log.info("no worker settings in %s: the config's defaults", WorkerSettings.path(queue_root))
        given = shared or WorkerSettings.defaults()
        self.walltime_end = walltime_end
        self.stop_margin = given.stop_minutes * 60.0 if stop_margin is None else stop_margin
        self.idle_poll = idle_poll
        self.max_idle = given.max_idle if max_idle is None else max_idle
        scratch_vars = given.scratch_vars if scratch_vars is None else scratch_vars
        scratch_fallback = given.scratch_fallback if scratch_fallback is None else scratch_fallback
        # the site's node-local scratch (node.scratch_vars, else node.scratch_fallback), as `node run` uses it
        self.scratch = scratch_root(list(scratch_vars), scratch_fallback)
        # the worker's name is its scheduler id (PBS: w123[4].server): brackets in a path are a filter expression
        # to CFITSIO, which then cannot open the masters copied there
        self.cache = CalibrationCache(self.scratch / f"dwfhpc-{re.sub(r'[^A-Za-z0-9._-]', '_', self.name)}-cal")
        self.started = time.time()
        self.tasks = 0
        self.state = WorkerState.STARTING
        self.ticket: Ticket | None = None
        self._stop_signal: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ heartbeat
    def _beat(self, state: str | None = None) -> None:
        with self._lock:
            if state:
                self.state = state
            self.queue.beat(WorkerBeat(worker=self.name, job_id=self.job_id, host=socket.gethostname(),
                                       pid=os.getpid(), state=self.state,
                                       ticket=self.ticket.name if self.ticket else None, started=self.started,
                                       beat=time.time(), tasks_done=self.tasks,
                                       masters_generation=self.cache.generation or 0))

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
            except OSError as exc:  # shared FS hiccup: the next beat tries again
                log.warning("heartbeat not written: %s", exc)

    # ------------------------------------------------------------------ loop
    def _why_stop(self, idle_since: float) -> str | None:
        if self._stop_signal:  # Slurm's USR2 comes ahead of the time limit (submitit's --signal): the walltime
            return (f"signal {self._stop_signal}" + (" (walltime near)" if self._stop_signal == "SIGUSR2" else ""))
        if self.queue.drain_requested(self.name):
            return "drain requested"
        if self.walltime_end is not None and time.time() > self.walltime_end - self.stop_margin:
            return "walltime near"
        if self.max_idle is not None and time.time() - idle_since > self.max_idle:
            return f"idle for {self.max_idle:g} s"
        return None

    def run(self) -> WorkerSummary:
        """Claim and run tickets until told to stop; returns what it did."""
        previous = {}

        def note_signal(signum, frame):
            self._stop_signal = signal.Signals(signum).name

        for sig in SIGNALS:
            try:
                previous[sig] = signal.signal(sig, note_signal)
            except ValueError:  # not the main thread (tests): no handlers
                break
        stop_beats = threading.Event()
        beats = threading.Thread(target=self._heartbeat_loop, args=(stop_beats,), daemon=True)
        self._beat(WorkerState.IDLE)
        beats.start()
        idle_since = time.time()
        try:
            while (reason := self._why_stop(idle_since)) is None:
                ticket = self.queue.claim(self.name)
                if ticket is None:
                    if self.state != WorkerState.IDLE:
                        self._beat(WorkerState.IDLE)
                    time.sleep(self.idle_poll)
                    continue
                self.ticket = ticket
                self._beat(WorkerState.BUSY)
                result = self.run_ticket(ticket)
                self.tasks += 1
                if result.interrupted:  # the signal was for the whole worker (scancel, time limit)
                    self._stop_signal = result.interrupted
                self.ticket = None
                self._beat(WorkerState.IDLE)
                idle_since = time.time()
        finally:
            stop_beats.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.cache.discard()  # node-local copies go with the worker (scratch may outlive the job)
        self._beat(WorkerState.EXITED)
        log.info("worker %s exits after %d tasks: %s", self.name, self.tasks, reason)
        return WorkerSummary(self.name, self.tasks, reason, self.cache.copied_bytes)

    def run_ticket(self, ticket: Ticket) -> TaskResult:
        """Run one claimed task with node-local calibrations and leave its result beside its spec."""
        t_claimed = time.time()
        preload = 0.0
        try:
            spec = TaskSpec.read(ticket.spec)
            self.cache.refresh(self.queue.masters_generation())
            t = time.perf_counter()
            local = self.cache.localise(spec, ticket.ccd)
            preload = time.perf_counter() - t
            result = run_spec_result(local, ticket.index, spec_path=ticket.spec)
        except (DwfError, OSError) as exc:  # an unreadable spec, or calibrations that cannot be copied
            kind = ErrorKind.RESOURCE if scratch_trouble(exc, self.scratch) else ErrorKind.OTHER  # masters copy: full scratch
            result = TaskResult(error=f"{exc}", error_kind=kind, index=ticket.index, spec=ticket.spec,
                                ccd=ticket.ccd, started=t_claimed, finished=time.time(), host=socket.gethostname())
        result.worker = WorkerRun(name=self.name, job_id=self.job_id, claimed=t_claimed,
                                  preload_seconds=round(preload, 4), task_number=self.tasks + 1,
                                  calibrations=str(self.cache.root))
        write_result(ticket.spec, ticket.index, result)
        self.queue.finish(self.name, ticket)
        return result


def worker_main(queue_root: str, time_minutes: float | None = None, stop_margin: float | None = None,
                max_idle: float | None = None, scratch_vars: list[str] | None = None,
                scratch_fallback: str | None = None) -> dict:
    """What submitit runs for each task of a worker array (also ``dwfhpc node worker QUEUE``).

    ``time_minutes``: this task's walltime; the worker takes no new CCD ``stop_margin`` seconds before it ends.
    The other settings (stop margin, idle limit, the site's ``node.scratch_vars``/``scratch_fallback`` where
    the calibrations are copied) come from ``<queue_root>/settings.json``, written by ingest before it submits
    workers; an argument given here overrides the file, and with neither the config's defaults apply.
    """
    from ..node.tuning import tune_malloc

    tune_malloc()  # before the first CCD's buffers (run_spec_result calls it too)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    end = time.time() + time_minutes * 60.0 if time_minutes else None
    summary = Worker(queue_root, walltime_end=end, stop_margin=stop_margin, max_idle=max_idle,
                     scratch_vars=scratch_vars, scratch_fallback=scratch_fallback).run()
    return {"worker": summary.worker, "tasks": summary.tasks, "reason": summary.reason,
            "copied_bytes": summary.copied_bytes}
