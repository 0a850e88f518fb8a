"""One process per state file: an flock on ``<file>.lock``, released by the kernel if the holder dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import DwfError


class FileLock:
    """Exclusive, non-blocking lock beside ``path``; ``what`` names the holder in the error."""

    def __init__(self, path: str | os.PathLike[str], what: str):
        self.path = Path(str(path) + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise DwfError(f"another {what} is running with this state file", path) from None

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
