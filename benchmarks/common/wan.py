"""The emulated WAN of ``tests/infra/wan``: the ONE place its ``wanlink`` module is imported from.

``from common.wan import wanlink`` gives the vendored module (namespaces ``dwfwan-cli`` / ``dwfwan-srv``, one
link per machine); :func:`wait_for_wan` waits while another run's link is up; :func:`stream_transport` is the
site's ``transport`` section for push's streamed transport.
"""

from __future__ import annotations

import sys
import time

from .procs import REPO, say

_WAN = str(REPO / "tests" / "infra" / "wan")
if _WAN not in sys.path:
    sys.path.insert(0, _WAN)
import wanlink  # noqa: E402

__all__ = ["wanlink", "wait_for_wan", "stream_transport", "busy"]


def busy() -> list[str]:
    """``pid command`` of every process in the WAN's namespaces (empty: no link is up)."""
    return wanlink.busy()


def wait_for_wan(seconds: float, prog: str = "night.py") -> None:
    """Wait (up to ``seconds``) while another run's link is up: setting ours up would tear theirs down."""
    deadline = time.time() + seconds
    said = False
    while (users := wanlink.busy()):
        if time.time() > deadline:
            raise SystemExit(f"{prog}: error: the emulated WAN is in use by another run: " + "; ".join(users[:3]))
        if not said:
            say("the emulated WAN is in use by another run (" + "; ".join(users[:2]) + "): waiting")
            said = True
        time.sleep(10)


def stream_transport(args) -> dict:
    """``--stream``: the streamed transport, its receiver this checkout's dwfhpc (the sshd shares this host)."""
    if not getattr(args, "stream", False):
        return {}
    return {"stream": True, "receiver_command": f"env PYTHONPATH={REPO} {sys.executable} -m dwfhpc"}
