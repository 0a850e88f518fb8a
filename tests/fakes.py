"""Stand-ins for a cluster, to test scheduler logic without one.

:class:`FakeCall` takes the place of :func:`dwfhpc.scheduler.run` (the layer's one call site):
it answers commands by their argv prefix with canned stdout/stderr/exit status, records every
argv it was given, and behaves like ``subprocess.run`` for a command that does not exist
(``FileNotFoundError``) or hangs (``TimeoutExpired``). :func:`fake_scheduler` puts one behind a
real :class:`~dwfhpc.scheduler.Slurm`, :class:`~dwfhpc.scheduler.Pbs` or ``Torque``, so
everything but the process itself is the production code.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from dwfhpc.config import SchedulerSettings
from dwfhpc.scheduler import Scheduler, scheduler_for


@dataclass
class Answer:
    stdout: str = ""
    stderr: str = ""
    returncode: int = 0
    hangs: bool = False


class FakeCall:
    """A fake cluster's commands: ``fake.on("squeue", stdout=...)``; unknown commands do not exist."""

    def __init__(self):
        self.answers: list[tuple[tuple[str, ...], Answer]] = []
        self.calls: list[list[str]] = []
        self.timeouts: list[float] = []

    def on(self, *prefix: str, stdout: str = "", stderr: str = "", returncode: int = 0, hangs: bool = False) -> "FakeCall":
        """Answer any argv starting with ``prefix`` (the longest matching prefix wins, then the latest ``on``)."""
        self.answers.append((tuple(prefix), Answer(stdout, stderr, returncode, hangs)))
        return self

    def __call__(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise TypeError(f"argv must be a list of str, got {argv!r}")  # what run() would be given
        self.calls.append(list(argv))
        self.timeouts.append(timeout)
        matches = [(p, a) for p, a in self.answers if tuple(argv[:len(p)]) == p]
        if not matches:
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        _, answer = max(reversed(matches), key=lambda m: len(m[0]))  # longest prefix; among equals the latest
        if answer.hangs:
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, answer.returncode, answer.stdout, answer.stderr)

    def commands(self) -> list[str]:
        """The programs called, in order (``["squeue", "sacct"]``)."""
        return [argv[0] for argv in self.calls]


def fake_scheduler(kind: str = "slurm", settings: SchedulerSettings | None = None,
                   fake: FakeCall | None = None, **settings_fields) -> tuple[Scheduler, FakeCall]:
    """A real scheduler class of ``kind`` with a :class:`FakeCall` behind it."""
    fake = fake or FakeCall()
    settings = settings or SchedulerSettings(**settings_fields)
    return scheduler_for(kind, settings, call=fake), fake


# --------------------------------------------------------------------------- an executor without a scheduler
from dwfhpc.ingest.executors import ArrayExecutor, ArrayRequest, Outcome, Submitted  # noqa: E402
from dwfhpc.ingest.executors.base import WorkerRequest  # noqa: E402
from dwfhpc.states import QueueEntry, SchedulerState  # noqa: E402


class FakeExecutor(ArrayExecutor):
    """The ``ArrayExecutor`` interface over dicts: what is queued, how tasks ended, why they vanished; what was
    submitted (each request with the nodes excluded at that moment) and every exclusion it was given.

    ``can_exclude_nodes`` says whether it plays a scheduler that can steer submissions away (Slurm) or not.
    ``submits=False`` makes any submission fail the test, for code that must never submit (the collector).
    """

    name = "fake"

    def __init__(self, *, can_exclude_nodes: bool = True, submits: bool = True):
        self.can_exclude_nodes = can_exclude_nodes
        self.submits = submits
        self.in_queue: dict[str, str | QueueEntry] = {}  # task id -> scheduler state
        self.outcomes: dict[str, Outcome] = {}  # task id -> how it ended
        self.gone: dict[str, str] = {}  # task id -> the scheduler's reason for a vanished task
        self.queries = 0
        self.submitted: list[tuple[ArrayRequest | WorkerRequest, tuple[str, ...]]] = []
        self.exclusions: list[dict[str, str]] = []  # each exclude_nodes call, in order
        self._n = 0

    def _may_submit(self) -> None:
        if not self.submits:
            raise AssertionError("FakeExecutor(submits=False) was asked to submit")

    def submit(self, request: ArrayRequest) -> Submitted:
        self._may_submit()
        self.submitted.append((request, tuple(sorted(self.excluded_nodes))))
        ids = [f"f{self._n + i}" for i in range(request.ntasks)]
        self._n += request.ntasks
        return Submitted(job_id=None, task_ids=ids, folder=None)

    def submit_workers(self, request: WorkerRequest) -> Submitted:
        self._may_submit()
        self.submitted.append((request, tuple(sorted(self.excluded_nodes))))
        ids = [f"w{self._n + i}" for i in range(request.n)]
        self._n += request.n
        for tid in ids:
            self.in_queue[tid] = "RUNNING"
        return Submitted(job_id="w", task_ids=ids, folder=None)

    def exclude_nodes(self, nodes) -> None:
        super().exclude_nodes(nodes)
        self.exclusions.append(dict(nodes))

    def queue(self, task_ids: list[str]) -> dict[str, QueueEntry]:
        """``in_queue`` as the scheduler would answer it: an entry, or a bare state word given for brevity."""
        self.queries += 1
        return {t: s if isinstance(s, QueueEntry) else QueueEntry(SchedulerState(s))
                for t, s in self.in_queue.items() if t in task_ids}

    def outcome(self, spec: str, index: int, task_id: str | None, folder: str | None) -> Outcome | None:
        return self.outcomes.get(task_id)

    def gone_reasons(self, tasks: list[tuple[str, str | None]]) -> dict[str, str]:
        return {tid: self.gone[tid] for tid, _ in tasks if tid in self.gone}
