"""A node whose resources keep failing is excluded; such failures do not use up a CCD's attempts.

Milliseconds, no scheduler: the node's classification (``ErrorKind.RESOURCE``), the collector's counting
(resource retries beside ``max_attempts``, their own cap), the state DB's ``node_failures`` and its
exclusion window (threshold, expiry), the submitter handing exclusions to the executor (the fake executor
of ``tests/fakes.py``), Slurm's ``--exclude`` through submitit, warm workers on an excluded node drained,
and what ``dwfhpc status`` and the night report say. The real thing on a 3-node Slurm is
``tests/test_nodes_exclude.py``.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from dwfhpc.config import IngestSettings, load_site
from dwfhpc.db import install_event_handler, remove_event_handler
from dwfhpc.errors import DwfError
from dwfhpc.ingest.collector import Collector
from dwfhpc.ingest.executors import Outcome
from dwfhpc.ingest.status import summary
from dwfhpc.report.status import excluded_nodes
from dwfhpc.ingest.submitter import Submitter
from dwfhpc.ingest.throttle import Throttle
from dwfhpc.node.result import ErrorKind, TaskResult, TaskStatus, node_name
from dwfhpc.node.scratch import ScratchError, scratch_trouble
from dwfhpc.statedb import MIGRATIONS, StateDB
from dwfhpc.states import TaskState, WorkerState
from fakes import FakeExecutor
from test_collector import PART, add_part, submit_queued, task

T0 = 1_800_000_000.0  # a Unix time for the window arithmetic
WINDOW = 30 * 60.0


@pytest.fixture
def db(tmp_path):
    with StateDB(tmp_path / "state.sqlite") as db:
        yield db


@pytest.fixture
def events(db):
    handler = install_event_handler(db, "dwfhpc.ingest")
    try:
        yield lambda: [(e["level"], e["message"]) for e in reversed(db.events(200))]
    finally:
        remove_event_handler(handler)


def resource(host: str | None, error: str = "/scratch/local: scratch has 4.1 MB free, this task needs 90.0 MB") -> Outcome:
    return Outcome(result=TaskResult(status=TaskStatus.ERROR, error=error, error_kind=ErrorKind.RESOURCE, host=host,
                                     started=10.0, finished=11.0))


def ok(ccd: int, host: str) -> Outcome:
    return Outcome(result=TaskResult(status=TaskStatus.OK, ccd=ccd, host=host, started=10.0, finished=20.0))


def run_poll(db, ex, col, outcomes: dict, now: float) -> dict:
    """Submit what is queued, end those CCDs as ``outcomes`` says, poll once."""
    ids = submit_queued(db, now - 1)
    for ccd, outcome in outcomes.items():
        ex.outcomes[ids[ccd]] = outcome
    return col.poll(now)


def site_for(tmp_path, **ingest):
    return load_site("local", workdir=tmp_path, overrides={"ingest": {"workers": 0, **ingest}})


def submitter_for(tmp_path, db, ex, **ingest) -> Submitter:
    sub = Submitter(site_for(tmp_path, **ingest), db, ex, Throttle())
    sub.make_spec = lambda part, tasks: tmp_path / f"{part.stem}.a{tasks[0].attempt}.json"  # no manifest needed here
    return sub


# --------------------------------------------------------------------------- the node's word
def test_scratch_trouble_is_the_nodes_scratch_not_the_data_nor_the_shared_fs(tmp_path):
    scratch = tmp_path / "scratch" / "dwfhpc-task"
    scratch.mkdir(parents=True)
    shared = tmp_path / "shared" / "products"
    assert scratch_trouble(ScratchError("scratch has 1.0 MB free", scratch.parent), None)
    full = OSError(errno.ENOSPC, "No space left on device", str(scratch / "member" / "x.fz"))
    assert scratch_trouble(full, scratch)
    assert scratch_trouble(OSError(errno.EIO, "Input/output error", str(scratch / "raw.fits")), scratch)
    assert scratch_trouble(OSError(errno.EDQUOT, "Disk quota exceeded", str(scratch)), scratch)
    assert not scratch_trouble(OSError(errno.ENOSPC, "No space left on device", str(shared / "x.fits")), scratch)
    assert not scratch_trouble(OSError(errno.ENOENT, "No such file", str(scratch / "x")), scratch)  # not a resource
    # a copy names source then destination: a full destination on the shared FS is not the node's
    copy = OSError(errno.ENOSPC, "No space left on device", str(scratch / "out.fits"), None, str(shared / "out.fits"))
    assert not scratch_trouble(copy, scratch)
    # a write names no file: while staging (which writes only to scratch) ENOSPC is the node's, EIO may be the part's
    assert scratch_trouble(OSError(errno.ENOSPC, "No space left on device"), scratch, staging=True)
    assert not scratch_trouble(OSError(errno.ENOSPC, "No space left on device"), scratch)
    assert not scratch_trouble(OSError(errno.EIO, "Input/output error"), scratch, staging=True)

    # the calibrator's words for a full disk: DwfError(path=<scratch>/out) raised from None over the ENOSPC
    def calibrator_full():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise DwfError(f"cannot write products ({exc.strerror})", scratch / "out") from None

    with pytest.raises(DwfError) as caught:
        calibrator_full()
    assert scratch_trouble(caught.value, scratch)
    assert not scratch_trouble(DwfError("no master bias for night 2024-01-01 CCD 1", scratch), scratch)


@pytest.fixture(scope="module")
def one_ccd_part(tmp_path_factory):
    from dwfhpc.parts import pack_exposure
    from dwfhpc.simulate import simulate_decam_exposure

    root = tmp_path_factory.mktemp("part")
    raw = simulate_decam_exposure(root / "raw", expnum=7, obstype="object", ccds=[25], seed=7, jobs=1)
    return root, pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1)[0]


def _spec(one_ccd_part, tmp_path, **node):
    from dwfhpc.node import TaskSpec

    root, part = one_ccd_part
    (tmp_path / "scratch").mkdir(exist_ok=True)
    site = load_site("local", workdir=tmp_path, overrides={"node": {
        "scratch_vars": [], "scratch_fallback": str(tmp_path / "scratch"), "require_masters": False, **node}})
    return TaskSpec.from_site(site, part.manifest, part.tar)


def test_a_full_scratch_and_a_full_disk_while_calibrating_are_resource_failures(one_ccd_part, tmp_path, monkeypatch):
    from dwfhpc.node import run as noderun

    result = noderun.run_spec_result(_spec(one_ccd_part, tmp_path, min_free_gb=1e6), 0)
    assert (result.status, result.error_kind) == (TaskStatus.ERROR, ErrorKind.RESOURCE)
    assert "scratch has" in result.error and "short by" in result.error and result.host
    assert TaskResult.from_json(result.to_json()).error_kind == ErrorKind.RESOURCE  # "resource" within version 1

    def disk_full(spec, ccd, raw, scratch, result, pixels=None):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise DwfError(f"cannot write products ({exc.strerror})", scratch / "out") from None

    monkeypatch.setattr(noderun, "_calibrate", disk_full)
    result = noderun.run_spec_result(_spec(one_ccd_part, tmp_path, min_free_gb=0), 0)
    assert result.error_kind == ErrorKind.RESOURCE and "No space left" in result.error

    def no_master(spec, ccd, raw, scratch, result, pixels=None):
        raise DwfError("no master bias for night 2026-11-24 CCD 25", spec.masters)

    monkeypatch.setattr(noderun, "_calibrate", no_master)  # the CCD's problem, not the node's: unchanged
    assert noderun.run_spec_result(_spec(one_ccd_part, tmp_path, min_free_gb=0), 0).error_kind == ErrorKind.CALIBRATION

    def staging_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(noderun, "stage_ccd", staging_full)
    assert noderun.run_spec_result(_spec(one_ccd_part, tmp_path, min_free_gb=0), 0).error_kind == ErrorKind.RESOURCE


def test_node_name_is_the_short_host_name():
    assert [node_name(h) for h in ("dwfn2", "dwfn2.cluster.local", "10.78.0.12", None, "")] == \
        ["dwfn2", "dwfn2", "10.78.0.12", None, None]


# --------------------------------------------------------------------------- the collector's counting
def test_a_resource_failure_is_retried_at_once_without_using_an_attempt_and_recorded_against_the_node(db, events):
    add_part(db, ccds=(1, 2))
    ex = FakeExecutor()
    col = Collector(db, ex, max_attempts=2, lost_after=60, retry_delay=30.0)
    before = time.time()
    counts = run_poll(db, ex, col, {1: resource("dwfn2.cluster"), 2: ok(2, "dwfn1")}, T0)
    assert (counts["retried"], counts["done"]) == (1, 1)
    t = task(db, 1)
    assert (t.state, t.attempt, t.resource_retries, t.attempts_used) == (TaskState.QUEUED, 2, 1, 1)
    assert t.t_queued <= before + 5  # at once: not the retry delay (another node may take it now)
    assert t.reason.startswith("on node dwfn2: /scratch/local: scratch has")
    assert db.node_failures() == [{"node": "dwfn2", "t": T0, "part": PART, "ccd": 1, "reason": resource(None).message}]
    assert any("not counted as an attempt, 1 of 5" in m for _, m in events())
    # the next attempt succeeds elsewhere: done, with its whole budget of attempts unused but one
    run_poll(db, ex, col, {1: ok(1, "dwfn3")}, T0 + 10)
    t = task(db, 1)
    assert (t.state, t.attempt, t.attempts_used, t.resource_retries) == (TaskState.DONE, 2, 1, 1)
    assert db.part(PART).state == "done"


def test_resource_retries_have_their_own_cap_then_count_as_attempts(db):
    """max_resource_retries 2, max_attempts 2: at most 2 + 2 runs, then failed with the reason."""
    add_part(db, ccds=(1,))
    ex = FakeExecutor()
    col = Collector(db, ex, max_attempts=2, lost_after=60, max_resource_retries=2)
    seen = []
    for k in range(10):
        if task(db, 1).state != TaskState.QUEUED:
            break
        run_poll(db, ex, col, {1: resource("dwfn2")}, T0 + k)
        t = task(db, 1)
        seen.append((t.attempt, t.resource_retries, t.attempts_used))
    assert seen == [(2, 1, 1), (3, 2, 1), (4, 2, 2), (4, 2, 2)]
    t = task(db, 1)
    assert t.state == TaskState.FAILED and "retries after node resource failures used up" in t.reason
    assert len(db.node_failures(node="dwfn2")) == 4


def test_a_reprocess_starts_a_new_budget_of_resource_retries_too(db):
    add_part(db, ccds=(1,))
    ex = FakeExecutor()
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    run_poll(db, ex, col, {1: resource("dwfn2")}, T0)
    run_poll(db, ex, col, {1: ok(1, "dwfn1")}, T0 + 1)
    t = task(db, 1)
    db.requeue(PART, 1, attempt=t.attempt + 1, reason="reprocess", new_budget=True)
    t = task(db, 1)
    assert (t.attempt, t.first_attempt, t.resource_retries, t.attempts_used) == (3, 3, 0, 1)


def test_a_failure_without_a_host_is_retried_but_counts_against_no_node(db):
    add_part(db, ccds=(1,))
    ex = FakeExecutor()
    col = Collector(db, ex, max_attempts=3, lost_after=60)
    run_poll(db, ex, col, {1: resource(None)}, T0)
    t = task(db, 1)
    assert (t.resource_retries, t.attempts_used) == (1, 1) and "unknown node" in t.reason
    assert db.node_failures() == []


# --------------------------------------------------------------------------- the window
def test_a_node_is_excluded_after_n_failures_within_the_window_and_returns_after_it(db):
    for k, t in enumerate((T0, T0 + 60, T0 + 120)):
        db.record_node_failure("dwfn2", PART, k, f"full {k}", t)
    db.record_node_failure("dwfn1", PART, 9, "full", T0 + 100)  # below the threshold
    assert db.node_exclusions(T0 + 100, 3, WINDOW) == []  # two so far
    (e,) = db.node_exclusions(T0 + 120, 3, WINDOW)
    assert (e.node, e.failures, e.first, e.last, e.until, e.reason, e.ccd) == \
        ("dwfn2", 3, T0, T0 + 120, T0 + WINDOW, "full 2", 2)
    assert "3 resource failures within 30 min (threshold 3)" in e.describe(3, 30) and "full 2" in e.describe(3, 30)
    assert [x.node for x in db.node_exclusions(T0 + WINDOW - 1, 3, WINDOW)] == ["dwfn2"]
    assert db.node_exclusions(T0 + WINDOW, 3, WINDOW) == []  # the first failure left the window: back in use
    assert db.node_exclusions(T0 + 120, 0, WINDOW) == []  # threshold 0: never
    # failures spread wider than the window never add up
    for k in range(3):
        db.record_node_failure("dwfn3", PART, k, "full", T0 + k * 1000)
    assert "dwfn3" not in {x.node for x in db.node_exclusions(T0 + 2000, 3, WINDOW)}
    # a fourth failure while excluded (a task already running there) keeps it out longer
    db.record_node_failure("dwfn2", PART, 5, "full again", T0 + 600)
    (e,) = db.node_exclusions(T0 + 600, 3, WINDOW)
    assert (e.failures, e.until) == (4, T0 + 60 + WINDOW)


def test_the_submitter_hands_exclusions_to_the_executor_logs_them_once_and_their_expiry(db, events, tmp_path):
    ex = FakeExecutor()
    sub = submitter_for(tmp_path, db, ex)
    for k in range(3):
        db.record_node_failure("dwfn2", PART, k, "/scratch/local: scratch has 4.1 MB free", T0 + k)
    assert sub.update_exclusions(T0 + 1) == {} and ex.exclusions == []  # two: not yet
    assert set(sub.update_exclusions(T0 + 2)) == {"dwfn2"}
    sub.update_exclusions(T0 + 3)  # unchanged: the executor is not told again
    assert len(ex.exclusions) == 1 and list(ex.exclusions[0]) == ["dwfn2"]
    assert "scratch has 4.1 MB free" in ex.exclusions[0]["dwfn2"]
    assert sub.update_exclusions(T0 + WINDOW + 1) == {}
    assert ex.exclusions[-1] == {} and dict(ex.excluded_nodes) == {}
    log = events()
    excluded = [m for lvl, m in log if m.startswith("node dwfn2 excluded")]
    assert len(excluded) == 1 and "3 resource failures within 30 min" in excluded[0]
    assert "new submissions go elsewhere" in excluded[0]
    assert [m for _, m in log if m.startswith("node dwfn2 back in use")]


def test_an_executor_that_cannot_exclude_says_so(db, events, tmp_path):
    ex = FakeExecutor(can_exclude_nodes=False)
    sub = submitter_for(tmp_path, db, ex, node_failures_exclude=1)
    db.record_node_failure("pbsnode4", PART, 1, "full", T0)
    sub.update_exclusions(T0)
    assert any("not applied: the fake executor cannot exclude nodes (Slurm only)" in m for _, m in events())


def test_settings_change_the_threshold_and_window(db, tmp_path):
    assert (IngestSettings().max_resource_retries, IngestSettings().node_failures_exclude,
            IngestSettings().node_failure_window_minutes) == (5, 3, 30.0)
    ex = FakeExecutor()
    sub = submitter_for(tmp_path, db, ex, node_failures_exclude=2, node_failure_window_minutes=1)
    db.record_node_failure("dwfn1", PART, 1, "full", T0)
    db.record_node_failure("dwfn1", PART, 2, "full", T0 + 30)
    assert set(sub.update_exclusions(T0 + 30)) == {"dwfn1"}
    assert sub.update_exclusions(T0 + 61) == {}  # a one-minute window


def test_failures_on_one_node_exclude_it_and_the_retries_are_submitted_elsewhere(db, tmp_path):
    """Three CCDs fail on dwfn2's full scratch in one poll: dwfn2 is excluded before their retries are
    submitted, the retries carry the exclusion, every CCD ends done with one attempt counted."""
    add_part(db, ccds=(1, 2, 3, 4))
    ex = FakeExecutor()
    col = Collector(db, ex, max_attempts=2, lost_after=60)
    sub = submitter_for(tmp_path, db, ex)
    now = time.time()
    run_poll(db, ex, col, {1: resource("dwfn2"), 2: resource("dwfn2"), 3: resource("dwfn2"), 4: ok(4, "dwfn1")}, now)
    assert sub.submit_ready(now=now + 1) == 3
    request, excluded = ex.submitted[-1]
    assert request.ntasks == 3 and excluded == ("dwfn2",)
    ids = {t.ccd: t.job_id for t in db.tasks(TaskState.SUBMITTED)}
    for ccd, tid in ids.items():
        ex.outcomes[tid] = ok(ccd, "dwfn3")
    col.poll(now + 2)
    tasks = db.tasks()
    assert {t.state for t in tasks} == {TaskState.DONE}
    assert all(t.attempts_used == 1 for t in tasks)
    assert sorted((t.ccd, t.resource_retries) for t in tasks) == [(1, 1), (2, 1), (3, 1), (4, 0)]


# --------------------------------------------------------------------------- Slurm: --exclude
def test_slurm_exclusion_goes_into_submitits_exclude_beside_the_sites(tmp_path):
    import submitit

    from dwfhpc.ingest.executors.slurm import with_exclude

    params = {"job_name": "dwf-x", "time": 10, "additional_parameters": {"exclude": "bad[01-02]", "tmp": "1M"}}
    out = with_exclude(params, ["dwfn2"])
    assert out["exclude"] == "bad[01-02],dwfn2" and out["additional_parameters"] == {"tmp": "1M"}
    assert with_exclude(params, []) is params
    ex = submitit.SlurmExecutor(folder=tmp_path / "%j")
    ex.update_parameters(**out)  # submitit knows the parameter
    assert ex.parameters["exclude"] == "bad[01-02],dwfn2"


class _StubSubmitit:
    """What SlurmArrayExecutor does with a submitit executor: parameters, then map_array."""

    def __init__(self, calls: list, refuse_exclude: bool):
        self.calls, self.refuse_exclude, self.params = calls, refuse_exclude, {}

    def update_parameters(self, **params):
        self.params.update(params)

    def map_array(self, fn, *args):
        self.calls.append(dict(self.params))
        if self.refuse_exclude and self.params.get("exclude"):
            if self.refuse_exclude == "submitit":  # what the real submitit raises when sbatch says no
                import submitit

                raise submitit.core.utils.FailedJobError("sbatch: error: Requested node configuration is not available")
            raise subprocess.CalledProcessError(1, ["sbatch"], output="Requested node configuration is not available")
        return [type("Job", (), {"job_id": f"77_{i}"})() for i in range(len(args[0]))]


@pytest.mark.parametrize("refuse", [False, "sbatch", "submitit"])
def test_slurm_arrays_and_workers_are_submitted_with_the_exclusion(tmp_path, refuse, caplog):
    """Refused with the exclusion (every node excluded: the fault campaign's one-node Slurm), by sbatch or as
    submitit's FailedJobError (which once escaped and stopped the ingest): sent again without it."""
    from dwfhpc.config import SchedulerSettings
    from dwfhpc.ingest.executors import ArrayRequest
    from dwfhpc.ingest.executors.base import WorkerRequest
    from dwfhpc.ingest.executors.slurm import SlurmArrayExecutor
    from dwfhpc.scheduler import Slurm

    calls: list = []
    ex = object.__new__(SlurmArrayExecutor)  # no controller needed: submitit itself is stubbed
    ex.jobs_dir, ex.slurm, ex._refused_exclusion = tmp_path, Slurm(SchedulerSettings()), None
    ex._executor = lambda: _StubSubmitit(calls, refuse)
    assert ex.can_exclude_nodes
    ex.exclude_nodes({"dwfn2": "3 resource failures"})
    req = ArrayRequest(part=PART, name="dwf-x", spec=tmp_path / "s.json", ntasks=2, mem_gb=1.0, time_minutes=5)
    with caplog.at_level(logging.WARNING, logger="dwfhpc.ingest.executors.slurm"):
        sub = ex.submit(req)
        ex.submit(req)
    assert sub.task_ids == ["77_0", "77_1"]
    if not refuse:
        assert [c.get("exclude") for c in calls] == ["dwfn2", "dwfn2"]
    else:  # refused with it: submitted without, and that set is not tried again (one warning)
        assert [c.get("exclude") for c in calls] == ["dwfn2", None, None]
        assert sum("sbatch refused" in r.message for r in caplog.records) == 1
        assert not ex.can_exclude_nodes  # workers on it are not drained: their successors would land there too
    calls.clear()
    ex.exclude_nodes({"dwfn2": "x", "dwfn3": "y"})  # a new set is tried again
    ex.submit_workers(WorkerRequest(name="dwf-workers", queue_root=tmp_path / "q", n=2, mem_gb=1.0, time_minutes=60,
                                    stop_minutes=3.0, scratch_vars=[], scratch_fallback="/tmp"))
    assert calls[0]["exclude"] == "dwfn2,dwfn3" and calls[0]["array_parallelism"] == 2
    # never requeued after a node failure (the node campaign's requeued worker held its CCD for 6 min)
    assert calls[0]["additional_parameters"]["no_requeue"] is True


def test_excluding_every_node_of_the_partition_is_not_applied(tmp_path, caplog):
    """The fault campaign's one-node Slurm: excluding its only node would leave nothing to run on, so the set is
    taken as refused up front (sinfo), with one warning, and submissions go on without it. A double for
    ``sinfo`` only (the scheduler's ``call``): the real one-node case runs in benchmarks/night.py --faults."""
    from dwfhpc.config import SchedulerSettings
    from dwfhpc.ingest.executors import ArrayRequest
    from dwfhpc.ingest.executors.slurm import SlurmArrayExecutor
    from dwfhpc.scheduler import Slurm

    asked: list = []

    def sinfo(argv, timeout):
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="vm\n", stderr="")

    calls: list = []
    ex = object.__new__(SlurmArrayExecutor)
    ex.jobs_dir, ex.slurm, ex._refused_exclusion = tmp_path, Slurm(SchedulerSettings(), call=sinfo), None
    ex._executor = lambda: _StubSubmitit(calls, False)
    with caplog.at_level(logging.WARNING, logger="dwfhpc.ingest.executors.slurm"):
        ex.exclude_nodes({"vm": "4 resource failures"})
    assert asked and asked[0][:2] == ["sinfo", "-h"]
    assert not ex.can_exclude_nodes
    assert any("every node of the partition" in r.message for r in caplog.records)
    ex.submit(ArrayRequest(part=PART, name="dwf-x", spec=tmp_path / "s.json", ntasks=1, mem_gb=1.0, time_minutes=5))
    assert calls[0].get("exclude") is None
    ex.exclude_nodes({"dwfn2": "3 resource failures"})  # a node among others: applied
    assert ex.can_exclude_nodes


# --------------------------------------------------------------------------- warm workers
def test_a_warm_worker_on_an_excluded_node_drains_and_its_successor_is_submitted_excluding_it(tmp_path):
    from dwfhpc.ingest.executors.workers import WorkerPoolExecutor
    from dwfhpc.workers import WorkQueue
    from dwfhpc.workers.queue import WorkerBeat

    inner = FakeExecutor()
    pool = WorkerPoolExecutor(inner, tmp_path / "q", n=2, mem_gb=1.0, time_minutes=60, replace_minutes=10,
                              stop_minutes=3, scratch_vars=[], scratch_fallback="/tmp")
    pool._start(2)
    work = WorkQueue(tmp_path / "q")
    now = time.time()
    for member, host in zip(pool.pool, ("dwfn2.cluster", "dwfn1"), strict=True):
        work.beat(WorkerBeat(worker=f"w{member.task_id}", job_id=member.task_id, host=host, pid=1,
                             state=WorkerState.IDLE, ticket=None, started=now, beat=now))
    on_bad, on_good = (f"w{m.task_id}" for m in pool.pool)
    pool.exclude_nodes({"dwfn2": "3 resource failures within 30 min"})
    assert inner.excluded_nodes == {"dwfn2": "3 resource failures within 30 min"}  # new workers avoid it
    assert work.drain_requested(on_bad) and not work.drain_requested(on_good)
    (request, excluded), = inner.submitted[1:]  # the successor, submitted at once, with the exclusion
    assert request.n == 1 and excluded == ("dwfn2",)
    assert len(pool.pool) == 3 and sum(not m.replaced for m in pool.pool) == 2
    pool.queue([])  # the next poll asks nobody again and starts nothing more
    assert len(inner.submitted) == 2
    # the drained worker leaves the queue: the pool is the two others
    del inner.in_queue[on_bad[1:]]
    pool.queue([])
    assert len(pool.pool) == 2 and len(inner.submitted) == 2


def test_a_refused_exclusion_drains_no_worker_and_never_empties_the_pool(tmp_path):
    """The successor is submitted before anyone is asked to drain: when the scheduler refuses the exclusion
    (every node excluded) the workers stay. The first worker fault campaign drained both workers of its one
    node here and had none live for 3 s."""
    from dwfhpc.ingest.executors.workers import WorkerPoolExecutor
    from dwfhpc.workers import WorkQueue
    from dwfhpc.workers.queue import WorkerBeat

    class Refusing(FakeExecutor):
        def submit_workers(self, request):  # submitted without the exclusion, as SlurmArrayExecutor falls back
            if self.excluded_nodes:
                self.can_exclude_nodes = False
            return super().submit_workers(request)

    inner = Refusing()
    pool = WorkerPoolExecutor(inner, tmp_path / "q", n=2, mem_gb=1.0, time_minutes=60, replace_minutes=10,
                              stop_minutes=3, scratch_vars=[], scratch_fallback="/tmp")
    pool._start(2)
    work = WorkQueue(tmp_path / "q")
    now = time.time()
    for member in pool.pool:
        work.beat(WorkerBeat(worker=f"w{member.task_id}", job_id=member.task_id, host="vm", pid=1,
                             state=WorkerState.BUSY, ticket=None, started=now, beat=now))
    pool.exclude_nodes({"vm": "4 resource failures"})
    assert not any(work.drain_requested(f"w{m.task_id}") for m in pool.pool)
    assert all(not m.replaced for m in pool.pool[:2])  # still counted: they roll at their walltime as before
    pool.queue([])
    assert not any(work.drain_requested(f"w{m.task_id}") for m in pool.pool)


def test_without_a_scheduler_that_can_exclude_no_worker_is_drained(tmp_path):
    """PBS / local: a successor could start on the same node again, so draining would only churn workers."""
    from dwfhpc.ingest.executors.workers import WorkerPoolExecutor
    from dwfhpc.workers import WorkQueue
    from dwfhpc.workers.queue import WorkerBeat

    inner = FakeExecutor(can_exclude_nodes=False)
    pool = WorkerPoolExecutor(inner, tmp_path / "q", n=1, mem_gb=1.0, time_minutes=60, replace_minutes=10,
                              stop_minutes=3, scratch_vars=[], scratch_fallback="/tmp")
    pool._start(1)
    work = WorkQueue(tmp_path / "q")
    (member,) = pool.pool
    work.beat(WorkerBeat(worker=f"w{member.task_id}", job_id=member.task_id, host="pbsnode4", pid=1,
                         state=WorkerState.BUSY, ticket=None, started=time.time(), beat=time.time()))
    pool.exclude_nodes({"pbsnode4": "3 resource failures"})
    pool.queue([])
    assert not pool.can_exclude_nodes and not work.drain_requested(f"w{member.task_id}")
    assert len(inner.submitted) == 1 and inner.excluded_nodes == {"pbsnode4": "3 resource failures"}


# --------------------------------------------------------------------------- what status and the report say
def test_status_and_the_report_name_the_excluded_node_and_why(db, tmp_path):
    from dwfhpc.report.model import NightData
    from dwfhpc.report.render import _mode_rows

    now = time.time()
    for k in range(3):
        db.record_node_failure("dwfn2", PART, k, "/scratch/local: scratch has 4.1 MB free", now - 10 + k)
    db.add_submission(PART, "slurm", "1", "dwf-x", "s.json", None, [], [], now=now)
    (e,) = summary(db)["excluded_nodes"]
    assert e["node"] == "dwfn2" and e["failures"] == 3 and e["applied"]
    assert "3 resource failures" in e["reason"] and "scratch has 4.1 MB free" in e["reason"]
    site = site_for(tmp_path, node_failures_exclude=4)
    assert excluded_nodes(db, site) == []  # the site's threshold
    rows = dict(_mode_rows(NightData("2024-01-01", "decam", excluded_nodes=[e])))
    assert "scratch has 4.1 MB free" in rows["node excluded (dwfn2)"]
    db.add_submission(PART, "pbs", "2", "dwf-x", "s.json", None, [], [], now=now)
    (e,) = summary(db)["excluded_nodes"]
    assert not e["applied"] and "Slurm only" in e["reason"]


# --------------------------------------------------------------------------- schema
def test_schema_5_adds_resource_retries_and_node_failures_to_an_older_db(tmp_path):
    assert len(MIGRATIONS) == 5
    old = tmp_path / "v4.sqlite"
    with StateDB(old) as fresh:
        add_part(fresh, ccds=(1,))
    con = sqlite3.connect(old)  # what a version-4 DB looks like: no column, no table
    con.execute("DROP TABLE node_failures")
    con.execute("ALTER TABLE tasks DROP COLUMN resource_retries")
    con.execute("PRAGMA user_version=4")
    con.commit()
    con.close()
    with StateDB(old) as migrated:
        assert migrated.schema_version == 5
        (t,) = migrated.tasks()
        assert (t.resource_retries, t.attempts_used) == (0, 1)
        assert migrated.node_failures() == []
        migrated.record_node_failure("dwfn1", PART, 1, "full", T0)
        assert len(migrated.node_failures(node="dwfn1")) == 1


def test_a_plain_sigkill_in_a_task_log_is_not_taken_for_an_oom_kill():
    """srun says "task 0: Killed" for any SIGKILL (the worker campaign's kill -9 was reported as oom, which would
    retry with more memory); Slurm's own OOM kill names itself."""
    from dwfhpc.ingest.executors.base import reason_from_text
    from dwfhpc.node.result import ErrorKind

    assert reason_from_text("srun: error: vm: task 0: Killed\n") == "killed (SIGKILL)"
    assert ErrorKind.from_scheduler("killed (SIGKILL)") is None
    assert reason_from_text("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=5.0\nKilled") == "oom"
