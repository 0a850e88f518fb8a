"""Masters as the night goes: once a night's bias and flat tasks are all final, build its masters.

That night's science waits meanwhile (a science CCD calibrated against the previous night's
masters while tonight's are a minute away would be calibrated twice). A night with no
calibration frames uses the nearest night's masters at once. The build runs in a thread so
the ingest loop keeps collecting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..calibrate import build_night_masters
from ..errors import DwfError
from ..state import StateDB

log = logging.getLogger(__name__)


class MastersKeeper:
    def __init__(self, db: StateDB, library: Path, masters: Path, enabled: bool = True,
                 on_built: Callable[[], None] | None = None):
        self.db, self.library, self.masters, self.enabled = db, Path(library), Path(masters), enabled
        self.on_built = on_built  # told after each build (warm workers copy the new masters)
        self._thread: threading.Thread | None = None
        self._building: str | None = None

    def _stale(self) -> dict[str, dict]:
        out = {}
        for night, c in self.db.calibration_nights().items():
            built = self.db.masters_built(night)
            c["stale"] = bool(c["last_done"]) and (built is None or built < c["last_done"])
            out[night] = c
        return out

    def blocked_nights(self) -> set[str]:
        """Nights whose science must wait: calibration tasks pending, or masters not yet rebuilt."""
        if not self.enabled:
            return set()
        return {n for n, c in self._stale().items() if c["pending"] or c["stale"] or n == self._building}

    def update(self) -> None:
        """Start a build for the first night whose calibrations are complete and newer than its masters."""
        if not self.enabled or (self._thread and self._thread.is_alive()):
            return
        for night, c in sorted(self._stale().items()):
            if not c["pending"] and c["stale"]:
                self._building = night
                self._thread = threading.Thread(target=self._build, args=(night,), name=f"masters-{night}", daemon=True)
                self._thread.start()
                return

    def _build(self, night: str) -> None:
        started = time.time()
        try:
            made = build_night_masters(self.library, self.masters, night, progress=lambda s: None)
            self.db.set_masters_built(night, started, len(made))
            if self.on_built is not None:
                self.on_built()
            log.info("night %s: %d masters built in %.1f s", night, len(made), time.time() - started,
                     extra={"part": None})
        except (DwfError, OSError, ValueError) as exc:
            self.db.set_masters_built(night, started, 0, str(exc))
            log.error("night %s: masters not built: %s", night, exc, extra={"part": None})
        finally:
            self._building = None

    def busy(self) -> bool:
        """A build is running."""
        return bool(self._thread and self._thread.is_alive())

    def wait(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)
