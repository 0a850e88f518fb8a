"""One CCD's timeline (:mod:`dwfhpc.report.timeline`) from a real state DB and push journal."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dwfhpc.node.result import TaskResult, TaskStatus, WorkerRun
from dwfhpc.push import Journal
from dwfhpc.report.timeline import STAGES, ccd_timelines
from dwfhpc.statedb import StateDB
from dwfhpc.states import TaskState

EXPID, NIGHT = "DECam_00000042", "2024-01-01"
PART = f"{EXPID}.p1of1"
TIMINGS = {"stage": 0.5, "verify": 0.25, "decompress": 0.25, "calibrate": 2.0, "qa": 1.0, "copyback": 0.5}


def _part(db: StateDB, ccds, t_inbox: float, now: float) -> None:
    manifest = SimpleNamespace(expid=EXPID, part=1, parts=1, instrument="decam", night=NIGHT, kind="science",
                               filter="g", field="f", expnum=42, tar_sha256="0" * 64, tar_bytes=1, ccds=list(ccds))
    db.add_part(manifest, stem=PART, tar="p.tar", manifest_path="p.manifest.json", t_inbox=t_inbox, mem_gb=1,
                time_minutes=10, now=now)


def _journal(path) -> Journal:
    """The telescope's side: complete at 100, packed at 103, confirmed at 110."""
    j = Journal(path)
    info = SimpleNamespace(expid=EXPID, instrument="decam", expnum=42, night=NIGHT, obstype="object", kind="science")
    j.add_file_to_exposure(info, "/raw/a.fits.fz", now=99.0)
    j.exposure_complete(EXPID, now=100.0)
    j.part_packed(EXPID, 1, 1, "p.tar", "p.manifest.json", 1, now=103.0)
    j.mark_part_confirmed(EXPID, 1, now=110.0, send_seconds=7.0)
    return j


@pytest.fixture
def db(tmp_path):
    with StateDB(tmp_path / "state.sqlite") as db:
        yield db


def test_an_array_ccd_has_every_stage_from_the_telescope_to_its_products(db, tmp_path):
    _part(db, (1, 2), t_inbox=111.0, now=112.0)
    db.add_submission(PART, "slurm", "7", "dwf-x", "spec.json", None, [1, 2], ["7_0", "7_1"], now=115.0)
    db.finish(PART, 1, TaskResult(status=TaskStatus.OK, ccd=1, started=120.0, finished=126.0, timings=TIMINGS,
                                  host="dwfn1.cluster"), now=127.0)
    with _journal(tmp_path / "journal.sqlite") as journal:
        lines = {t.ccd: t for t in ccd_timelines(db, journal, night=NIGHT)}
    one = lines[1]
    assert (one.state, one.host, one.worker) == (TaskState.DONE, "dwfn1.cluster", None)
    stages = one.stages()
    assert list(stages) == [s for s in STAGES if s not in ("wait_worker", "dispatch", "start")]
    assert stages == {"pack": 3.0, "transfer": 7.0, "inbox": 2.0, "hold": 3.0, "queue": 5.0, "stage": 1.0,
                      "calibrate": 3.0, "copyback": 0.5, "other": 1.5}
    assert one.total == 26.0 and one.cluster_wait == 9.0  # inbox 111 -> started 120
    # the CCD still in the queue: what is known so far, None for the rest
    two = lines[2].stages()
    assert two["hold"] == 3.0 and two["queue"] is None and two["calibrate"] is None and two["other"] is None


def test_without_the_journal_the_clusters_times_stand_alone(db):
    _part(db, (1,), t_inbox=111.0, now=112.0)
    db.add_submission(PART, "slurm", "7", "dwf-x", "spec.json", None, [1], ["7_0"], now=115.0)
    db.finish(PART, 1, TaskResult(status=TaskStatus.OK, ccd=1, started=120.0, finished=126.0, timings=TIMINGS))
    (one,) = ccd_timelines(db)
    assert one.stages()["pack"] is None and one.stages()["inbox"] is None
    assert one.total == 15.0  # from the part's arrival in the inbox


def test_worker_mode_splits_the_queue_into_waiting_for_a_worker_dispatch_and_start(db):
    """One worker, two CCDs submitted together: the second waits for the first to finish."""
    _part(db, (1, 2), t_inbox=111.0, now=112.0)
    db.add_submission(PART, "workers", None, "dwf-x", "spec.json", None, [1, 2], ["t1", "t2"], now=115.0)
    for ccd, claimed, started, finished in ((1, 116.0, 116.5, 122.0), (2, 123.0, 123.5, 130.0)):
        worker = WorkerRun(name="w1", job_id="9_0", claimed=claimed, preload_seconds=0.1, task_number=ccd)
        db.finish(PART, ccd, TaskResult(status=TaskStatus.OK, ccd=ccd, started=started, finished=finished,
                                        timings=TIMINGS, worker=worker))
    lines = {t.ccd: t.stages() for t in ccd_timelines(db)}
    assert "queue" not in lines[1]
    assert (lines[1]["wait_worker"], lines[1]["dispatch"], lines[1]["start"]) == (0.0, 1.0, 0.5)
    # the worker was busy until 122: 7 s waiting for it, then 1 s until its claim
    assert (lines[2]["wait_worker"], lines[2]["dispatch"], lines[2]["start"]) == (7.0, 1.0, 0.5)


def test_a_task_queued_again_does_not_borrow_its_earlier_attempts_times(db):
    _part(db, (1,), t_inbox=111.0, now=112.0)
    db.add_submission(PART, "workers", None, "dwf-x", "spec.json", None, [1], ["t1"], now=115.0)
    first = TaskResult(status=TaskStatus.ERROR, error="node lost its scratch", ccd=1, started=116.0, finished=117.0,
                       timings=TIMINGS, worker=WorkerRun(name="w1", claimed=115.5))
    db.record_attempt(PART, 1, first, now=118.0)
    db.requeue(PART, 1, attempt=2, reason="retry")
    db.add_submission(PART, "workers", None, "dwf-x", "spec.json", None, [1], ["t2"], now=140.0)
    (again,) = ccd_timelines(db)
    assert (again.attempt, again.submitted) == (2, 140.0)
    assert again.claimed is None and again.started is None and again.finished is None and again.worker is None
    assert again.stages()["queue"] is None
