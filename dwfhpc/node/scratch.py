"""Node-local scratch: pick it from the environment, check its free space, always clean it.

The folder is removed on success, on failure, and on SIGTERM / SIGUSR2 (which Slurm sends
before a time limit when asked with ``--signal``): the handlers raise :class:`TaskInterrupted`
so the ``finally`` clauses run.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DwfError


class TaskInterrupted(DwfError):
    """The scheduler asked the task to stop."""


def scratch_root(variables: list[str], fallback: str) -> Path:
    """The first of ``variables`` that names an existing folder, else ``fallback``."""
    for var in variables:
        value = os.environ.get(var)
        if value and Path(value).is_dir():
            return Path(value)
    return Path(fallback)


def check_space(root: Path, need_bytes: int, min_free_gb: float) -> None:
    usage = shutil.disk_usage(root)
    need = max(need_bytes, int(min_free_gb * 1e9))
    if usage.free < need:
        raise DwfError(f"scratch has {usage.free / 1e6:.0f} MB free, this task needs {need / 1e6:.0f} MB", root)


@contextmanager
def task_scratch(variables: list[str], fallback: str, need_bytes: int, min_free_gb: float, label: str) -> Iterator[Path]:
    """A private scratch folder for one task, removed whatever happens."""
    root = scratch_root(variables, fallback)
    root.mkdir(parents=True, exist_ok=True)
    check_space(root, need_bytes, min_free_gb)
    folder = Path(tempfile.mkdtemp(prefix=f"dwf-{label}-", dir=root))

    def interrupted(signum, frame):
        raise TaskInterrupted(f"interrupted by {signal.Signals(signum).name}", folder)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        try:
            previous[sig] = signal.signal(sig, interrupted)
        except ValueError:  # not in the main thread (e.g. a local executor thread): no handler
            pass
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
