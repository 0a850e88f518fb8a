"""What every batch scheduler dwfhpc talks to has in common, and the one place a scheduler command runs.

Modelled on dask-jobqueue (``core.py``: a job class whose per-scheduler differences are class
attributes, one ``_call`` for every command) and Parsl's ``execute_wait``: :func:`run` is the only
``subprocess`` call of the layer (a list argv, never a shell, a timeout, stderr kept), and a
:class:`Scheduler` reaches it through ``self.call`` so tests can put a fake cluster behind it
(``tests/fakes.py``).

A :class:`Scheduler` owns, for its scheduler:

* resources (:class:`Resources`, from the site config's ``scheduler:`` section) -> the script's
  directive lines (``#SBATCH ...`` / ``#PBS ...``);
* submitting a script and parsing the job id it prints;
* ONE queue query for all our tasks (id -> :class:`~dwfhpc.states.QueueEntry`: the scheduler's own
  state words translated into :class:`~dwfhpc.states.SchedulerState` by :meth:`Scheduler.translate`,
  as Parsl's providers fill ``JobStatus``);
* why a task that left the queue ended, where the scheduler keeps a record;
* the largest array the cluster accepts, and cancelling.
"""

from __future__ import annotations

import shlex
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import SchedulerSettings
from ..errors import DwfError
from ..states import QueueEntry, SchedulerState

#: every job dwfhpc submits is named ``dwf-...``; ``dwfhpc jobs`` finds ours by this prefix
JOB_PREFIX = "dwf-"


def job_name(*parts: object) -> str:
    """``job_name("DECam_00000031", "p1")`` -> ``dwf-DECam_00000031-p1``."""
    return JOB_PREFIX + "-".join(str(p) for p in parts)


def walltime(minutes: int) -> str:
    """Minutes as ``HH:MM:00`` (both Slurm and PBS read it)."""
    minutes = int(minutes)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


# --------------------------------------------------------------------------- the one call site
#: what :func:`run` is: (argv, timeout seconds) -> the finished process (stdout, stderr as text)
Call = Callable[[list[str], float], subprocess.CompletedProcess]


def run(argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run one scheduler command and wait for it: the only ``subprocess`` call of dwfhpc.scheduler.

    ``argv`` is a list (never a shell string); stdout and stderr are captured as text. Raises
    ``FileNotFoundError`` when the command does not exist and ``subprocess.TimeoutExpired`` after
    ``timeout`` seconds; :meth:`Scheduler._call` turns both into a :class:`DwfError`.
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError(f"scheduler commands are argv lists, not shell strings: {argv!r}")
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)


class CommandNotFound(DwfError):
    """The scheduler's command is not on PATH: this is not (yet) a cluster of that kind."""


# --------------------------------------------------------------------------- resources and tasks
@dataclass(frozen=True)
class Resources:
    """What one task (or one job) asks the scheduler for; None leaves a directive out."""

    time_minutes: int = 20
    mem_gb: float | None = 4.0
    cpus: int | None = 1
    tmp_gb: float | None = None  # node-local scratch
    partition: str | None = None  # Slurm
    account: str | None = None
    qos: str | None = None  # Slurm
    reservation: str | None = None  # Slurm
    queue: str | None = None  # PBS
    array_parallelism: int | None = None  # tasks of one array running at once (Slurm %N, Torque %N)
    nodes: int | None = None  # None: one task; N: N nodes, one task per node (stage-image)
    signal_delay_s: int | None = 60  # Slurm: USR2 this long before the time limit
    setup: tuple[str, ...] = ()  # shell lines run before the task (module load ...)
    extra: Mapping[str, str] = field(default_factory=dict)  # additional directives, key=value

    @classmethod
    def from_settings(cls, s: SchedulerSettings, *, mem_gb: float | None = None,
                      time_minutes: int | None = None) -> "Resources":
        """The site's ``scheduler:`` section; ``mem_gb``/``time_minutes`` replace its defaults (one attempt's)."""
        return cls(time_minutes=int(time_minutes or s.time_minutes), mem_gb=mem_gb or s.mem_gb, cpus=s.cpus_per_task,
                   tmp_gb=s.tmp_gb, partition=s.partition, account=s.account, qos=s.qos, reservation=s.reservation,
                   queue=s.queue, array_parallelism=s.array_parallelism, setup=tuple(s.setup), extra=dict(s.extra))

    def but(self, **changes) -> "Resources":
        return replace(self, **changes)

    @property
    def mem_mb(self) -> int | None:
        return int(self.mem_gb * 1024) if self.mem_gb else None

    @property
    def tmp_mb(self) -> int | None:
        return int(self.tmp_gb * 1024) if self.tmp_gb else None


_UNKNOWN = QueueEntry(SchedulerState.UNKNOWN)


@dataclass(frozen=True)
class QueuedTask:
    """One task (array tasks expanded) in the scheduler's queue, as the scheduler's translator read it."""

    job_id: str
    name: str
    state: str  # the scheduler's word as ``dwfhpc jobs`` shows it (Slurm's own; PBS's letters named)
    reason: str = ""  # what the scheduler says it waits for (Slurm's %r, PBS's comment)
    entry: QueueEntry = _UNKNOWN  # the state in dwfhpc's words, and the reason
    display_state: str = ""  # what ``dwfhpc jobs`` shows (HELD for a held task); the state when empty

    def __post_init__(self) -> None:
        if not self.display_state:
            object.__setattr__(self, "display_state", self.state)


# --------------------------------------------------------------------------- the scheduler
class Scheduler(ABC):
    """One batch scheduler. Subclasses set the class attributes and the few parsers that differ."""

    name: str = "?"
    directive_prefix: str = "#"  # "#SBATCH" / "#PBS"
    script_suffix: str = ""  # ".sbatch" / ".pbs"
    submit_command: tuple[str, ...] = ()  # argv before the script
    cancel_command: str = ""
    missing_hint: str = "is this a cluster with a batch scheduler?"
    array_log_name: str = ""  # log file name of an array task, in the log folder
    job_log_name: str = ""  # log file name of a plain job
    submit_timeout: float = 120.0
    query_timeout: float = 60.0

    def __init__(self, settings: SchedulerSettings | None = None, *, call: Call = run):
        self.settings = settings or SchedulerSettings()
        self.call = call
        self.queries = 0  # queue queries made (benchmarks, tests: one per poll)
        self._max_array: int | None | bool = False  # False: not asked yet

    # ---------------------------------------------------------------- the call
    def _call(self, argv: list[str], *, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Every command of this scheduler goes through here: missing command, timeout and (``check``)
        a non-zero exit become a :class:`DwfError` naming the command and its stderr."""
        timeout = timeout or self.query_timeout
        try:
            proc = self.call(list(argv), timeout)
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]} not found: {self.missing_hint}") from None
        except subprocess.TimeoutExpired:
            raise DwfError(f"`{shlex.join(argv)}` did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise DwfError(f"could not run `{shlex.join(argv)}`: {exc}") from None
        if check and proc.returncode != 0:
            raise DwfError(f"{argv[0]} failed (exit {proc.returncode}): {_last_line(proc) or 'no message'}")
        return proc

    # ---------------------------------------------------------------- resources -> directives
    def resources(self, *, mem_gb: float | None = None, time_minutes: int | None = None) -> Resources:
        """The site's resources, with this attempt's memory and time where given."""
        return Resources.from_settings(self.settings, mem_gb=mem_gb, time_minutes=time_minutes)

    @abstractmethod
    def directive_lines(self, res: Resources, *, job_name: str, ntasks: int = 1, log_dir: str | Path,
                        log_name: str | None = None) -> list[str]:
        """The script's header lines (with their ``#SBATCH``/``#PBS`` prefix) for ``ntasks`` array tasks."""

    def directives(self, res: Resources, **kw) -> str:
        """:meth:`directive_lines` as the block a template puts under its comments."""
        return "\n".join(self.directive_lines(res, **kw))

    # ---------------------------------------------------------------- submit
    def parse_job_id(self, stdout: str) -> str:
        return stdout.strip().splitlines()[-1].strip()

    def submit(self, script: str | Path) -> str:
        """Submit a script (a job or an array); returns the job id the scheduler printed."""
        script = Path(script)
        proc = self._call([*self.submit_command, str(script)], timeout=self.submit_timeout, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise DwfError(f"{self.submit_command[0]} refused {script.name}: {_last_line(proc) or 'no job id'}", script)
        return self.parse_job_id(proc.stdout)

    def array_task_ids(self, job_id: str, ntasks: int) -> list[str]:
        """The ids of the tasks of an array submitted as ``job_id`` (a single task is a plain job)."""
        return [job_id] if ntasks == 1 else [f"{job_id}_{i}" for i in range(ntasks)]

    # ---------------------------------------------------------------- the queue
    @abstractmethod
    def queue_argv(self, user: str | None = None) -> list[str]: ...

    @abstractmethod
    def parse_queue(self, text: str) -> list[QueuedTask]: ...

    @abstractmethod
    def translate(self, word: str, reason: str = "") -> QueueEntry:
        """The scheduler's own state word (and reason) in dwfhpc's words: the one place each scheduler's
        state vocabulary is read."""

    def queued_task(self, job_id: str, name: str, word: str, reason: str = "") -> QueuedTask:
        """A :class:`QueuedTask` of the queue listing, its state translated."""
        return QueuedTask(job_id, name, self.state_name(word), reason, self.translate(word, reason),
                          self.display(word, reason))

    def state_name(self, word: str) -> str:
        """The scheduler's word as ``dwfhpc jobs`` names it (PBS names its one-letter states)."""
        return word

    def display(self, word: str, reason: str = "") -> str:
        """What ``dwfhpc jobs`` shows for a task (Slurm: HELD for a pending task held by its user or an admin)."""
        return self.state_name(word)

    def task_key(self, task_id: str) -> str:
        """How two spellings of one id are compared (PBS: without the server suffix)."""
        return task_id

    def tasks(self, *, prefix: str | None = None, user: str | None = None) -> list[QueuedTask]:
        """Every task in the queue (of ``user``, named ``prefix...``), in ONE query."""
        self.queries += 1
        proc = self._call(self.queue_argv(user))
        found = self.parse_queue(proc.stdout)
        return [t for t in found if prefix is None or t.name.startswith(prefix)]

    def queue(self, task_ids: Sequence[str], *, user: str | None = None) -> dict[str, QueueEntry]:
        """Which of ``task_ids`` are still queued or running, with their state and reason: one query (none for no ids)."""
        if not task_ids:
            return {}
        states = {self.task_key(t.job_id): t.entry for t in self.tasks(user=user)}
        return {tid: states[self.task_key(tid)] for tid in task_ids if self.task_key(tid) in states}

    def gone_reasons(self, task_ids: Sequence[str]) -> dict[str, str]:
        """Why tasks that left the queue ended (timeout, oom, cancelled, ...), where the scheduler keeps a record."""
        return {}

    # ---------------------------------------------------------------- the cluster
    def query_max_array_size(self) -> int | None:
        return None

    def max_array_size(self) -> int | None:
        """Largest array the cluster accepts: the config's ``max_array_size``, else asked once."""
        if self.settings.max_array_size:
            return self.settings.max_array_size
        if self._max_array is False:
            self._max_array = self.query_max_array_size()
        return self._max_array

    def check(self) -> None:
        """Fail early and clearly when the scheduler cannot be reached."""

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._call([self.cancel_command, *job_ids])


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or "").strip().splitlines() or (proc.stdout or "").strip().splitlines()
    return lines[-1].strip() if lines else ""
