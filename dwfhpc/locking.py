"""One process per state file: an flock on ``<file>.lock``, released by the kernel if the holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import DwfError

RESTART_WAIT_SECONDS = 10.0  # a restart right after a crash waits this long for the dead holder's processes


class FileLock:
    """Exclusive lock beside ``path``; ``what`` names the holder in the error.

    ``wait_seconds`` lets a restart after a crash wait for the dead holder's last processes to be reaped
    (the kernel drops the lock only when every process holding the descriptor has gone).
    """

    def __init__(self, path: str | os.PathLike[str], what: str, wait_seconds: float = 0.0):
        self.path = Path(str(path) + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise DwfError(f"another {what} is running with this file", path) from None
                time.sleep(0.1)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def held(path: str | os.PathLike[str]) -> bool:
        """True when some process holds the lock of ``path``."""
        lock = Path(str(path) + ".lock")
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
