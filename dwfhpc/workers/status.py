"""Workers alive / busy / idle from their heartbeats: what ``dwfhpc status`` and the night report show."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..layout import WorkerQueueFiles
from ..states import WORKER_FREE, WorkerState
from .queue import WorkQueue
from .worker import HEARTBEAT_SECONDS


def worker_status(queue_root: str | Path, now: float | None = None) -> dict:
    """Workers alive / busy / idle from their heartbeats (what ``dwfhpc status`` and the report show)."""
    root = Path(queue_root)
    if not WorkerQueueFiles(root).heartbeats.is_dir():
        return {"alive": 0, "busy": 0, "idle": 0, "workers": []}
    now = now or time.time()
    beats = WorkQueue(root).beats()
    live = [b for b in beats if b.state != WorkerState.EXITED and now - b.beat < 3 * HEARTBEAT_SECONDS + 5]
    return {"alive": len(live), "busy": sum(b.state == WorkerState.BUSY for b in live),
            "idle": sum(b.state in WORKER_FREE for b in live),
            "workers": [asdict(b) for b in live]}
