"""The sender journal: SQLite (WAL) record of every raw file, exposure and part push handled.

Tables (times are Unix seconds, UTC):

``files``      path (key), size, expid, state seen|complete|failed, reason, t_seen, t_complete
``exposures``  expid (key), instrument, expnum, night, obstype, kind, files (JSON list of raw paths),
               nparts, codec, state seen|complete|packing|packed|delivered|failed (seen: an HSC visit
               still waiting for CCD files), reason, attempts (packings started),
               t_seen (first file seen), t_complete (all raw files complete), t_pack_start, t_packed,
               t_delivered (last part confirmed in the receiver's inbox)
``parts``      expid, k (key), n, tar_name, manifest_name, tar_bytes, state packed|sending|confirmed|failed,
               stream, attempts, reason, retryable, t_packed, t_send_start, t_confirmed, send_seconds
``events``     t, level, expid, message (what the live view and the logs said)

Exposures and parts change state through the named transitions of :class:`Journal` (``mark_*``,
:meth:`Journal.part_packed`, :meth:`Journal.part_attempt`, :meth:`Journal.confirm_exposure_if_done`);
:meth:`Journal.set_exposure` and :meth:`Journal.set_part` write the other columns.

Latency breakdown of an exposure: wait = t_pack_start - t_complete, pack = t_packed - t_pack_start,
send = t_delivered - t_packed, total = t_delivered - t_complete.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ..db import Database
from ..states import FILE_FINAL, FileState, PushExposureState, SentPartState

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, expid TEXT, state TEXT NOT NULL, reason TEXT,
    t_seen REAL, t_complete REAL);
CREATE TABLE IF NOT EXISTS exposures (
    expid TEXT PRIMARY KEY, instrument TEXT, expnum INTEGER, night TEXT, obstype TEXT, kind TEXT,
    files TEXT NOT NULL DEFAULT '[]', nparts INTEGER, codec TEXT, state TEXT NOT NULL, reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, t_seen REAL, t_complete REAL, t_pack_start REAL,
    t_packed REAL, t_delivered REAL);
CREATE TABLE IF NOT EXISTS parts (
    expid TEXT NOT NULL, k INTEGER NOT NULL, n INTEGER NOT NULL, tar_name TEXT NOT NULL,
    manifest_name TEXT NOT NULL, tar_bytes INTEGER, state TEXT NOT NULL, stream INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, reason TEXT, retryable INTEGER NOT NULL DEFAULT 0,
    t_packed REAL, t_send_start REAL, t_confirmed REAL, send_seconds REAL,
    PRIMARY KEY (expid, k));
CREATE TABLE IF NOT EXISTS events (
    t REAL NOT NULL, level TEXT NOT NULL, expid TEXT, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS parts_state ON parts(state);
CREATE INDEX IF NOT EXISTS exposures_state ON exposures(state);
"""

EXPOSURE_STATES = tuple(PushExposureState)
PART_STATES = tuple(SentPartState)


@dataclass(frozen=True)
class ExposureRow:
    expid: str
    instrument: str
    expnum: int
    night: str
    obstype: str
    kind: str
    files: tuple[str, ...]
    nparts: int | None
    codec: str | None
    state: PushExposureState
    reason: str | None
    attempts: int
    t_seen: float | None
    t_complete: float | None
    t_pack_start: float | None
    t_packed: float | None
    t_delivered: float | None


@dataclass(frozen=True)
class SentPart:
    """A part in the journal (the state DB's received part is :class:`dwfhpc.statedb.PartRow`)."""

    expid: str
    k: int
    n: int
    tar_name: str
    manifest_name: str
    tar_bytes: int | None
    state: SentPartState
    stream: int | None
    attempts: int
    reason: str | None
    retryable: bool
    t_packed: float | None
    t_send_start: float | None
    t_confirmed: float | None
    send_seconds: float | None


class Journal(Database):
    """Thread-safe access to the journal (one connection, one lock; see :class:`dwfhpc.db.Database`)."""

    SCHEMA = SCHEMA
    MIGRATIONS = ()
    EVENT_KEY = "expid"
    TIMEOUT = 30.0

    # ---------------------------------------------------------------- files
    def file_state(self, path: str) -> sqlite3.Row | None:
        rows = self._rows("SELECT * FROM files WHERE path=?", (path,))
        return rows[0] if rows else None

    def file_seen(self, path: str, size: int, now: float) -> float:
        """Record a raw file the first time it is seen; return when it was first seen."""
        self._exec("INSERT OR IGNORE INTO files(path, size, state, t_seen) VALUES (?,?,?,?)",
                   (path, size, FileState.SEEN, now))
        self._exec("UPDATE files SET size=? WHERE path=? AND state=?", (size, path, FileState.SEEN))
        return float(self._rows("SELECT t_seen FROM files WHERE path=?", (path,))[0]["t_seen"])

    def file_complete(self, path: str, size: int, expid: str, now: float) -> None:
        self._exec("UPDATE files SET state=?, size=?, expid=?, t_complete=?, reason=NULL WHERE path=?",
                   (FileState.COMPLETE, size, expid, now, path))

    def file_failed(self, path: str, reason: str) -> None:
        self._exec("UPDATE files SET state=?, reason=? WHERE path=?", (FileState.FAILED, reason, path))

    def settled_files(self) -> set[str]:
        """Paths already complete or failed (the watcher never looks at them again)."""
        return {r["path"] for r in self._rows("SELECT path FROM files WHERE state IN (?,?)", sorted(FILE_FINAL))}

    # ---------------------------------------------------------------- exposures
    def add_file_to_exposure(self, info, path: str, now: float) -> None:
        """Attach a complete raw file to its exposure (created on first file)."""
        with self._lock:
            row = self._rows("SELECT files FROM exposures WHERE expid=?", (info.expid,))
            if not row:
                self._exec("INSERT INTO exposures(expid, instrument, expnum, night, obstype, kind, files, state, t_seen)"
                           " VALUES (?,?,?,?,?,?,?,?,?)",
                           (info.expid, info.instrument, info.expnum, info.night, info.obstype, info.kind,
                            json.dumps([path]), PushExposureState.SEEN, now))
                return
            files = json.loads(row[0]["files"])
            if path not in files:
                files.append(path)
                self._exec("UPDATE exposures SET files=? WHERE expid=?", (json.dumps(sorted(files)), info.expid))

    def exposure_complete(self, expid: str, now: float) -> None:
        self._exec("UPDATE exposures SET state=?, t_complete=? WHERE expid=? AND state=?",
                   (PushExposureState.COMPLETE, now, expid, PushExposureState.SEEN))

    def set_exposure(self, expid: str, **fields) -> None:
        """Update columns of an exposure (the table's own columns only: an unknown one raises ValueError).

        Its state changes through the named transitions below (``mark_*``)."""
        self.update("exposures", {"expid": expid}, fields)

    # exposure transitions: seen -> complete -> packing -> packed -> delivered, or failed; back to complete
    # (packed again) after an interrupted packing or parts the receiver lost
    def mark_packing(self, expid: str, **fields) -> None:
        """Packing of the exposure started; ``fields``: other columns (t_pack_start, codec, attempts, ...)."""
        self.update("exposures", {"expid": expid}, {"state": PushExposureState.PACKING, **fields})

    def mark_packed(self, expid: str, **fields) -> None:
        """Every part of the exposure is packed (or packed parts are queued again); ``fields``: other columns."""
        self.update("exposures", {"expid": expid}, {"state": PushExposureState.PACKED, **fields})

    def mark_repack(self, expid: str, **fields) -> None:
        """Back to complete: the exposure is packed again (confirmed parts are skipped); ``fields``: other columns."""
        self.update("exposures", {"expid": expid}, {"state": PushExposureState.COMPLETE, **fields})

    def mark_exposure_failed(self, expid: str, reason: str) -> None:
        """Packing or a part's sending failed for good: final ``failed`` with ``reason``."""
        self.update("exposures", {"expid": expid}, {"state": PushExposureState.FAILED, "reason": reason})

    def exposure(self, expid: str) -> ExposureRow | None:
        rows = self._rows("SELECT * FROM exposures WHERE expid=?", (expid,))
        return _exposure_row(rows[0]) if rows else None

    def exposures(self, *states: str) -> list[ExposureRow]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self._rows(f"SELECT * FROM exposures WHERE state IN ({marks}) ORDER BY expnum", states)
        else:
            rows = self._rows("SELECT * FROM exposures ORDER BY expnum")
        return [_exposure_row(r) for r in rows]

    # ---------------------------------------------------------------- parts
    def part_packed(self, expid: str, k: int, n: int, tar_name: str, manifest_name: str, tar_bytes: int,
                    now: float) -> bool:
        """Record a freshly packed part; returns False when that part is already confirmed (skip it)."""
        with self._lock:
            rows = self._rows("SELECT state FROM parts WHERE expid=? AND k=?", (expid, k))
            if rows and rows[0]["state"] == SentPartState.CONFIRMED:
                return False
            self._exec("INSERT OR REPLACE INTO parts(expid, k, n, tar_name, manifest_name, tar_bytes, state,"
                       " attempts, t_packed) VALUES (?,?,?,?,?,?,?,"
                       " COALESCE((SELECT attempts FROM parts WHERE expid=? AND k=?), 0), ?)",
                       (expid, k, n, tar_name, manifest_name, tar_bytes, SentPartState.PACKED, expid, k, now))
            return True

    def set_part(self, expid: str, k: int, **fields) -> None:
        """Update columns of a sent part (the table's own columns only: an unknown one raises ValueError).

        Its state changes through the named transitions (:meth:`part_packed`, :meth:`part_attempt`, ``mark_part_*``)."""
        self.update("parts", {"expid": expid, "k": k}, fields)

    # part transitions: packed -> sending -> confirmed, or failed; back to packed to be sent again
    def mark_part_packed(self, expid: str, k: int, **fields) -> None:
        """The part is to be sent (again): back to packed; ``fields``: other columns (reason, retryable, ...)."""
        self.update("parts", {"expid": expid, "k": k}, {"state": SentPartState.PACKED, **fields})

    def mark_part_confirmed(self, expid: str, k: int, *, now: float, send_seconds: float) -> None:
        """The part is in the receiver's inbox."""
        self.update("parts", {"expid": expid, "k": k},
                    {"state": SentPartState.CONFIRMED, "t_confirmed": now, "send_seconds": send_seconds,
                     "reason": None, "retryable": 0})

    def mark_part_failed(self, expid: str, k: int, reason: str, *, retryable: bool) -> None:
        """Sending the part failed: ``failed`` with ``reason`` (``retryable``: a later run sends it again)."""
        self.update("parts", {"expid": expid, "k": k},
                    {"state": SentPartState.FAILED, "reason": reason, "retryable": int(retryable)})

    def part_attempt(self, expid: str, k: int, stream: int, now: float) -> None:
        self._exec("UPDATE parts SET state=?, stream=?, attempts=attempts+1, t_send_start=?"
                   " WHERE expid=? AND k=?", (SentPartState.SENDING, stream, now, expid, k))

    def parts(self, expid: str | None = None, *states: str) -> list[SentPart]:
        sql, args = "SELECT * FROM parts WHERE 1=1", []
        if expid is not None:
            sql += " AND expid=?"
            args.append(expid)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        return [_part_row(r) for r in self._rows(sql + " ORDER BY expid, k", args)]

    def confirm_exposure_if_done(self, expid: str, now: float) -> bool:
        """Mark the exposure delivered when all of its parts are confirmed; True if it just became so."""
        with self._lock:
            exp = self.exposure(expid)
            if exp is None or exp.state == PushExposureState.DELIVERED or not exp.nparts:
                return False
            done = self._rows("SELECT COUNT(*) AS c FROM parts WHERE expid=? AND state=?",
                              (expid, SentPartState.CONFIRMED))[0]["c"]
            if done < exp.nparts:
                return False
            self.update("exposures", {"expid": expid},
                        {"state": PushExposureState.DELIVERED, "t_delivered": now, "reason": None})
            return True

    # ---------------------------------------------------------------- events, summary
    def event(self, level: str, message: str, expid: str | None = None, now: float | None = None) -> None:
        self.add_event(level, message, expid, now)

    def summary(self) -> dict:
        """Counts by state and latency figures, for ``dwfhpc push --status``."""
        out: dict = {"files": {}, "exposures": {}, "parts": {}}
        for table, key in (("files", "files"), ("exposures", "exposures"), ("parts", "parts")):
            for r in self._rows(f"SELECT state, COUNT(*) AS c FROM {table} GROUP BY state"):
                out[key][r["state"]] = r["c"]
        lat = [r["l"] for r in self._rows("SELECT t_delivered - t_complete AS l FROM exposures"
                                          " WHERE state=? AND t_complete IS NOT NULL ORDER BY l",
                                          (PushExposureState.DELIVERED,))]
        if lat:
            out["latency_seconds"] = {"median": lat[len(lat) // 2], "max": lat[-1], "n": len(lat)}
        failed = (FileState.FAILED,)  # "failed" in all three tables
        out["failed"] = [(r["path"], r["reason"]) for r in self._rows("SELECT path, reason FROM files WHERE state=?", failed)]
        out["failed"] += [(r["expid"], r["reason"])
                          for r in self._rows("SELECT expid, reason FROM exposures WHERE state=?", failed)]
        out["failed"] += [(f"{r['tar_name']}", r["reason"])
                          for r in self._rows("SELECT tar_name, reason FROM parts WHERE state=?", failed)]
        return out


def _exposure_row(r: sqlite3.Row) -> ExposureRow:
    d = dict(r)
    d["files"] = tuple(json.loads(d["files"]))
    d["state"] = PushExposureState(d["state"])
    return ExposureRow(**d)


def _part_row(r: sqlite3.Row) -> SentPart:
    d = dict(r)
    d["retryable"] = bool(d["retryable"])
    d["state"] = SentPartState(d["state"])
    return SentPart(**d)
