"""Worker mode (``dwfhpc ingest --workers N``) on real parts, with submitit's LocalExecutor and on
the real private Slurm: workers fed parts, no CCD run twice, a worker killed mid-task replaced and
its CCD retried by another, rolling replacement before walltime, ``--drain``, new masters reaching
the workers, and the runaway-resubmission guard.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dwfhpc.cli import main
from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.ingest.executors import worker_queue_root
from dwfhpc.ingest.executors.workers import WorkerPoolExecutor
from dwfhpc.workers import WorkQueue
from test_ingest import NIGHT, deliver, parts_cache, products, site_for  # noqa: F401  (fixture)


def _assert_each_ccd_once(site, db) -> None:
    """Every CCD done exactly once: one ok result per task, products once, one worker result each."""
    tasks = db.tasks()
    assert tasks and all(t.state == "done" for t in tasks), [(t.part, t.ccd, t.state, t.reason) for t in tasks]
    keys = [(t.expid, t.ccd) for t in tasks]
    assert len(keys) == len(set(keys))
    assert all((t.result and t.result.worker) for t in tasks), "a CCD ran outside the workers"


def test_local_workers_calibrate_a_night_with_masters_and_drain(parts_cache, tmp_path, capsys):
    site = site_for(tmp_path, masters=True, ingest={"workers": 2, "poll_seconds": 0.3})
    deliver(parts_cache, site.path(site.ingest.inbox), "bias", "flat", "sci1", "sci2")
    ingest = Ingest(site, IngestOptions(report=True))
    try:
        assert isinstance(ingest.executor, WorkerPoolExecutor)
        ingest.run(drain=True, timeout=240)
        assert ingest.idle()
        _assert_each_ccd_once(site, ingest.db)
        assert products(tmp_path) == sorted(f"DECam_0110000{e}_{c}.cal.fits.fz" for e in (3, 4) for c in (25, 32))
        workers = {t.result.worker.name for t in ingest.db.tasks()}
        assert 1 <= len(workers) <= 2  # the same two warm processes ran every CCD
        assert ingest.executor.started_workers == 2
        # the masters built mid-night reached the workers: science ran on generation >= 1
        assert WorkQueue(worker_queue_root(site)).masters_generation() >= 1
        sci = [t for t in ingest.db.tasks() if t.kind == "science"]
        assert all(t.t_submitted >= ingest.db.masters_built(NIGHT) for t in sci)
    finally:
        ingest.close()  # drains the workers: each finishes its CCD and exits
    q = WorkQueue(worker_queue_root(site))
    assert {b.state for b in q.beats()} == {"exited"}
    assert main(["status", "--workdir", str(tmp_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["queue_seconds"]["n"] == 8 and s["mode"] == "workers"
    page = (tmp_path / "reports" / f"night-{NIGHT}.html").read_text()
    assert "warm workers:" in page and "per CCD submitted -&gt; running" in page


def test_max_jobs_caps_the_number_of_workers(parts_cache, tmp_path):
    site = site_for(tmp_path, ingest={"workers": 5, "max_jobs": 2})
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        assert ingest.executor.n == 2 and ingest.throttle.max_jobs is None
    finally:
        ingest.close()


def test_runaway_guard_stops_an_exposure_that_always_fails(parts_cache, tmp_path, capsys):
    """A CCD that always fails (its master is missing) is resubmitted until the exposure's ceiling."""
    site = site_for(tmp_path, masters=False, ingest={"max_attempts": 10, "max_resubmits_per_exposure": 3},
                    node={"require_masters": True})
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1")
    ingest = Ingest(site, IngestOptions(report=True))
    try:
        ingest.run(drain=True, timeout=240)
        tasks = ingest.db.tasks()
        assert {t.state for t in tasks} == {"failed"}
        assert sum(t.attempt - 1 for t in tasks) == 3  # the ceiling, not max_attempts x CCDs
        assert all("resubmission ceiling" in t.reason for t in tasks)
        stops = ingest.db.resubmission_stops(NIGHT)
        assert [(s["scope"], s["name"]) for s in stops] == [("exposure", "DECam_01100003")]
    finally:
        ingest.close()
    assert main(["status", "--workdir", str(tmp_path)]) == 0
    assert "stopped    exposure DECam_01100003: resubmission ceiling" in capsys.readouterr().out
    page = (tmp_path / "reports" / f"night-{NIGHT}.html").read_text()
    assert "resubmissions stopped (exposure DECam_01100003)" in page and "one job array per part" in page


# --------------------------------------------------------------------------- real Slurm
def _our_workers(cluster) -> list[str]:
    out = cluster.run("squeue", "-h", "-r", "-n", "dwf-workers", "-o", "%i %T").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _wait(cond, timeout: float = 120.0, what: str = "condition") -> None:
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slurm
def test_slurm_workers_scancel_mid_task_retried_by_another_without_duplicates(slurm_cluster, parts_cache, tmp_path):
    site = site_for(tmp_path, "slurm", ingest={"workers": 2, "poll_seconds": 0.5, "lost_after_seconds": 1.0})
    deliver(parts_cache, site.path(site.ingest.inbox), "wide")
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        q = WorkQueue(worker_queue_root(site))
        # run until a worker holds a CCD, then scancel that worker mid-task
        victim = None
        end = time.time() + 180
        while victim is None and time.time() < end:
            ingest.step()
            for worker, tickets in q.claims().items():
                if tickets:
                    victim = worker[1:]  # w<jobid_index>
                    break
            time.sleep(0.05)
        assert victim, "no worker claimed a CCD"
        # freeze it first (SIGSTOP through Slurm): a CCD now takes about a second, and without the freeze the
        # worker often finished it before scancel's SIGTERM arrived, so nothing was left to retry
        slurm_cluster.run("scontrol", "suspend", victim, check=False)
        slurm_cluster.run("scancel", victim)
        ingest.run(drain=True, timeout=300)
        _assert_each_ccd_once(site, ingest.db)
        retried = [t for t in ingest.db.tasks() if t.attempt > 1]
        assert retried and all(t.result.worker.job_id != victim for t in retried)  # another worker took it
        assert ingest.executor.started_workers >= 3  # the cancelled worker was replaced
        # four CCDs, four product sets, nothing written twice (one .cal per CCD)
        assert products(tmp_path) == sorted(f"DECam_01100006_{c:02d}.cal.fits.fz" for c in (1, 2, 3, 4))
    finally:
        ingest.close()
    _wait(lambda: not _our_workers(slurm_cluster), 120, "the drained workers to leave the queue")


@pytest.mark.slurm
def test_slurm_worker_near_walltime_is_replaced_with_no_gap(slurm_cluster, parts_cache, tmp_path):
    """Walltime 5 min, successor 4.9 min before the end, no new CCD 4.8 min before: the first worker
    gets its successor ~6 s after starting and stops taking CCDs ~12 s after; the pool never empties
    and the next part is calibrated by the successor."""
    site = site_for(tmp_path, "slurm", ingest={"workers": 1, "poll_seconds": 0.5, "worker_time_minutes": 5,
                                                "worker_replace_minutes": 4.9, "worker_stop_minutes": 4.8})
    inbox = site.path(site.ingest.inbox)
    deliver(parts_cache, inbox, "sci1")
    ingest = Ingest(site, IngestOptions(report=False))
    q = WorkQueue(worker_queue_root(site))
    try:
        first = None
        end = time.time() + 180
        alive_counts = []
        while time.time() < end:
            ingest.step()
            alive_counts.append(len(ingest.executor.pool))
            beats = {b.worker: b for b in q.beats()}
            first = first or next(iter(beats), None)
            if first and beats[first].state == "exited" and ingest.executor.started_workers >= 2:
                break
            time.sleep(0.3)
        assert first and q.beats() and {b.worker: b for b in q.beats()}[first].state == "exited"
        assert ingest.executor.started_workers >= 2  # the successor was submitted before the first stopped
        assert min(alive_counts[5:]) >= 1  # never zero workers once started
        deliver(parts_cache, inbox, "sci2")
        ingest.run(drain=True, timeout=300)
        _assert_each_ccd_once(site, ingest.db)
        later = ingest.db.tasks(expid="DECam_01100004")
        assert all(t.result.worker.name != first for t in later)
    finally:
        ingest.close()
    _wait(lambda: not _our_workers(slurm_cluster), 120, "the drained workers to leave the queue")


# --------------------------------------------------------------------------- scripts (PBS, manual sbatch)
@pytest.mark.parametrize("syntax,flag", [("J", "#PBS -J 0-2"), ("t", "#PBS -t 0-2")])
def test_pbs_worker_array_script_for_both_array_syntaxes(tmp_path, syntax, flag):
    # No PBS server here (no Debian package of a PBS/Torque server): the script is rendered and checked.
    from dwfhpc.ingest.executors.base import WorkerRequest
    from dwfhpc.ingest.executors.pbs import PbsArrayExecutor

    site = site_for(tmp_path, "pbs", scheduler={"pbs_array_syntax": syntax, "queue": "normal"})
    ex = PbsArrayExecutor(site, tmp_path / "jobs")
    script = ex.worker_script_for(WorkerRequest(name="dwf-workers", queue_root=tmp_path / "q", n=3, mem_gb=8,
                                                time_minutes=720, stop_minutes=3, scratch_vars=[],
                                                scratch_fallback="/tmp"))
    text = script.read_text()
    assert flag in text and "#PBS -q normal" in text and "#PBS -l walltime=12:00:00" in text
    assert f" node worker {tmp_path / 'q'} --time-minutes 720\n" in text  # the rest is in the queue's settings.json
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.slurm
def test_manual_sbatch_of_the_worker_script_runs_tickets_and_drains(slurm_cluster, parts_cache, tmp_path):
    """`sbatch slurm_templates/worker-array.sbatch` (rendered) starts a worker that takes a ticket and drains."""
    from dwfhpc.node import TaskSpec, result_path
    from dwfhpc.scheduler import scheduler_for
    from dwfhpc.templates import worker_script

    site = site_for(tmp_path, "slurm")
    tar = next(p for p in parts_cache["sci1"] if p.name.endswith(".tar"))
    manifest = next(p for p in parts_cache["sci1"] if p.name.endswith(".manifest.json"))
    spec = TaskSpec.from_site(site, manifest, tar).write(tmp_path / "sci1.json")
    q = WorkQueue(tmp_path / "queue")
    q.put("DECam_01100003.p1of1", 25, spec, 0, 1)
    res = scheduler_for("slurm", site.scheduler).resources(mem_gb=1, time_minutes=10)
    script = tmp_path / "workers.sbatch"
    script.write_text(worker_script(site, "slurm", tmp_path / "queue", 1, "dwf-workers", tmp_path / "logs",
                                    resources=res, stop_seconds=60))
    (tmp_path / "logs").mkdir()
    job = slurm_cluster.run("sbatch", "--parsable", str(script)).stdout.strip().split(";")[0]
    shown = slurm_cluster.run("scontrol", "show", "job", job).stdout
    assert "Requeue=0" in shown, shown  # --no-requeue taken by Slurm: a worker is never requeued
    _wait(lambda: result_path(spec, 0).exists(), 180, "the worker's result")
    result = json.loads(result_path(spec, 0).read_text())
    assert result["status"] == "ok", result["error"]
    assert result["worker"]["job_id"] in (job, f"{job}_0")
    q.request_drain()
    _wait(lambda: job not in slurm_cluster.run("squeue", "-h", "-o", "%i").stdout, 120, "the worker to exit")
    assert {b.state for b in q.beats()} == {"exited"}
