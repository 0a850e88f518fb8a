"""Node-local scratch: pick it from the environment, check its free space, always clean it.

The task folder is removed on success, on failure, and on SIGTERM / SIGUSR2 (Slurm sends them
before a time limit or a preemption): the handlers raise :class:`TaskInterrupted`, which unwinds
through every ``finally`` (temporary products on the shared FS included) before the folder goes.

A :class:`ScratchError` (no scratch, not enough free space) and an OS error of :data:`RESOURCE_ERRNOS`
in scratch (:func:`scratch_trouble`) are the *node's* problem, not the CCD's: the task reports them as
``ErrorKind.RESOURCE`` so ingest retries the CCD elsewhere and counts the failure against the node.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..errors import DwfError
from ..layout import check_component, under

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

#: OS errors that say the node's disk is the problem (full, over quota, failing, read-only), not the data
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


class ScratchError(DwfError):
    """No usable scratch, or not enough free space in it."""


class TaskInterrupted(BaseException):
    """The scheduler asked the task to stop (a BaseException so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signame} (time limit, preemption or scancel)")


def scratch_root(variables: list[str], fallback: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Path:
    """The first of ``variables`` naming an existing folder, else ``fallback`` (created if needed)."""
    env = os.environ if env is None else env
    for var in variables:
        value = env.get(var)
        if value and Path(value).is_dir():
            return Path(value)
    root = Path(fallback)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScratchError(f"no scratch: none of ${', $'.join(variables)} is set and the fallback cannot be "
                           f"created ({exc.strerror or exc})", root) from None
    return root


def scratch_trouble(exc: BaseException, scratch: str | os.PathLike[str] | None, *, staging: bool = False) -> bool:
    """Whether ``exc`` is the node's scratch failing rather than the CCD's data or the shared file system.

    True for a :class:`ScratchError` (no scratch, not enough free space), and for an OS error of
    :data:`RESOURCE_ERRNOS` (also one a :class:`DwfError` wraps: its ``__cause__`` / ``__context__``) on a
    file in ``scratch`` (the OS error's file names, the destination alone for a full disk in a copy, else the
    wrapping error's path), or, while ``staging``,
    on no named file (staging writes nowhere else; an unnamed EIO there may be the part's shared FS: no).
    A full shared file system is not the node's fault: False.
    """
    wrappers: list = []
    found: OSError | None = None
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ScratchError):
            return True
        if isinstance(e, OSError) and e.errno in RESOURCE_ERRNOS:
            found = e
            break
        if isinstance(e, DwfError) and e.path:
            wrappers.append(e.path)
        e = e.__cause__ or e.__context__
    if found is None:
        return False
    src, dst = found.filename, getattr(found, "filename2", None)
    # a copy's full disk is its destination's (shutil names both: source, then destination)
    places = [dst] if dst and found.errno != errno.EIO else [src, dst]
    names = [os.fsdecode(n) for n in places if isinstance(n, str | bytes | os.PathLike) and n]
    names = names or [os.fsdecode(n) for n in wrappers if isinstance(n, str | bytes | os.PathLike)]
    if not names:
        return staging and found.errno != errno.EIO
    if scratch is None:
        return False
    root = os.path.realpath(scratch).rstrip(os.sep)
    return any((real := os.path.realpath(n)) == root or real.startswith(root + os.sep) for n in names)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def check_space(root: Path, need_bytes: int, min_free_gb: float) -> int:
    """Raise :class:`ScratchError` naming ``root`` and the shortfall unless it has room; returns free bytes."""
    free = shutil.disk_usage(root).free
    need = int(need_bytes + min_free_gb * 1e9)
    if free < need:
        raise ScratchError(f"scratch has {_mb(free)} free, this task needs {_mb(need)} ({_mb(need_bytes)} for the CCD "
                           f"+ min_free_gb {min_free_gb:g}): short by {_mb(need - free)}", root)
    return free


@contextmanager
def task_scratch(variables: list[str], fallback: str | os.PathLike[str], need_bytes: int, min_free_gb: float,
                 label: str, env: Mapping[str, str] | None = None) -> Iterator[Path]:
    """A private folder for one task in node-local scratch, removed whatever happens.

    Signals raise :class:`TaskInterrupted` inside the block. The folder is removed with signals
    ignored (the task is ending anyway), then the previous handlers come back.
    """
    check_component(label, "expid")  # the label (``<expid>_<ccd>``) becomes part of a folder name
    root = scratch_root(variables, fallback, env)
    check_space(root, need_bytes, min_free_gb)
    previous = {}
    folder: Path | None = None

    def raise_it(signum, frame):
        raise TaskInterrupted(signum)

    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, raise_it)
        except ValueError:  # not the main thread (e.g. a thread pool): no handlers, cleanup still runs
            break
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"dwfhpc-{label}-", dir=root))
        under(root, ("expid", folder.name))  # resolved, still inside the scratch root
        yield folder
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
