"""Report helpers: percentiles, markdown stage tables, short texts, and the machine's load (it is shared)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np


def pct(values, q) -> float:
    """The ``q``-th percentile of the values that are not None (nan when there are none)."""
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else float("nan")


def vmax(values) -> float:
    return max([x for x in values if x is not None], default=float("nan"))


def stage_rows(records: list[dict], stages, names: dict, key: str = "stages") -> list[str]:
    """``| stage | p50 | p95 | max |`` rows, one per stage, of ``record[key][stage]`` over the records."""
    out = []
    for s in stages:
        v = [r[key].get(s) for r in records]
        out.append(f"| {names.get(s, s)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | {vmax(v):.1f} |")
    return out


def rel(t: float | None, t0: float) -> str:
    return "never" if t is None else f"+{t - t0:.0f} s"


def short(text: str | None, n: int = 150) -> str:
    """One line, no table pipes, at most ``n`` characters."""
    text = " ".join(str(text or "").split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def count(values) -> dict:
    """value -> how many times it occurs (in first-seen order)."""
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


class LoadSampler(threading.Thread):
    """Appends ``<unix time> <1-min load average>`` to a file every 15 s (the machine is shared)."""

    def __init__(self, path: Path):
        super().__init__(name="load", daemon=True)
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        with self.path.open("a") as f:
            while not self.stop.is_set():
                f.write(f"{time.time():.0f} {Path('/proc/loadavg').read_text().split()[0]}\n")
                f.flush()
                self.stop.wait(15)


def load_between(path: Path, t0: float, t1: float) -> str:
    if not path.exists():
        return "not sampled"
    v = [float(b) for a, b, *_ in (line.split() for line in path.read_text().splitlines()) if t0 <= float(a) <= t1]
    return f"1-min load average p50 {np.median(v):.1f}, max {max(v):.1f} ({len(v)} samples)" if v else "not sampled"
