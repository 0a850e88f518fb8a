"""The collector's retry policy against a fake executor and a real state DB: milliseconds, no scheduler.

Also the pieces it stands on: the node's :class:`TaskResult` (versioned, validated JSON), the
state DB's named transitions, its column check and its migrations, and the log -> events handler.
"""

from __future__ import annotations

import time
import json
import logging
import sqlite3
from types import SimpleNamespace

import pytest

from dwfhpc.db import install_event_handler, remove_event_handler
from dwfhpc.ingest.collector import Collector
from dwfhpc.ingest.executors import Outcome, read_result_file
from dwfhpc.node import result_path
from dwfhpc.node.result import (ErrorKind, QaSummary, ResultError, TaskResult, TaskStatus, WcsStatus,
                                WorkerRun)
from dwfhpc.statedb import MIGRATIONS, StateDB
from dwfhpc.states import TASK_FINAL, PartState, TaskState, part_state_from_tasks
from fakes import FakeExecutor

PART = "DECam_00000042.p1of1"
EXPID = "DECam_00000042"


@pytest.fixture
def db(tmp_path):
    with StateDB(tmp_path / "state.sqlite") as db:
        yield db


def add_part(db: StateDB, ccds=(1, 2, 3), kind="science", mem_gb=2.0, time_minutes=10) -> None:
    manifest = SimpleNamespace(expid=EXPID, part=1, parts=1, instrument="decam", night="2024-01-01", kind=kind,
                               filter="g", field="f", expnum=42, tar_sha256="0" * 64, tar_bytes=1, ccds=list(ccds))
    db.add_part(manifest, stem=PART, tar="part.tar", manifest_path="part.manifest.json", t_inbox=1.0,
                mem_gb=mem_gb, time_minutes=time_minutes, now=1.0)


def submit_queued(db: StateDB, now: float = 2.0) -> dict[int, str]:
    """What the submitter does to the DB: one array of the queued tasks; returns task id by CCD."""
    tasks = db.tasks(TaskState.QUEUED)
    ids = [f"a{t.attempt}_{t.ccd}" for t in tasks]
    db.add_submission(PART, "fake", "a", "dwf-test", "spec.json", None, [t.ccd for t in tasks], ids, now=now)
    return {t.ccd: tid for t, tid in zip(tasks, ids, strict=True)}


def ok(ccd: int, **kw) -> Outcome:
    return Outcome(result=TaskResult(status=TaskStatus.OK, ccd=ccd, expid=EXPID, started=10.0, finished=20.0,
                                     qa={"fwhm_arcsec": 1.1}, **kw))


def failed(kind: ErrorKind, error: str = "it broke") -> Outcome:
    return Outcome(result=TaskResult(status=TaskStatus.ERROR, error=error, error_kind=kind, started=10.0,
                                     finished=20.0))


def task(db: StateDB, ccd: int):
    return db.task(PART, ccd)


def attempt(db, ex, col, outcomes: dict[int, Outcome], now: float) -> dict[str, int]:
    """Submit what is queued, let those CCDs end as ``outcomes`` say, and poll once."""
    ids = submit_queued(db, now - 1)
    for ccd, outcome in outcomes.items():
        ex.outcomes[ids[ccd]] = outcome
    return col.poll(now)


# --------------------------------------------------------------------------- collector
def test_done_records_the_result_and_the_part_state(db):
    add_part(db, ccds=(1, 2))
    ex = FakeExecutor(submits=False)  # the collector never submits: a submission fails the test
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    ids = submit_queued(db)
    ex.in_queue = {ids[1]: "RUNNING", ids[2]: "PENDING"}
    assert col.poll(3.0) == {"done": 0, "failed": 0, "retried": 0, "lost": 0}
    assert (task(db, 1).state, task(db, 2).state) == (TaskState.RUNNING, TaskState.SUBMITTED)
    ex.outcomes[ids[1]] = ok(1)  # result written, but still in the queue: keeps its slot
    col.poll(4.0)
    assert task(db, 1).state == TaskState.RUNNING
    ex.in_queue = {}
    ex.outcomes[ids[2]] = ok(2)
    assert col.poll(5.0)["done"] == 2
    t = task(db, 1)
    assert (t.state, t.t_started, t.t_finished, t.reason) == ("done", 10.0, 20.0, None)
    assert t.result.qa.fwhm_arcsec == 1.1 and t.result.ok and t.result.version == 1
    assert db.part(PART).state == PartState.DONE and db.part(PART).t_done == 5.0
    assert ex.queries == 3  # one scheduler query per poll


@pytest.mark.parametrize("outcome,mem,minutes", [
    (failed(ErrorKind.OUT_OF_MEMORY, "out of memory (MemoryError) in the calibrate step"), 4.0, 10),
    (Outcome(error="slurmstepd: error: Detected 1 oom-kill event(s)"), 4.0, 10),  # submitit's word for it
    (failed(ErrorKind.TIMEOUT, "interrupted by SIGUSR2"), 2.0, 20),
    (failed(ErrorKind.INTERRUPTED, "interrupted by SIGTERM"), 2.0, 20),
    (Outcome(error="DUE TO TIME LIMIT"), 2.0, 20),
    (failed(ErrorKind.CALIBRATION, "no master bias"), 2.0, 10),
])
def test_retry_escalates_by_kind(db, outcome, mem, minutes):
    add_part(db, ccds=(1,))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    assert attempt(db, ex, col, {1: outcome}, 3.0)["retried"] == 1
    t = task(db, 1)
    assert (t.state, t.attempt, t.mem_gb, t.time_minutes) == ("queued", 2, mem, minutes)
    assert t.reason == outcome.message and t.job_id is None and t.submission is None
    assert db.part(PART).state == PartState.QUEUED
    assert attempt(db, ex, col, {1: outcome}, 4.0)["retried"] == 1  # and again: x4 by the third attempt
    assert task(db, 1).mem_gb == mem * mem / 2 and task(db, 1).time_minutes == minutes * minutes // 10


def test_integrity_is_not_retried(db):
    add_part(db, ccds=(1, 2))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    handler = install_event_handler(db, "dwfhpc.ingest")
    try:
        error = "member 'x.fits.fz': the copy in scratch does not match the manifest (10 bytes)"
        counts = attempt(db, ex, col, {1: failed(ErrorKind.INTEGRITY, error), 2: ok(2)}, 3.0)
    finally:
        remove_event_handler(handler)
    assert counts == {"done": 1, "failed": 1, "retried": 0, "lost": 0}
    t = task(db, 1)
    assert (t.state, t.attempt, t.reason) == ("failed", 1, error)
    assert t.result.error_kind == ErrorKind.INTEGRITY and t.t_started == 10.0
    assert db.part(PART).state == PartState.FAILED  # every task final, not all done
    assert db.part(PART).reason == f"CCD 1 failed: {error}"  # the part says why, naming the CCD
    events = db.events(level="error")
    assert [e["part"] for e in events] == [PART] and "failed after 1 attempts" in events[0]["message"]


def test_max_attempts_then_failed_with_the_last_reason(db):
    add_part(db, ccds=(1,))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    for n in range(1, 4):
        counts = attempt(db, ex, col, {1: failed(ErrorKind.CALIBRATION, f"pipeline failed {n}")}, 2.0 + n)
    assert counts["failed"] == 1
    t = task(db, 1)
    assert (t.state, t.attempt, t.reason) == ("failed", 3, "pipeline failed 3")
    # a reprocess starts a new budget: three more attempts from attempt 4
    db.requeue(PART, 1, attempt=4, reason="reprocess requested", new_budget=True)
    assert task(db, 1).attempts_used == 1
    assert attempt(db, ex, col, {1: failed(ErrorKind.OTHER)}, 10.0)["retried"] == 1


def test_vanished_tasks_are_missing_then_lost_and_retried_by_the_scheduler_reason(db):
    add_part(db, ccds=(1, 2))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=2, lost_after=30)
    ids = submit_queued(db)
    ex.gone = {ids[1]: "oom"}
    col.poll(100.0)
    assert task(db, 1).missing_since == 100.0 and task(db, 1).state == TaskState.SUBMITTED
    ex.in_queue = {ids[2]: "RUNNING"}  # back in sight: no longer missing
    col.poll(110.0)
    assert task(db, 2).missing_since is None and task(db, 2).state == TaskState.RUNNING
    assert col.poll(131.0)["retried"] == 1
    t = task(db, 1)
    assert (t.state, t.attempt, t.mem_gb) == ("queued", 2, 4.0)
    assert t.reason == "lost: left the queue without a result (oom)"
    ids = submit_queued(db, 140.0)  # second (last) attempt vanishes too, for no known reason
    col.poll(150.0)
    assert col.poll(181.0)["lost"] == 1
    t = task(db, 1)
    assert (t.state, t.attempt, t.reason) == ("lost", 2, "lost: left the queue without a result (no reason known)")
    assert t.state in TASK_FINAL


def test_wcs_failure_is_retried_with_the_neighbours_shift(db):
    add_part(db, ccds=(1, 2, 3, 4))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=2, lost_after=60)
    good = {1: ok(1, wcs={"status": "ok", "dx": 0.2, "dy": -0.4}), 2: ok(2, wcs={"status": "ok", "dx": 0.4, "dy": -0.2}),
            3: ok(3, wcs={"status": "ok", "dx": 9.0, "dy": 9.0})}
    ids = submit_queued(db)
    ex.in_queue = {ids[4]: "RUNNING"}
    ex.outcomes.update({ids[ccd]: outcome for ccd, outcome in good.items()})
    assert col.poll(3.0)["done"] == 3
    bad = ok(4, wcs={"status": "failed", "reason": "12 matches"})
    ex.in_queue, ex.outcomes[ids[4]] = {}, bad
    assert col.poll(4.0)["retried"] == 1
    t = task(db, 4)
    assert (t.state, t.attempt, t.prior_shift) == ("queued", 2, (0.4, -0.2))
    assert t.reason.startswith("WCS check failed (12 matches); retrying with the neighbours' shift +0.40\"")
    assert attempt(db, ex, col, {4: bad}, 5.0)["done"] == 1  # out of attempts: done, its WCS flagged
    assert task(db, 4).result.wcs.status == WcsStatus.FAILED


def test_unreadable_result_is_a_retried_failure(db, tmp_path):
    add_part(db, ccds=(1,))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=2, lost_after=60)
    outcome = Outcome(result={"status": "ok", "version": 99})
    assert outcome.result is None and "schema version 99 is unknown" in outcome.error
    assert outcome.error_kind == ErrorKind.OTHER
    assert attempt(db, ex, col, {1: outcome}, 3.0)["retried"] == 1
    assert "unreadable result" in task(db, 1).reason


# --------------------------------------------------------------------------- the node's result
def test_task_result_round_trip_and_validation(tmp_path):
    r = TaskResult(status=TaskStatus.ERROR, error="boom", error_kind=ErrorKind.OUT_OF_MEMORY, ccd=3,
                   timings={"total": 1.5}, warnings=["w"], started=1.0, finished=2.0)
    assert TaskResult.from_json(r.to_json()) == r
    d = json.loads(r.to_json())
    assert d["status"] == "failed" and d["error_kind"] == "out_of_memory" and d["version"] == 1
    with pytest.raises(ResultError, match="schema version 2 is unknown"):
        TaskResult.from_dict({**d, "version": 2})
    with pytest.raises(ResultError, match="'ccd' must be an integer or null"):
        TaskResult.from_dict({**d, "ccd": "3"})
    with pytest.raises(ResultError, match="unknown key"):
        TaskResult.from_dict({**d, "colour": "red"})
    with pytest.raises(ResultError, match="no 'status'"):
        TaskResult.from_dict({"version": 1})
    with pytest.raises(ResultError, match="not JSON"):
        TaskResult.from_json("{")
    # version 0 (no version key): written before the kind was said; the kind comes from the message once
    legacy = TaskResult.from_dict({"status": "failed", "error": "member 'a': sha256 does not match the manifest"})
    assert legacy.error_kind == ErrorKind.INTEGRITY and legacy.version == 1
    # the result file: missing -> None, half written -> None, invalid -> a failed result naming the file
    spec = tmp_path / "s.json"
    assert read_result_file(spec, 0) is None
    result_path(spec, 0).write_text('{"status": "o')
    assert read_result_file(spec, 0) is None
    result_path(spec, 0).write_text('{"status": "ok", "version": 5}')
    bad = read_result_file(spec, 0)
    assert not bad.ok and bad.error_kind == ErrorKind.OTHER and str(result_path(spec, 0)) in bad.error
    result_path(spec, 0).write_text(r.to_json())
    assert read_result_file(spec, 0) == r


def test_typed_qa_wcs_worker_and_masters_keep_the_json_and_come_back_typed_from_the_state_db(db):
    """qa / wcs / worker / masters are dataclasses in Python and the same flat JSON objects on disk."""
    stored = {"status": "ok", "version": 1, "ccd": 1, "started": 10.0, "finished": 20.0, "timings": {"total": 3.0},
              "qa": {"fwhm_arcsec": 1.2, "n_sources": 40, "sky": 100.5, "ellipticity": None, "field": "COSMOS",
                     "backend": "embedded"},
              "wcs": {"status": "ok", "n_match": 12, "dx": 0.3, "dy": -0.1, "rms": 0.05, "reason": ""},
              "worker": {"name": "w1", "job_id": "7_0", "claimed": 9.0, "preload_seconds": 0.2, "task_number": 3},
              "masters": {"bias": "/m/b.fits", "flat": None, "bias_night": "2024-01-01", "flat_night": None,
                          "fallback": True}}
    r = TaskResult.from_dict(stored)
    assert isinstance(r.qa, QaSummary) and r.qa.n_sources == 40 and r.qa.extra == {"field": "COSMOS",
                                                                                    "backend": "embedded"}
    assert r.wcs.status == WcsStatus.OK and r.wcs.shift == (0.3, -0.1)
    assert isinstance(r.worker, WorkerRun) and r.worker.job_id == "7_0" and r.masters.fallback is True
    back = json.loads(r.to_json())
    assert {k: back[k] for k in stored} == stored  # the same JSON, key for key (a null one too)
    assert "fwhm_arcsec" not in TaskResult(qa={"sky": 1.0}).to_dict()["qa"]  # one not given is not made up
    assert TaskResult(wcs={"status": "failed", "reason": "3 matches"}).wcs.shift is None
    with pytest.raises(ResultError, match="qa.n_sources must be an integer or null"):
        TaskResult.from_dict({**stored, "qa": {"n_sources": "many"}})
    for odd in ("maybe", ["ok"], {"ok": 1}):  # never a TypeError: a bad result is a ResultError, read as a failure
        with pytest.raises(ResultError, match="wcs.status must be one of"):
            TaskResult.from_dict({**stored, "wcs": {"status": odd}})
    with pytest.raises(ResultError, match="'status' must be one of"):
        TaskResult.from_dict({**stored, "status": ["ok"]})
    # the state DB keeps the JSON and returns the dataclass
    add_part(db, ccds=(1, 2))
    db.finish(PART, 1, r, now=21.0)
    row = task(db, 1)
    assert isinstance(row.result, TaskResult) and row.result == r
    assert json.loads(db.rows("SELECT result FROM tasks WHERE ccd=1")[0]["result"])["qa"] == stored["qa"]
    # a stored result that no longer validates is read as a failure that says so (the report still shows it)
    db.execute("UPDATE tasks SET result=? WHERE ccd=2", ('{"status": "ok", "version": 7}',))
    odd = task(db, 2).result
    assert not odd.ok and "stored result unreadable" in odd.error and "version 7" in odd.error


# --------------------------------------------------------------------------- state DB
def test_state_db_updates_only_known_columns_and_migrates_old_dbs(tmp_path, db):
    add_part(db, ccds=(1,))
    with pytest.raises(ValueError, match="no column"):
        db.update("tasks", {"part": PART, "ccd": 1}, {"state": "done", "bogus": 1})
    with pytest.raises(ValueError, match="no column"):
        db._set_task(PART, 1, nonsense=2)
    assert db.schema_version == len(MIGRATIONS) == 5
    old = tmp_path / "old.sqlite"  # a state DB from before reprocess budgets (no first_attempt, version 0)
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE tasks (part TEXT NOT NULL, ccd INTEGER NOT NULL, expid TEXT NOT NULL, night TEXT,"
                " kind TEXT, state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 1, mem_gb REAL, time_minutes INTEGER,"
                " prior_shift TEXT, submission INTEGER, idx INTEGER, job_id TEXT, missing_since REAL, reason TEXT,"
                " result TEXT, t_queued REAL, t_submitted REAL, t_started REAL, t_finished REAL,"
                " PRIMARY KEY (part, ccd))")
    con.execute("INSERT INTO tasks(part, ccd, expid, state, attempt) VALUES ('p', 1, 'e', 'failed', 3)")
    con.commit()
    con.close()
    with StateDB(old) as migrated:
        assert migrated.schema_version == 5
        (t,) = migrated.tasks()
        assert (t.state, t.first_attempt, t.attempts_used, t.waiting) == (TaskState.FAILED, 1, 3, None)
        assert migrated.parts() == []  # tables added since were created
        assert migrated.resubmission_stops() == []  # the runaway guard's table too
        assert migrated.skipped() == []  # and the skipped CCDs' (bad CCDs, duplicate deliveries)


def test_a_task_held_by_the_scheduler_says_why_once_and_forgets_it_when_it_runs(db):
    from dwfhpc.states import QueueEntry, SchedulerState

    add_part(db, ccds=(1, 2))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    handler = install_event_handler(db, "dwfhpc.ingest")
    try:
        ids = submit_queued(db)
        ex.in_queue = {ids[1]: QueueEntry(SchedulerState.PENDING, "BeginTime"), ids[2]: QueueEntry(SchedulerState.PENDING, "Priority")}
        col.poll(3.0)
        col.poll(4.0)  # the same hold: not logged again
        held, ordinary = task(db, 1), task(db, 2)
        assert held.state == TaskState.SUBMITTED and held.waiting.startswith("BeginTime: held back until a later")
        assert ordinary.waiting is None  # waiting for a free slot is not worth a word
        ex.in_queue[ids[1]] = QueueEntry(SchedulerState.PENDING, "launch failed requeued held")
        col.poll(5.0)
        assert task(db, 1).waiting.startswith("launch failed requeued held: its launch failed on the node")
        from dwfhpc.ingest.status import summary

        assert [(w["ccd"], w["job_id"]) for w in summary(db)["waiting"]] == [(1, ids[1])]  # what status shows
        ex.in_queue[ids[1]] = QueueEntry(SchedulerState.RUNNING, "None")
        col.poll(6.0)
        assert (task(db, 1).state, task(db, 1).waiting) == (TaskState.RUNNING, None)
    finally:
        remove_event_handler(handler)
    said = [e["message"] for e in reversed(db.events()) if "pending in the scheduler" in e["message"]]
    assert len(said) == 2 and "as BeginTime" in said[0] and f"(job {ids[1]})" in said[0]
    assert "as launch failed requeued held" in said[1]


def test_part_state_from_tasks():
    assert part_state_from_tasks([]) == PartState.QUEUED
    assert part_state_from_tasks(["done", "done"]) == PartState.DONE
    assert part_state_from_tasks(["done", "lost"]) == PartState.FAILED
    assert part_state_from_tasks(["queued", "running"]) == PartState.ACTIVE
    assert TaskState.DONE == "done" and json.dumps([TaskState.LOST]) == '["lost"]'


def test_event_handler_records_part_lines_and_warnings_once(db):
    log = logging.getLogger("dwfhpc.ingest.test")
    handler = install_event_handler(db, "dwfhpc.ingest")
    try:
        log.info("%s: verified, queued", PART, extra={"part": PART})
        log.info("not about a part: not an event")
        log.warning("night 2024-01-01: masters not built")
    finally:
        remove_event_handler(handler)
    log.warning("after removal: not an event")
    events = [(e["level"], e["part"], e["message"]) for e in reversed(db.events())]
    assert events == [("info", PART, f"{PART}: verified, queued"),
                      ("warning", None, "night 2024-01-01: masters not built")]


def test_a_retry_waits_its_delay_doubling_and_the_submitter_holds_it(db, tmp_path):
    """A full scratch clears in a minute: the retries wait 10 s, then 20 s, instead of using the attempts up."""
    from dwfhpc.config import load_site
    from dwfhpc.ingest.submitter import Submitter
    from dwfhpc.ingest.throttle import Throttle

    add_part(db, ccds=(1,))
    ex = FakeExecutor(submits=False)
    col = Collector(db, ex, max_attempts=3, lost_after=60, retry_delay=10.0)
    scratch_full = failed(ErrorKind.OTHER, "scratch has 30.0 MB free, this task needs 90.9 MB")
    before = time.time()
    assert attempt(db, ex, col, {1: scratch_full}, 3.0)["retried"] == 1
    assert 9.0 <= task(db, 1).t_queued - before <= 11.0
    site = load_site("local", workdir=tmp_path)
    submitter = Submitter(site, db, ex, Throttle())
    assert submitter.submit_ready(now=time.time()) == 0  # held (FakeExecutor(submits=False) raises if it tried)
    assert task(db, 1).state == TaskState.QUEUED
    assert attempt(db, ex, col, {1: scratch_full}, 4.0)["retried"] == 1  # second retry: twice as long
    assert 19.0 <= task(db, 1).t_queued - time.time() <= 21.0
