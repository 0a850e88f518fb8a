"""JobFiles: the exact names of the files ingest and its jobs exchange (pinned: nodes, workers and a
restarted ingest find each other's files by these names), and the old helpers give the same paths."""

from __future__ import annotations

import json
from pathlib import Path

from dwfhpc.config import load_site
from dwfhpc.ingest.executors import worker_queue_root
from dwfhpc.workers.status import worker_status
from dwfhpc.ingest.submitter import spec_path
from dwfhpc.layout import JobFiles, WorkerQueueFiles
from dwfhpc.node import result_path
from dwfhpc.node.spec import result_path as spec_result_path
from dwfhpc.workers import WorkQueue
from dwfhpc.workers.queue import ALL, WorkerBeat


def test_spec_and_result_names_are_pinned(tmp_path):
    files = JobFiles(specs=tmp_path / "specs", jobs=tmp_path / "jobs")
    spec = files.spec("DECam_00200666.p2of4", 3, 7)
    assert spec == tmp_path / "specs" / "DECam_00200666.p2of4.a3.c07.json"
    assert files.spec("X.p1of1", 1, 61).name == "X.p1of1.a1.c61.json"
    assert JobFiles.spec_name("X.p1of1", 12, 0) == "X.p1of1.a12.c00.json"
    assert files.result(spec, 0) == tmp_path / "specs" / "DECam_00200666.p2of4.a3.c07.result-0.json"
    assert JobFiles.result(str(spec), 12).name == "DECam_00200666.p2of4.a3.c07.result-12.json"
    assert JobFiles.result("a/b.json", 1) == Path("a/b.result-1.json")


def test_old_wrappers_give_the_same_paths(tmp_path):
    files = JobFiles(specs=tmp_path / "specs", jobs=tmp_path / "jobs")
    for part, attempt, ccd in [("DECam_00200666.p2of4", 1, 1), ("E.p1of1", 2, 62)]:
        assert spec_path(tmp_path / "specs", part, attempt, ccd) == files.spec(part, attempt, ccd)
        assert spec_path(str(tmp_path / "specs"), part, attempt, ccd) == files.spec(part, attempt, ccd)
        spec = files.spec(part, attempt, ccd)
        for i in (0, 5):
            assert result_path(spec, i) == spec_result_path(str(spec), i) == JobFiles.result(spec, i)


def test_for_site_uses_the_site_folders(tmp_path):
    site = load_site("local", workdir=tmp_path)
    files = JobFiles.for_site(site)
    assert files.specs == site.path(site.ingest.specs)
    assert files.jobs == site.path(site.ingest.jobs_dir)
    assert files.worker_queue == site.path(site.ingest.jobs_dir) / "workers"
    assert worker_queue_root(site) == files.worker_queue
    assert files.fullred == site.path(site.ingest.jobs_dir) / "fullred"
    assert files.worker_files == WorkerQueueFiles(files.worker_queue)


def test_worker_queue_names_are_pinned(tmp_path):
    q = WorkerQueueFiles(tmp_path / "q")
    r = tmp_path / "q"
    assert WorkerQueueFiles.SUBDIRS == ("tickets", "claimed", "finished", "workers", "stop")
    assert (q.tickets, q.claimed, q.finished, q.heartbeats, q.stop) == (
        r / "tickets", r / "claimed", r / "finished", r / "workers", r / "stop")
    assert q.ticket("t.json") == r / "tickets" / "t.json"
    assert q.claimed_by("w12") == r / "claimed" / "w12"
    assert q.claim("w12", "t.json") == r / "claimed" / "w12" / "t.json"
    assert q.finished_ticket("t.json") == r / "finished" / "t.json"
    assert q.heartbeat("w12") == r / "workers" / "w12.json"
    assert q.stop_request("w12") == r / "stop" / "w12"
    assert q.stop_request(ALL) == r / "stop" / "ALL"
    assert q.masters_generation == r / "masters.generation"
    assert q.pool == r / "pool.json"


def test_work_queue_writes_the_pinned_names(tmp_path):
    """The files a real WorkQueue leaves on disk are exactly the ones WorkerQueueFiles names."""
    root = tmp_path / "q"
    wq, q = WorkQueue(root), WorkerQueueFiles(root)
    assert sorted(p.name for p in root.iterdir()) == sorted(WorkerQueueFiles.SUBDIRS)
    t = wq.put("E.p1of1", 3, tmp_path / "s.json", 0, 1)
    assert t.name.endswith(".E.p1of1.003.a1.json") and q.ticket(t.name).is_file()
    assert wq.claim("w7") == t and q.claim("w7", t.name).is_file() and not q.ticket(t.name).exists()
    wq.finish("w7", t)
    assert q.finished_ticket(t.name).is_file()
    wq.request_drain("w7")
    wq.request_drain()
    assert q.stop_request("w7").is_file() and (root / "stop" / "ALL").is_file() and wq.drain_requested("x")
    assert wq.bump_masters() == 1 and q.masters_generation.read_text() == "1\n"
    wq.beat(WorkerBeat(worker="w7", job_id="7", host="h", pid=1, state="idle", ticket=None, started=0.0, beat=1.0))
    assert json.loads(q.heartbeat("w7").read_text())["worker"] == "w7"
    assert worker_status(root, now=2.0)["alive"] == 1

