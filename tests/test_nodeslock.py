"""The three-node cluster's lock (tests/infra/nodes/nodeslock.py): one session or campaign at a time, a dead
holder never leaves it taken."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import INFRA

sys.path.insert(0, str(INFRA / "nodes"))
from nodeslock import NodesBusy, nodes_lock  # noqa: E402


def _hold_in_child(lock, seconds: float) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {str(INFRA / 'nodes')!r})
        from pathlib import Path
        from nodeslock import nodes_lock
        with nodes_lock("the other session", lock=Path({str(lock)!r})):
            print("held", flush=True); time.sleep({seconds})
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_user_waits_and_is_told_who_holds_it(tmp_path):
    lock = tmp_path / "nodes.lock"
    other = _hold_in_child(lock, 30)
    try:
        with pytest.raises(NodesBusy, match="the other session"):
            with nodes_lock("me", timeout=0.5, every=0.1, lock=lock):
                pass
    finally:
        other.kill()
        other.wait()


def test_a_killed_holder_leaves_the_cluster_free(tmp_path):
    lock = tmp_path / "nodes.lock"
    other = _hold_in_child(lock, 30)
    other.kill()
    other.wait()
    with nodes_lock("me", timeout=5, every=0.1, lock=lock):
        assert "me" in lock.read_text()


def test_one_process_may_take_it_twice(tmp_path):
    """Two test modules importing the ``nodes_cluster`` fixture hold two instances of it in one session."""
    lock = tmp_path / "nodes.lock"
    with nodes_lock("module one", timeout=1, lock=lock):
        with nodes_lock("module two", timeout=1, lock=lock):
            pass
        other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import sys; sys.path.insert(0, {str(INFRA / 'nodes')!r})
            from pathlib import Path
            from nodeslock import NodesBusy, nodes_lock
            try:
                with nodes_lock("another process", timeout=0.3, every=0.1, lock=Path({str(lock)!r})):
                    print("took it")
            except NodesBusy:
                print("busy")
        """)], capture_output=True, text=True)
        assert other.stdout.strip() == "busy"  # still held after the inner block ended
    with nodes_lock("me again", timeout=1, lock=lock):
        pass
