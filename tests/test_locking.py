"""One push / one ingest per state file: the lock refuses a second holder and frees itself when the holder dies."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dwfhpc.errors import DwfError
from dwfhpc.locking import FileLock

HOLD = """
import sys, time
from dwfhpc.locking import FileLock
lock = FileLock(sys.argv[1], "holder")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_with_the_file_named(tmp_path):
    state = tmp_path / "journal.sqlite"
    proc = _holder(state, 60)
    try:
        assert FileLock.held(state)
        with pytest.raises(DwfError, match="another dwfhpc push is running") as err:
            FileLock(state, "dwfhpc push", wait_seconds=0.3)
        assert str(state) in str(err.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_restart_waits_for_a_dying_holder(tmp_path):
    """The holder exits 1 s after taking the lock; a restart that waits up to 10 s gets it."""
    state = tmp_path / "journal.sqlite"
    proc = _holder(state, 1.0)
    t0 = time.monotonic()
    lock = FileLock(state, "dwfhpc push", wait_seconds=10)
    waited = time.monotonic() - t0
    proc.wait()
    assert 0.2 < waited < 10
    lock.release()
    assert not FileLock.held(state)


def test_a_killed_holder_frees_the_lock(tmp_path):
    state = tmp_path / "state.sqlite"
    proc = _holder(state, 60)
    proc.kill()
    proc.wait()
    FileLock(state, "dwfhpc ingest").release()
