"""Process helpers of the benchmarks: timestamped progress lines, this checkout's environment and ``dwfhpc`` argv."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def say(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def env(extra: dict | None = None) -> dict:
    """This process's environment with this checkout first on ``PYTHONPATH`` (plus ``extra``)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO), **(extra or {})}


def dwfhpc(*args: str) -> list[str]:
    """argv of ``python -m dwfhpc ARGS`` with this interpreter."""
    return [sys.executable, "-m", "dwfhpc", *args]
