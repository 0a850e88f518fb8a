"""Warm workers without a scheduler: the shared-FS queue and the worker loop on real parts.

Real processes race for real tickets (the atomic claim), and a real worker calibrates real CCDs
from a packed simulated exposure with its masters copied once into its own scratch. The Slurm
side (worker arrays, scancel, replacement) is in tests/test_ingest_workers.py.
"""

import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

from dwfhpc.calibrate import build_night_masters
from dwfhpc.config import load_site
from dwfhpc.layout import product_paths
from dwfhpc.node import TaskSpec, result_path, run_task
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure
from dwfhpc.workers import WorkQueue
from dwfhpc.workers.worker import Worker

CCDS = [25, 32]
NIGHT = "2026-11-24"


def _claim_all(root: str, name: str, out: str) -> None:
    q = WorkQueue(root)
    got = []
    while (t := q.claim(name)) is not None:
        got.append(t.name)
    Path(out).write_text(json.dumps(got))


def test_racing_workers_never_claim_the_same_ticket(tmp_path):
    q = WorkQueue(tmp_path / "q")
    names = {q.put("E.p1of1", ccd, "/spec.json", i, 1).name for i, ccd in enumerate(range(1, 301))}
    assert len(names) == 300 and len(q.waiting()) == 300
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path / "q"), f"w{i}", str(tmp_path / f"w{i}.json")))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    claimed = [n for i in range(4) for n in json.loads((tmp_path / f"w{i}.json").read_text())]
    assert sorted(claimed) == sorted(names)  # every ticket claimed exactly once
    assert q.waiting() == []
    assert sum(len(v) for v in q.claims().values()) == 300


def test_oldest_ticket_first_finish_and_withdraw(tmp_path):
    q = WorkQueue(tmp_path)
    first = q.put("A.p1of1", 1, "/a.json", 0, 1)
    time.sleep(0.01)
    second = q.put("B.p1of1", 2, "/b.json", 0, 1)
    assert q.claim("w1") == first
    assert q.claims() == {"w1": [first]}
    q.finish("w1", first)
    assert q.claims() == {} and (tmp_path / "finished" / first.name).exists()
    assert q.withdraw(second) is True and q.withdraw(second) is False
    assert q.claim("w1") is None


def test_drain_and_masters_generation(tmp_path):
    q = WorkQueue(tmp_path)
    assert not q.drain_requested("w1")
    q.request_drain("w1")
    assert q.drain_requested("w1") and not q.drain_requested("w2")
    q.request_drain()
    assert q.drain_requested("w2")
    q.cancel_drain()
    q.cancel_drain("w1")
    assert not q.drain_requested("w1")
    assert q.masters_generation() == 0 and q.bump_masters() == 1 and q.masters_generation() == 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A local site: calibration frames filed by node tasks, masters built, one science part of two CCDs."""
    root = tmp_path_factory.mktemp("workers")
    (root / "scratch").mkdir()
    site = load_site("local", workdir=root, overrides={"node": {"scratch_vars": ["DWF_TEST_SCRATCH"],
                                                                 "scratch_fallback": str(root / "scratch"),
                                                                 "min_free_gb": 0.01}})
    parts = {}
    for expnum, obstype in ((1, "zero"), (2, "dome flat"), (3, "object"), (4, "object")):
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=CCDS, seed=expnum, jobs=1)
        parts[expnum] = pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1)[0]
    for expnum in (1, 2):
        spec = TaskSpec.from_site(site, parts[expnum].manifest, parts[expnum].tar)
        path = spec.write(site.path(site.ingest.specs) / f"cal-{expnum}.json")
        for i in range(len(CCDS)):
            assert run_task(path, i)["status"] == "ok"
    build_night_masters(site.path(site.calibration.library), site.path(site.calibration.masters), NIGHT,
                        progress=lambda line: None)
    return root, site, parts


def test_worker_runs_tickets_with_masters_copied_once(world, tmp_path):
    root, site, parts = world
    q = WorkQueue(tmp_path / "queue")
    specs = []
    for expnum in (3, 4):
        spec = TaskSpec.from_site(site, parts[expnum].manifest, parts[expnum].tar,
                                  products=str(tmp_path / "products"))
        path = spec.write(tmp_path / f"sci-{expnum}.json")
        specs.append((spec, path))
        for i, ccd in enumerate(spec.ccds):
            q.put(spec.expid, ccd, path, i, 1)
    worker = Worker(tmp_path / "queue", max_idle=0.5, idle_poll=0.05, scratch_vars=["NO_SUCH_VAR"],
                    scratch_fallback=str(tmp_path / "node-scratch"), name="w-test")
    summary = worker.run()
    assert summary.tasks == 4 and summary.reason.startswith("idle")
    for spec, path in specs:
        for i, ccd in enumerate(spec.ccds):
            result = json.loads(result_path(path, i).read_text())
            assert result["status"] == "ok", result["error"]
            assert result["worker"]["name"] == "w-test"
            assert all(p.is_file() for p in product_paths(tmp_path / "products", NIGHT, spec.expid, ccd).values())
    # each CCD's bias and flat copied once, on its first task, and read again by the second exposure's (no
    # bpm/refcat configured here): 2 CCDs x 2 masters
    assert worker.cache.copies == 2 * len(specs[0][0].ccds) == 4
    assert summary.copied_bytes > 0
    # the copies leave with the worker: a scratch that outlives the job (/tmp) keeps no masters behind
    assert not list((tmp_path / "node-scratch").rglob("bias_*.fits"))
    assert not (tmp_path / "node-scratch" / "dwfhpc-w-test-cal").exists()
    assert q.claims() == {} and len(list((tmp_path / "queue" / "finished").iterdir())) == 4
    beat = {b.worker: b for b in q.beats()}["w-test"]
    assert beat.state == "exited" and beat.tasks_done == 4


def test_new_masters_reach_the_worker_and_drain_ends_it(world, tmp_path):
    root, site, parts = world
    q = WorkQueue(tmp_path / "queue")
    spec = TaskSpec.from_site(site, parts[3].manifest, parts[3].tar, products=str(tmp_path / "products"))
    path = spec.write(tmp_path / "sci.json")
    worker = Worker(tmp_path / "queue", idle_poll=0.05, scratch_vars=["NO_SUCH_VAR"],
                    scratch_fallback=str(tmp_path / "node-scratch"), name="w-drain")
    thread = threading.Thread(target=lambda: setattr(worker, "summary", worker.run()))
    thread.start()
    q.put(spec.expid, spec.ccds[0], path, 0, 1)
    _wait(lambda: result_path(path, 0).exists())
    assert worker.cache.copies == 2  # the first CCD's bias and flat
    cache = tmp_path / "node-scratch" / "dwfhpc-w-drain-cal"
    first = f"bias_{spec.ccds[0]:02d}.fits"
    assert len(list(cache.rglob(first))) == 1  # the CCDs read node-local masters while it runs
    q.bump_masters()  # ingest built new masters: the copies are dropped, the next task copies its own
    q.put(spec.expid, spec.ccds[1], path, 1, 1)
    _wait(lambda: result_path(path, 1).exists())
    assert worker.cache.copies == 4 and worker.cache.generation == 1
    assert not list(cache.rglob(first)) and len(list(cache.rglob(f"bias_{spec.ccds[1]:02d}.fits"))) == 1
    q.request_drain()
    thread.join(30)
    assert not thread.is_alive() and worker.summary.reason == "drain requested" and worker.summary.tasks == 2
    assert not cache.exists()  # removed as the worker left


def _wait(cond, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "timed out"
        time.sleep(0.05)


def test_masters_copied_while_being_built_skip_temporaries_and_survive_a_vanishing_file(tmp_path, monkeypatch):
    """Science starts on earlier masters while tonight's are written: a worker's copy must not trip over a
    master's temporary (``.name.XXXX.tmp``, renamed into place or gone a moment later)."""
    import shutil

    from dwfhpc.workers import preload

    src = tmp_path / "masters" / "2026-11-24"
    src.mkdir(parents=True)
    (src / "bias_01.fits").write_bytes(b"b" * 100)
    (src / ".flat_g_02.fits.abcd.tmp").write_bytes(b"half-written")
    real_copytree, calls = shutil.copytree, []

    def copytree_once_vanished(a, b, **kw):  # the first pass finds a file gone under it (renamed over)
        calls.append(kw.get("ignore"))
        out = real_copytree(a, b, **kw)
        if len(calls) == 1:
            raise shutil.Error([(str(src / "flat_g_02.fits"), str(b), "[Errno 2] No such file or directory")])
        return out

    monkeypatch.setattr(shutil, "copytree", copytree_once_vanished)
    copied = preload._copy_tree(src, tmp_path / "local" / "2026-11-24")
    local = tmp_path / "local" / "2026-11-24"
    assert sorted(p.name for p in local.iterdir()) == ["bias_01.fits"] and copied == 100
    assert len(calls) == 2 and all(ignore is not None for ignore in calls)
    assert not (tmp_path / "local" / ".2026-11-24.tmp").exists()
