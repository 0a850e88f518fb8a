"""One user of the three-node cluster at a time.

Its namespaces (``dwfn1``..``dwfn3``), bridge, addresses and prefix are fixed, so a second test session or
fault campaign starting it would share it, and its stop would tear it down under the first. Whoever starts
the cluster holds :data:`LOCK` (``flock``) until it has stopped it; the next one waits. The kernel drops the
lock when the holder dies, so a killed run never leaves it taken.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK = Path("/var/tmp/dwf-slurm-nodes.lock")

#: lock path -> how many holders in this process: re-entrant, since two test modules that import the
#: ``nodes_cluster`` fixture each get an instance of it in one session (a second flock in the same process
#: would wait for the first)
_HELD: dict[str, int] = {}


class NodesBusy(TimeoutError):
    """The cluster stayed in use by someone else for the whole wait."""


@contextmanager
def nodes_lock(who: str, timeout: float = 1800.0, every: float = 2.0, lock: Path = LOCK) -> Iterator[None]:
    """Hold the cluster for ``who`` (written into the lock file for the next one to read) within the block;
    re-entrant within one process."""
    key = str(lock)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    raise NodesBusy(f"the three-node cluster is still in use after {timeout:.0f} s "
                                    f"(held by: {holder}; lock {lock})") from None
                time.sleep(every)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {who}\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
    finally:
        os.close(fd)  # releases the lock
