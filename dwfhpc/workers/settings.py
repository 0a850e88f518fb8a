"""The warm workers' settings, in one file the ingest writes: ``<queue root>/settings.json``.

Every worker of a pool, however it was launched (submitit locally or on Slurm, the PBS template, a
manual ``dwfhpc node worker``), reads its node-local scratch (the site's ``node.scratch_vars`` and
``scratch_fallback``), its stop margin and its idle limit from here. An argument given to the worker
(``worker_main``'s, ``dwfhpc node worker``'s flags) still wins over the file; with neither, the config's
defaults apply. The walltime (``time_minutes``) is each job's own and stays an argument.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DwfError
from ..layout import WorkerQueueFiles


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a pool shares (see the module docstring)."""

    scratch_vars: list[str]  # environment variables naming node-local scratch, first set wins
    scratch_fallback: str  # scratch when none of them is set
    stop_minutes: float  # take no new CCD this close to the walltime
    max_idle: float | None = None  # exit after this many seconds without work (None: never)

    @classmethod
    def defaults(cls) -> WorkerSettings:
        """The config's defaults (``node.scratch_vars``/``scratch_fallback``, ``ingest.worker_stop_minutes``)."""
        from ..config import IngestSettings, NodeSettings

        node = NodeSettings()
        return cls(scratch_vars=list(node.scratch_vars), scratch_fallback=node.scratch_fallback,
                   stop_minutes=float(IngestSettings.model_fields["worker_stop_minutes"].default))

    @staticmethod
    def path(root: str | os.PathLike[str]) -> Path:
        return WorkerQueueFiles(Path(root)).settings

    def write(self, root: str | os.PathLike[str]) -> Path:
        """Write ``<root>/settings.json`` atomically (a worker never reads it half-written)."""
        return atomic_write_text(self.path(root), json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, root: str | os.PathLike[str]) -> WorkerSettings | None:
        """The settings in ``<root>/settings.json``; None when there is no such file; :class:`DwfError`
        naming the file when it cannot be read or is not valid."""
        path = cls.path(root)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DwfError(f"worker settings not readable ({exc})", path) from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: object, path: str | os.PathLike[str] | None = None) -> WorkerSettings:
        def bad(problem: str) -> DwfError:
            return DwfError(f"not valid worker settings: {problem}", path)

        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}")
        known = {"scratch_vars", "scratch_fallback", "stop_minutes", "max_idle"}
        if unknown := sorted(set(data) - known):
            raise bad(f"unknown key(s) {', '.join(unknown)}")
        if missing := sorted({"scratch_vars", "scratch_fallback", "stop_minutes"} - set(data)):
            raise bad(f"missing key(s) {', '.join(missing)}")
        scratch_vars, fallback = data["scratch_vars"], data["scratch_fallback"]
        stop, idle = data["stop_minutes"], data.get("max_idle")
        if not isinstance(scratch_vars, list) or not all(isinstance(v, str) and v for v in scratch_vars):
            raise bad(f"scratch_vars must be a list of variable names, got {scratch_vars!r}")
        if not isinstance(fallback, str) or not fallback:
            raise bad(f"scratch_fallback must be a non-empty path, got {fallback!r}")
        if not _number(stop) or stop < 0:
            raise bad(f"stop_minutes must be a number >= 0, got {stop!r}")
        if idle is not None and (not _number(idle) or idle <= 0):
            raise bad(f"max_idle must be a number > 0 or null, got {idle!r}")
        return cls(scratch_vars=list(scratch_vars), scratch_fallback=fallback, stop_minutes=float(stop),
                   max_idle=None if idle is None else float(idle))
