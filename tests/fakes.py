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
