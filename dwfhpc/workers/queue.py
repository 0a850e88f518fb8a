"""The work queue between ingest and warm workers, on the shared file system (no TCP from nodes).

Layout under the queue root (one per ingest state DB)::

    tickets/<seq>.<part>.<ccd>.a<attempt>.json   handed out, not yet claimed (oldest name first)
    claimed/<worker>/<ticket name>               claimed by one worker (an atomic rename)
    finished/<ticket name>                       the worker wrote the task's result file
    workers/<worker>.json                        each worker's heartbeat: job id, host, state, ticket
    stop/<worker> | stop/ALL                     drain requests: finish the current task, then exit
    masters.generation                           bumped by ingest each time new masters are built
    pool.json                                    the ingest's worker pool (:mod:`dwfhpc.ingest.executors.workers`)
    settings.json                                the workers' settings (:mod:`dwfhpc.workers.settings`)

The names come from :class:`dwfhpc.layout.WorkerQueueFiles`.

A ticket names a task spec and an index: the worker runs exactly what an array task with that
spec and index would run, and leaves its result file in the same place. Claiming is one
``rename(2)`` from ``tickets/`` into the worker's own folder: of two workers racing for a ticket,
one rename succeeds and the other gets ``ENOENT``, so no CCD is ever run twice at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DwfError
from ..layout import WorkerQueueFiles

ALL = "ALL"


@dataclass(frozen=True)
class Ticket:
    """One CCD task handed to the workers: run ``index`` of ``spec`` (attempt ``attempt`` of ``part``/``ccd``)."""

    part: str
    ccd: int
    spec: str
    index: int
    attempt: int
    t_put: float

    @property
    def name(self) -> str:
        return f"{int(self.t_put * 1e9):020d}.{self.part}.{self.ccd:03d}.a{self.attempt}.json"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def read(cls, path: Path) -> Ticket:
        try:
            data = json.loads(path.read_text())
            return cls(part=str(data["part"]), ccd=int(data["ccd"]), spec=str(data["spec"]),
                       index=int(data["index"]), attempt=int(data["attempt"]), t_put=float(data["t_put"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DwfError(f"not a readable work ticket ({exc})", path) from None


@dataclass(frozen=True)
class WorkerBeat:
    """A worker's last heartbeat."""

    worker: str
    job_id: str | None
    host: str
    pid: int
    state: str  # starting | idle | busy | draining | exited
    ticket: str | None
    started: float
    beat: float
    tasks_done: int = 0
    masters_generation: int = 0


class WorkQueue:
    """Tickets, claims, heartbeats and drain requests under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.files = WorkerQueueFiles(self.root)
        for sub in WorkerQueueFiles.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ ingest side
    def put(self, part: str, ccd: int, spec: str | os.PathLike[str], index: int, attempt: int) -> Ticket:
        """Hand out one task (written under a temporary name, then renamed: never seen half-written)."""
        ticket = Ticket(part=part, ccd=int(ccd), spec=str(spec), index=int(index), attempt=int(attempt),
                        t_put=time.time())
        atomic_write_text(self.files.ticket(ticket.name), ticket.to_json())
        return ticket

    def waiting(self) -> list[Ticket]:
        """Tickets not yet claimed, oldest first."""
        return [t for t in (self._read(p) for p in self._ticket_files()) if t is not None]

    def claims(self) -> dict[str, list[Ticket]]:
        """worker -> the tickets it has claimed and not finished."""
        out: dict[str, list[Ticket]] = {}
        for wdir in sorted(self.files.claimed.iterdir()):
            if wdir.is_dir():
                tickets = [t for t in (self._read(p) for p in sorted(wdir.glob("*.json"))) if t is not None]
                if tickets:
                    out[wdir.name] = tickets
        return out

    def withdraw(self, ticket: Ticket, worker: str | None = None) -> bool:
        """Remove a ticket (unclaimed, or claimed by ``worker`` that died): True if it was there."""
        path = self.files.claim(worker, ticket.name) if worker else self.files.ticket(ticket.name)
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def clear_finished(self, ticket: Ticket) -> None:
        self.files.finished_ticket(ticket.name).unlink(missing_ok=True)

    def beats(self) -> list[WorkerBeat]:
        out = []
        for path in sorted(self.files.heartbeats.glob("*.json")):
            try:
                out.append(WorkerBeat(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # being replaced right now: the next poll reads it
        return out

    def request_drain(self, worker: str = ALL) -> None:
        """Ask one worker (or all) to finish its current task and exit."""
        atomic_write_text(self.files.stop_request(worker), f"{time.time()}\n")

    def cancel_drain(self, worker: str = ALL) -> None:
        self.files.stop_request(worker).unlink(missing_ok=True)

    def masters_generation(self) -> int:
        try:
            return int(self.files.masters_generation.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def bump_masters(self) -> int:
        """New masters were built: workers copy them again before their next task."""
        gen = self.masters_generation() + 1
        atomic_write_text(self.files.masters_generation, f"{gen}\n")
        return gen

    # ------------------------------------------------------------------ worker side
    def claim(self, worker: str) -> Ticket | None:
        """Take the oldest waiting ticket for ``worker`` (atomic rename), or None when there is none."""
        mine = self.files.claimed_by(worker)
        mine.mkdir(parents=True, exist_ok=True)
        for path in self._ticket_files():
            target = mine / path.name
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another worker was faster
            ticket = self._read(target)
            if ticket is not None:
                return ticket
        return None

    def finish(self, worker: str, ticket: Ticket) -> None:
        """The result file is written: move the claim to ``finished/``."""
        try:
            os.replace(self.files.claim(worker, ticket.name), self.files.finished_ticket(ticket.name))
        except FileNotFoundError:
            pass  # withdrawn by ingest (it declared this worker dead): the result still counts once

    def drain_requested(self, worker: str) -> bool:
        return self.files.stop_request(ALL).exists() or self.files.stop_request(worker).exists()

    def beat(self, beat: WorkerBeat) -> None:
        atomic_write_text(self.files.heartbeat(beat.worker), json.dumps(asdict(beat)))

    # ------------------------------------------------------------------ helpers
    def _ticket_files(self) -> Iterator[Path]:
        return iter(sorted(p for p in self.files.tickets.glob("*.json")))

    @staticmethod
    def _read(path: Path) -> Ticket | None:
        try:
            return Ticket.read(path)
        except DwfError:
            return None
