"""PBS Pro (arrays ``-J``, ``select=`` chunks, ``qstat -x`` history) and Torque (arrays ``-t``, ``nodes=``).

The site config's ``scheduler.pbs_array_syntax`` picks one (``J``: PBS Pro, ``t``: Torque); see
:func:`dwfhpc.scheduler.scheduler_for`. Ids are compared without the server suffix
(``123[4].server`` is ``123[4]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..states import QueueEntry, SchedulerState
from .base import QueuedTask, Resources, Scheduler, walltime

#: qstat's one-letter states -> dwfhpc's (queued, held, running, exiting, an array begun, waiting for its
#: start time, in transit, suspended, suspended by the workstation's user). A letter not here is UNKNOWN.
STATES = {"Q": SchedulerState.PENDING, "H": SchedulerState.HELD, "R": SchedulerState.RUNNING,
          "E": SchedulerState.COMPLETING, "B": SchedulerState.RUNNING, "W": SchedulerState.PENDING,
          "T": SchedulerState.PENDING, "S": SchedulerState.SUSPENDED, "U": SchedulerState.SUSPENDED}
#: states of a job that has left the queue although qstat still lists it: a finished subjob of an array that
#: is still running (X), a finished job (F, with job history), one moved to another server (M), Torque's
#: completed (C, kept for keep_completed seconds). They hold no slot and must count as gone.
GONE = frozenset("XFMC")

#: PBS Pro's own exit statuses of a job it killed (JOB_EXEC_KILL_*)
_EXIT_REASONS = {-29: "timeout", -27: "oom", -26: "oom", -28: "timeout"}
_COMMENT_REASONS = (("timeout", re.compile(r"walltime \S+ exceeded limit", re.I)),
                    ("oom", re.compile(r"\bv?mem \S+ exceeded limit", re.I)),
                    ("cancelled", re.compile(r"deleted|qdel", re.I)))
_ID = re.compile(r"^\d+(\[\d*\])?")
#: PBS Pro's substate of a finished job that was deleted (JOB_SUBSTATE_TERMINATED; 92 finished, 93 failed)
_SUBSTATE_TERMINATED = "91"


class Pbs(Scheduler):
    """PBS Pro; :class:`Torque` overrides what differs."""

    name = "pbs"
    directive_prefix = "#PBS"
    script_suffix = ".pbs"
    submit_command = ("qsub",)
    cancel_command = "qdel"
    missing_hint = "is this a PBS cluster?"
    array_flag = "-J"  # PBS Pro; Torque: -t
    array_limit = False  # whether the array flag takes %N (Torque) for the tasks running at once
    history = True  # qstat -x shows finished jobs (PBS Pro)

    def _array(self, ntasks: int, res: Resources) -> str:
        limit = f"%{res.array_parallelism}" if self.array_limit and res.array_parallelism else ""
        return f"{self.array_flag} 0-{ntasks - 1}{limit}"

    def _chunks(self, res: Resources) -> list[str]:
        """The ``-l`` resource requests for cpus, memory and scratch (PBS Pro: one ``select`` chunk)."""
        if res.nodes:
            return [f"select={res.nodes}:ncpus=1", "place=scatter"]
        chunk = f"select=1:ncpus={res.cpus or 1}"
        if res.mem_mb:
            chunk += f":mem={res.mem_mb}mb"
        if res.tmp_mb:
            chunk += f":jobfs={res.tmp_mb}mb"
        return [chunk]

    def directive_lines(self, res: Resources, *, job_name: str, ntasks: int = 1, log_dir: str | Path,
                        log_name: str | None = None) -> list[str]:
        opts = [f"-N {job_name}"]
        if ntasks > 1:
            opts.append(self._array(ntasks, res))
        opts.append(f"-l walltime={walltime(res.time_minutes)}")
        opts += [f"-l {c}" for c in self._chunks(res)]
        if res.queue:
            opts.append(f"-q {res.queue}")
        if res.account:
            opts.append(f"-A {res.account}")
        opts += ["-j oe", f"-o {log_dir}/{log_name or ''}"]
        opts += [f"-l {key}={value}" for key, value in res.extra.items()]
        return [f"{self.directive_prefix} {o}" for o in opts]

    # ---------------------------------------------------------------- submit and queue
    def array_task_ids(self, job_id: str, ntasks: int) -> list[str]:
        """``123[].server`` -> ``123[0].server``, ``123[1].server``, ...; a plain job (one task) keeps its id."""
        if "[]" not in job_id:
            return [job_id]
        return [job_id.replace("[]", f"[{i}]") for i in range(ntasks)]

    def task_key(self, task_id: str) -> str:
        return task_id.split(".")[0]

    def queue_argv(self, user: str | None = None) -> list[str]:
        return ["qstat", "-t", *(["-u", user] if user else [])]

    def parse_queue(self, text: str) -> list[QueuedTask]:
        """``qstat -t`` table (Job id, Name, User, Time Use, S, Queue) -> tasks, one-letter states named."""
        tasks = []
        for line in text.splitlines():
            fields = line.split()
            # an array's own line (123[]) is not a task: its subjobs (123[0], ...) are listed after it
            if len(fields) >= 5 and _ID.match(fields[0]) and "[]" not in fields[0] and fields[-2] not in GONE:
                tasks.append(self.queued_task(fields[0], fields[1], fields[-2]))
        return tasks

    def translate(self, word: str, reason: str = "") -> QueueEntry:
        """qstat's one-letter state -> :class:`QueueEntry` (:data:`STATES`); the job's comment as the reason."""
        return QueueEntry(STATES.get(word, SchedulerState.UNKNOWN), reason or None)

    def state_name(self, word: str) -> str:
        """A letter of :data:`STATES` by its name (``R`` -> ``RUNNING``); another letter as it is."""
        return STATES.get(word, word)

    def tasks(self, *, prefix: str | None = None, user: str | None = None) -> list[QueuedTask]:
        """As :meth:`Scheduler.tasks`; with a name ``prefix`` (``dwfhpc jobs``) from ``qstat -t -f``, one query too:
        ``qstat -t``'s table cuts names at 15-16 characters (``dwf-DECam_0000*``), which a prefix cannot match."""
        if prefix is None:
            return super().tasks(user=user)
        self.queries += 1
        found = []
        for jid, attrs in parse_qstat_full(self._call(["qstat", "-t", "-f"]).stdout).items():
            state, name = attrs.get("job_state", ""), attrs.get("Job_Name", "")
            owner = attrs.get("Job_Owner", "").split("@")[0]
            if "[]" in jid or state in GONE or not name.startswith(prefix) or (user and owner != user):
                continue
            found.append(self.queued_task(jid, name, state, attrs.get("comment", "")))
        return found

    def gone_reasons(self, task_ids: Sequence[str]) -> dict[str, str]:
        """One ``qstat -x -f`` for all of them (PBS Pro keeps finished jobs); Torque: nothing."""
        if not task_ids or not self.history:
            return {}
        proc = self._call(["qstat", "-x", "-f", *task_ids], check=False)  # unknown ids: non-zero, others listed
        found = {self.task_key(jid): reason for jid, attrs in parse_qstat_full(proc.stdout).items()
                 if (reason := finished_reason(attrs))}
        return {tid: found[self.task_key(tid)] for tid in task_ids if self.task_key(tid) in found}


class Torque(Pbs):
    """Torque / PBS with ``-t`` arrays (``%N`` limits tasks at once) and ``nodes=1:ppn=N`` requests."""

    name = "pbs"
    array_flag = "-t"
    array_limit = True
    history = False  # qstat -x is XML of the current queue here, not history

    def _chunks(self, res: Resources) -> list[str]:
        if res.nodes:
            return [f"nodes={res.nodes}:ppn=1"]
        return [f"nodes=1:ppn={res.cpus or 1}"] + ([f"mem={res.mem_mb}mb"] if res.mem_mb else [])


def parse_qstat_full(text: str) -> dict[str, dict[str, str]]:
    """``qstat -f`` blocks (``Job Id: X`` then ``    key = value``, tab-indented continuations) -> {id: attrs}."""
    jobs: dict[str, dict[str, str]] = {}
    attrs: dict[str, str] | None = None
    key = None
    for line in text.splitlines():
        if m := re.match(r"^Job Id:\s*(\S+)", line):
            attrs = jobs.setdefault(m.group(1), {})
            key = None
        elif attrs is not None and (m := re.match(r"^\s+([\w.]+) = (.*)$", line)):
            key = m.group(1)
            attrs[key] = m.group(2).strip()
        elif attrs is not None and key and line.startswith("\t"):
            attrs[key] += line.strip()
    return jobs


def finished_reason(attrs: dict[str, str]) -> str | None:
    """Why a finished PBS job ended, from its comment and exit status; None when it says nothing."""
    comment = attrs.get("comment", "")
    for reason, pattern in _COMMENT_REASONS:
        if pattern.search(comment):
            return reason
    if attrs.get("substate") == _SUBSTATE_TERMINATED:  # qdel: PBS Pro keeps no comment, Exit_status may be 0
        return "cancelled"
    status = attrs.get("Exit_status", attrs.get("exit_status"))
    try:
        code = int(status) if status is not None else None
    except ValueError:
        return None
    if code in _EXIT_REASONS:
        return _EXIT_REASONS[code]
    if code is not None and code > 256:
        return f"killed by signal {code - 256}"
    return None
