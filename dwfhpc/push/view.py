"""What push shows: a rich live view on a terminal, structured ``key=value`` log lines otherwise.

Log lines (one per event, UTC time first) look like::

    2025-11-25T03:01:02Z level=info event=delivered expid=DECam_01000001 parts=4 latency_s=12.4

``quiet`` keeps only errors (on stderr), for cron.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..states import StreamState


@dataclass
class StreamStats:
    state: str = StreamState.IDLE
    part: str = ""
    bytes_total: int = 0
    parts_sent: int = 0
    last_rate: float = 0.0  # bytes/s of the last part


@dataclass
class ViewState:
    streams: list[StreamStats]
    queued_exposures: int = 0
    queued_parts: int = 0
    packing: int = 0
    in_flight: int = 0
    pending_files: int = 0
    delivered: deque = field(default_factory=lambda: deque(maxlen=8))  # (expid, latency s)
    errors: deque = field(default_factory=lambda: deque(maxlen=5))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    return f'"{text}"' if (" " in text or "=" in text or not text) else text


class PushView:
    """Events in, lines or a live table out."""

    def __init__(self, state: ViewState, *, quiet: bool = False, live: bool | None = None, out=None):
        self.state = state
        self.quiet = quiet
        self.out = out or sys.stdout
        self.live_enabled = (not quiet) and (self.out.isatty() if live is None else live)
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> "PushView":
        if self.live_enabled:
            self._live = Live(self.render(), console=Console(file=self.out), refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def event(self, level: str, event: str, **fields) -> None:
        """One structured event; errors also go to the live view's error list."""
        if level == "error":
            self.state.errors.append(f"{event}: " + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items()))
        if self.quiet and level != "error":
            return
        if self._live is not None and level != "error":
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = f"{stamp} level={level} event={event} " + " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        with self._lock:
            stream = sys.stderr if (self.quiet or self._live is not None) and level == "error" else self.out
            print(line.rstrip(), file=stream, flush=True)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def render(self) -> Group:
        s = self.state
        head = Table.grid(padding=(0, 2))
        head.add_row(f"files settling: {s.pending_files}", f"exposures waiting: {s.queued_exposures}",
                     f"packing: {s.packing}", f"in flight: {s.in_flight}", f"parts queued: {s.queued_parts}")
        streams = Table(title="streams", expand=False)
        for col in ("#", "state", "part", "parts", "MB sent", "last MB/s"):
            streams.add_column(col)
        for i, st in enumerate(s.streams):
            streams.add_row(str(i), st.state, st.part, str(st.parts_sent), f"{st.bytes_total / 1e6:.1f}",
                            f"{st.last_rate / 1e6:.2f}")
        recent = Table(title="delivered (file complete -> in inbox)")
        recent.add_column("exposure")
        recent.add_column("latency s")
        for expid, lat in list(s.delivered)[::-1]:
            recent.add_row(expid, f"{lat:.1f}")
        parts = [head, streams, recent]
        if s.errors:
            parts.append(Text("\n".join(s.errors), style="red"))
        return Group(*parts)
