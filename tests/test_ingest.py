"""dwfhpc ingest on real parts: real FITS and tarballs, submitit's LocalExecutor, and (fixtures
``slurm_cluster`` / ``slurm_cluster_dbd``) a real slurmctld + slurmd, without and with accounting.

PBS: there is no PBS server on this machine (no Debian package of OpenPBS/Torque server), so the
PBS executor is checked on the scripts it renders for both array syntaxes (PBS Pro ``-J``, Torque
``-t``) and stops before ``qsub``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from dwfhpc.cli import main
from dwfhpc.config import load_site
from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.ingest.executors.slurm import read_max_array_size
from dwfhpc.ingest.throttle import Throttle
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure
from dwfhpc.statedb import StateDB

from conftest import INFRA, SlurmCluster, _start_slurm

NIGHT = "2026-11-24"


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def parts_cache(tmp_path_factory) -> dict[str, list[Path]]:
    """Packed parts (tar + manifest) of a bias, a dome flat, three 2-CCD and one 4-CCD science exposures."""
    raw = tmp_path_factory.mktemp("raw")
    packed = tmp_path_factory.mktemp("packed")
    plan = {"bias": (1100001, "zero", [25, 32], 2), "flat": (1100002, "dome flat", [25, 32], 2),
            "sci1": (1100003, "object", [25, 32], 1), "sci2": (1100004, "object", [25, 32], 1),
            "sci3": (1100005, "object", [25, 32], 1), "wide": (1100006, "object", [1, 2, 3, 4], 1)}
    out = {}
    for name, (expnum, obstype, ccds, k) in plan.items():
        f = simulate_decam_exposure(raw, expnum=expnum, obstype=obstype, ccds=ccds, seed=expnum % 7, jobs=1)
        folder = packed / name
        parts = pack_exposure(f, folder, codec="rice", parts=k, jobs=2)
        out[name] = [p.tar for p in parts] + [p.manifest for p in parts]
    return out


def deliver(parts_cache, inbox: Path, *names: str) -> None:
    """Copy parts into the inbox the way push does: tarball first, manifest last."""
    inbox.mkdir(parents=True, exist_ok=True)
    for name in names:
        files = parts_cache[name]
        for f in sorted(files, key=lambda p: p.name.endswith(".manifest.json")):
            shutil.copyfile(f, inbox / f.name)


def site_for(work: Path, executor: str = "local", **over):
    """The embedded default on ``work``, fast polls; science without masters unless ``masters=True``; one job
    array per part (``configs/local.yaml`` runs warm workers: tests of worker mode ask for them)."""
    masters = over.pop("masters", False)
    o = {"ingest": {"executor": executor, "workers": 0, "poll_seconds": 0.3, "lost_after_seconds": 0.01, "max_jobs": None,
                    "retry_delay_seconds": 0,
                    "arrival_grace_seconds": 2, "report_every_seconds": 3600, "auto_masters": masters},
         "node": {"require_masters": masters}, "scheduler": {"array_parallelism": 4}}
    for section, values in over.items():
        o.setdefault(section, {}).update(values)
    return load_site("local", workdir=work, overrides=o)


def write_config(site, path: Path) -> Path:
    """The same settings as a YAML file, for the command line."""
    data = site.model_dump(mode="json", exclude={"source"})
    path.write_text(yaml.safe_dump(data))
    return path


def drain(ingest: Ingest, timeout: float = 240) -> None:
    ingest.run(drain=True, timeout=timeout)
    assert ingest.idle(), "ingest stopped with work left"


def products(work: Path) -> list[str]:
    return sorted(p.name for p in (work / "cluster" / "products").rglob("*.cal.fits.fz"))


# --------------------------------------------------------------------------- local executor
def test_local_night_files_calibrations_builds_masters_and_calibrates(parts_cache, tmp_path, capsys):
    site = site_for(tmp_path, masters=True)
    deliver(parts_cache, site.path(site.ingest.inbox), "bias", "flat", "sci1")
    ingest = Ingest(site, IngestOptions(report=True))
    try:
        drain(ingest)
        db = ingest.db
        assert db.counts("tasks") == {"done": 6}
        assert {p.state for p in db.parts()} == {"done"} and len(db.parts()) == 5
        assert db.masters_built(NIGHT) is not None
        # bias frames filed by night / CCD, masters made from them, science used them
        lib = site.path(site.calibration.library) / NIGHT
        assert sorted(p.name for p in lib.rglob("*.fits*")) and (site.path(site.calibration.masters) / NIGHT).is_dir()
        sci = db.tasks(expid="DECam_01100003")
        assert all(t.result.ok for t in sci)
        assert products(tmp_path) == ["DECam_01100003_25.cal.fits.fz", "DECam_01100003_32.cal.fits.fz"]
        # the science task started after the masters were built (it waited for them)
        assert min(t.t_submitted for t in sci) >= db.masters_built(NIGHT)
    finally:
        ingest.close()
    assert (tmp_path / "reports" / f"night-{NIGHT}.html").exists()
    assert main(["status", "--workdir", str(tmp_path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["tasks"] == {"done": 6} and s["exposures"] == {"done": 3} and s["failures"] == []
    assert s["latency_part_to_products"]["n"] == 5 and s["latency_part_to_products"]["p95"] > 0


def test_corrupt_part_is_quarantined_with_its_reason_and_the_rest_go_on(parts_cache, tmp_path):
    site = site_for(tmp_path)
    inbox = site.path(site.ingest.inbox)
    deliver(parts_cache, inbox, "sci1", "sci2")
    bad_tar = next(inbox.glob("DECam_01100003.*.tar"))
    data = bytearray(bad_tar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    bad_tar.write_bytes(bytes(data))
    original = bytes(data)
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        drain(ingest)
        part = ingest.db.part(bad_tar.stem)
        assert part.state == "quarantined" and "sha256" in part.reason
        assert ingest.db.tasks(expid="DECam_01100003") == []
        assert ingest.db.counts("tasks") == {"done": 2}  # the other exposure went on
    finally:
        ingest.close()
    folder = next(site.path(site.ingest.quarantine).glob(f"{bad_tar.stem}.*"))
    assert (folder / bad_tar.name).read_bytes() == original  # kept as it came, for a look
    assert "sha256" in (folder / "reason.txt").read_text()


@pytest.mark.parametrize("threads", [1, 4])
def test_inbox_accepts_oldest_first_whether_hashed_serially_or_in_threads(parts_cache, tmp_path, threads):
    from dwfhpc.ingest.inbox import Inbox

    inbox = tmp_path / "inbox"
    deliver(parts_cache, inbox, "sci1")
    time.sleep(0.05)  # distinct arrival times: sci1 is the oldest
    deliver(parts_cache, inbox, "bias", "sci2")
    bad = next(inbox.glob("DECam_01100004.*.tar"))
    bad.write_bytes(bytes(b ^ 0xFF if i == 600 else b for i, b in enumerate(bad.read_bytes())))
    order = [p.name[: -len(".manifest.json")] for p in sorted(inbox.glob("*.manifest.json"),
                                                               key=lambda p: p.stat().st_ctime)]
    seen: list[str] = []
    with StateDB(tmp_path / "state.db") as db:
        box = Inbox(inbox, tmp_path / "store", tmp_path / "quarantine", db, mem_gb=1, time_minutes=5,
                    verify_threads=threads)
        try:
            out = box.scan(on_accepted=seen.append)
        finally:
            box.close()
        assert seen == out.accepted == [s for s in order if not s.startswith("DECam_01100004")]
        assert [s for s, _ in out.quarantined] == [bad.stem]
        assert db.part(bad.stem).state == "quarantined"
    assert sorted(p.name for p in (tmp_path / "store").rglob("*.tar")) == sorted(f"{s}.tar" for s in seen)


def test_short_tarball_waits_then_is_quarantined_after_the_grace(parts_cache, tmp_path):
    site = site_for(tmp_path)
    inbox = site.path(site.ingest.inbox)
    deliver(parts_cache, inbox, "sci1")
    tar = next(inbox.glob("*.tar"))
    tar.write_bytes(tar.read_bytes()[:1000])  # manifest arrived, tarball still short
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        now = time.time()
        first = ingest.step(now)
        assert first["waiting"] == 1 and first["quarantined"] == 0
        later = ingest.step(now + 3)  # past arrival_grace_seconds = 2
        assert later["quarantined"] == 1
        assert "stays at 1000 of" in ingest.db.part(tar.stem).reason
    finally:
        ingest.close()


def test_a_part_delivered_again_is_not_submitted_again(parts_cache, tmp_path):
    site = site_for(tmp_path)
    inbox = site.path(site.ingest.inbox)
    deliver(parts_cache, inbox, "sci1")
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        drain(ingest)
        deliver(parts_cache, inbox, "sci1")  # push retried after a lost confirmation
        assert ingest.step()["accepted"] == 0
        assert not any(inbox.iterdir())
        assert len(ingest.db.submissions()) == 1 and ingest.db.counts("tasks") == {"done": 2}
    finally:
        ingest.close()


def test_restart_reattaches_submitted_tasks_without_resubmitting(parts_cache, tmp_path):
    site = site_for(tmp_path)
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1", "sci2")
    first = Ingest(site, IngestOptions(max_jobs=8, report=False))
    try:
        first.step()  # verified and submitted, not collected
        assert first.db.count_tasks("submitted", "running") == 4
    finally:
        first.close()  # as if killed: the local tasks are still running
    second = Ingest(site, IngestOptions(report=False))
    try:
        drain(second)
        assert len(second.db.submissions()) == 2  # nothing submitted twice
        assert second.db.counts("tasks") == {"done": 4}
    finally:
        second.close()
    assert len(products(tmp_path)) == 4


def test_a_second_ingest_on_the_same_state_db_is_refused(tmp_path):
    site = site_for(tmp_path)
    first = Ingest(site, IngestOptions(report=False))
    try:
        with pytest.raises(Exception, match="dwfhpc ingest"):
            Ingest(site, IngestOptions(report=False))
    finally:
        first.close()


def test_throttles_count_tasks_and_space_parts():
    t = Throttle(max_jobs=3)
    assert [t.slots(n) for n in (0, 2, 3, 5)] == [3, 1, 0, 0]
    r = Throttle(rate=6)  # one new part every 10 s
    assert r.part_may_start(None, 100) and not r.part_may_start(100, 109) and r.part_may_start(100, 110)
    assert Throttle().slots(1000) is None


def test_rate_throttle_starts_parts_oldest_first_at_the_rate(parts_cache, tmp_path):
    site = site_for(tmp_path)
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1")
    time.sleep(0.05)
    deliver(parts_cache, site.path(site.ingest.inbox), "sci2")
    ingest = Ingest(site, IngestOptions(rate=2, max_jobs=8, report=False))  # one part per 30 s
    try:
        now = time.time()
        assert ingest.step(now)["submitted"] == 2
        assert ingest.step(now + 10)["submitted"] == 0  # the second part waits, in the DB
        assert ingest.db.count_tasks("queued") == 2
        assert ingest.step(now + 31)["submitted"] == 2
        subs = ingest.db.submissions()
        assert [s.part for s in subs] == ["DECam_01100003.p1of1", "DECam_01100004.p1of1"]
    finally:
        ingest.close()


def test_failed_task_is_retried_then_marked_failed_with_its_reason(parts_cache, tmp_path):
    # science with require_masters on and no calibration frames anywhere: every attempt fails
    site = site_for(tmp_path, node={"require_masters": True}, ingest={"max_attempts": 2})
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1")
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        drain(ingest)
        tasks = ingest.db.tasks(expid="DECam_01100003")
        assert {t.state for t in tasks} == {"failed"} and {t.attempt for t in tasks} == {2}
        assert all("no master bias" in t.reason for t in tasks)
        assert sum(s.ntasks for s in ingest.db.submissions()) == 4  # each CCD ran exactly twice
    finally:
        ingest.close()


def test_member_digest_mismatch_fails_on_the_node_once_without_retries(parts_cache, tmp_path):
    # the tarball matches its manifest, but the manifest's digest of one member is wrong (a packer bug):
    # the inbox accepts the part (it checks the tarball), the node refuses the member, nobody retries
    site = site_for(tmp_path)
    inbox = site.path(site.ingest.inbox)
    deliver(parts_cache, inbox, "sci1")
    manifest = next(inbox.glob("*.manifest.json"))
    doc = json.loads(manifest.read_text())
    doc["members"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(doc))
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        drain(ingest)
        bad, good = ingest.db.tasks(expid="DECam_01100003")
        assert (bad.state, bad.attempt) == ("failed", 1) and "sha256 does not match the manifest" in bad.reason
        assert good.state == "done"
    finally:
        ingest.close()


def test_retry_doubles_memory_after_oom_and_time_after_timeout(tmp_path, parts_cache):
    from dwfhpc.ingest.collector import Collector
    from dwfhpc.ingest.executors import Outcome
    from dwfhpc.parts import read_manifest

    db = StateDB(tmp_path / "state.sqlite")
    manifest = next(p for p in parts_cache["sci1"] if p.name.endswith(".manifest.json"))
    db.add_part(read_manifest(manifest), stem="DECam_01100003.p1of1", tar="t", manifest_path=str(manifest),
                t_inbox=1.0, mem_gb=2, time_minutes=10, now=1.0)
    col = Collector(db, executor=None, max_attempts=3, lost_after=1)
    t25, t32 = db.tasks(part="DECam_01100003.p1of1")
    col._finished(t25, Outcome(result=None, error="slurmstepd: error: Detected 1 oom-kill event(s)"), now=2)
    col._finished(t32, Outcome(result=None, error="DUE TO TIME LIMIT"), now=2)
    a, b = db.tasks(part="DECam_01100003.p1of1")
    assert (a.state, a.attempt, a.mem_gb, a.time_minutes) == ("queued", 2, 4, 10)
    assert (b.state, b.attempt, b.mem_gb, b.time_minutes) == ("queued", 2, 2, 20)
    db.close()


# --------------------------------------------------------------------------- PBS (rendered only)
@pytest.mark.parametrize("syntax,flag", [("J", "#PBS -J 0-1"), ("t", "#PBS -t 0-1")])
def test_pbs_scripts_for_both_array_syntaxes(parts_cache, tmp_path, syntax, flag, capsys):
    # No PBS server here: the scripts are rendered and checked, not queued.
    site = site_for(tmp_path, "pbs", scheduler={"pbs_array_syntax": syntax, "queue": "normal", "account": "dwf"})
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1")
    config = write_config(site, tmp_path / "site.yaml")
    assert main(["ingest", "--config", str(config), "--emit-scripts", str(tmp_path / "scripts")]) == 0
    scripts = sorted((tmp_path / "scripts").glob("*.pbs"))
    assert len(scripts) == 1
    text = scripts[0].read_text()
    assert flag in text and "#PBS -q normal" in text and "#PBS -A dwf" in text
    other = "#PBS -t" if syntax == "J" else "#PBS -J"
    assert other not in text
    assert subprocess.run(["bash", "-n", str(scripts[0])]).returncode == 0
    assert " node run " in text and str(tmp_path / "scripts") in text
    assert any(site.path(site.ingest.inbox).iterdir())  # emitting submits nothing and moves nothing


# --------------------------------------------------------------------------- real Slurm
def squeue_ours(cluster: SlurmCluster) -> list[str]:
    out = cluster.run("squeue", "-h", "-r", "-u", os.environ.get("USER", "root"), "-o", "%i|%T|%j").stdout
    return [line for line in out.splitlines() if "|dwf-" in line]


def wait_empty_queue(cluster: SlurmCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while squeue_ours(cluster) and time.monotonic() < deadline:
        time.sleep(0.3)


@pytest.mark.slurm
def test_slurm_array_runs_and_is_collected(slurm_cluster, parts_cache, tmp_path):
    wait_empty_queue(slurm_cluster)
    site = site_for(tmp_path, "slurm")
    inbox = site.path(site.ingest.inbox)
    deliver(parts_cache, inbox, "sci1", "sci2")
    bad = next(inbox.glob("DECam_01100004.*.tar"))
    data = bytearray(bad.read_bytes())
    data[-3000] ^= 0x01  # damaged in transit: same size, the tarball's sha256 differs
    bad.write_bytes(bytes(data))
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        drain(ingest)
        db = ingest.db
        assert db.counts("tasks") == {"done": 2}
        assert db.part("DECam_01100004.p1of1").state == "quarantined"
        (sub,) = db.submissions()
        assert sub.name == "dwf-DECam_01100003-p1" and sub.job_id.isdigit()
        assert sorted(t.job_id for t in db.tasks()) == [f"{sub.job_id}_0", f"{sub.job_id}_1"]
        assert all(t.result.host for t in db.tasks())
        assert ingest.executor.queries <= ingest.polls  # one scheduler query per poll at most
    finally:
        ingest.close()
    assert products(tmp_path) == ["DECam_01100003_25.cal.fits.fz", "DECam_01100003_32.cal.fits.fz"]


def _cancel_task_and_count_polls(cluster: SlurmCluster, parts_cache, work: Path, *, running: bool):
    """Cancel CCD 4's task (pending, or once running) and count the polls until it is resubmitted."""
    if running:  # a setup line keeps each task running long enough to be cancelled while it runs
        site = site_for(work, "slurm", scheduler={"array_parallelism": 4, "setup": ["sleep 4"]})
    else:  # one task at a time: the last one is still pending when it is cancelled
        site = site_for(work, "slurm", scheduler={"array_parallelism": 1})
    deliver(parts_cache, site.path(site.ingest.inbox), "wide")  # 4 CCDs
    ingest = Ingest(site, IngestOptions(report=False, poll_seconds=0.5))
    try:
        ingest.step()
        (sub,) = ingest.db.submissions()
        victim = f"{sub.job_id}_3"
        deadline = time.monotonic() + 30
        while running and f"{victim}|RUNNING" not in "\n".join(squeue_ours(cluster)) and time.monotonic() < deadline:
            time.sleep(0.1)
        cluster.run("scancel", victim)
        polls = 0
        while ingest.db.tasks(part="DECam_01100006.p1of1")[3].attempt == 1 and polls < 10:
            time.sleep(ingest.poll_seconds)
            ingest.step()
            polls += 1
        retried = ingest.db.tasks(part="DECam_01100006.p1of1")[3]
        drain(ingest)
        final = ingest.db.tasks(part="DECam_01100006.p1of1")
        return polls, retried, final, ingest.db.submissions()
    finally:
        ingest.close()


@pytest.mark.slurm
def test_cancelled_task_without_slurmdbd_is_lost_and_resubmitted_within_two_polls(slurm_cluster, parts_cache,
                                                                                 tmp_path):
    wait_empty_queue(slurm_cluster)
    assert slurm_cluster.run("sacct", "-n", check=False).returncode != 0  # really no accounting here
    polls, retried, final, subs = _cancel_task_and_count_polls(slurm_cluster, parts_cache, tmp_path, running=False)
    assert polls <= 2
    assert retried.attempt == 2 and retried.state in ("submitted", "running", "done")
    assert "lost: left the queue without a result" in retried.reason
    assert [t.state for t in final] == ["done"] * 4
    assert [s.ntasks for s in subs] == [4, 1]  # only the lost CCD went again


@pytest.mark.slurm
def test_cancelled_task_with_slurmdbd_is_resubmitted_with_the_reason_from_sacct(slurm_cluster_dbd, parts_cache,
                                                                             tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster_dbd.conf))
    wait_empty_queue(slurm_cluster_dbd)
    polls, retried, final, subs = _cancel_task_and_count_polls(slurm_cluster_dbd, parts_cache, tmp_path,
                                                               running=True)
    assert polls <= 2 and retried.attempt == 2
    assert "(cancelled)" in retried.reason  # sacct's CANCELLED (a pending task cancelled never reaches sacct)
    assert [t.state for t in final] == ["done"] * 4 and len(subs) == 2


@pytest.mark.slurm
def test_killed_ingest_restarts_without_duplicate_submission(slurm_cluster, parts_cache, tmp_path):
    wait_empty_queue(slurm_cluster)
    site = site_for(tmp_path, "slurm", scheduler={"array_parallelism": 1})
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1", "sci2", "sci3")
    config = write_config(site, tmp_path / "site.yaml")
    argv = [sys.executable, "-m", "dwfhpc", "ingest", "--config", str(config), "--no-report"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db_path = site.path(site.ingest.state_db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if db_path.exists():
            with StateDB(db_path) as db:
                if len(db.submissions()) == 3:
                    break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # mid-array: tasks queued and running
    proc.wait()
    assert squeue_ours(slurm_cluster), "the arrays should still be in the queue when ingest dies"
    rerun = subprocess.run(argv + ["--drain"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    with StateDB(db_path) as db:
        subs = db.submissions()
        assert sorted(s.part for s in subs) == ["DECam_01100003.p1of1", "DECam_01100004.p1of1",
                                                "DECam_01100005.p1of1"]
        assert db.counts("tasks") == {"done": 6} and {t.attempt for t in db.tasks()} == {1}
    assert len(products(tmp_path)) == 6


@pytest.mark.slurm
def test_max_jobs_keeps_at_most_three_tasks_in_the_queue(slurm_cluster, parts_cache, tmp_path):
    wait_empty_queue(slurm_cluster)
    site = site_for(tmp_path, "slurm")
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1", "sci2", "sci3")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(squeue_ours(slurm_cluster)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    ingest = Ingest(site, IngestOptions(max_jobs=3, report=False))
    try:
        drain(ingest)
        assert ingest.db.counts("tasks") == {"done": 6}
    finally:
        stop.set()
        watcher.join()
        ingest.close()
    assert max(seen) == 3 and len(seen) > 10  # the queue was really watched and really filled to the cap


@pytest.fixture(scope="module")
def small_array_cluster() -> SlurmCluster:
    """A third private cluster whose MaxArraySize is 3 (own ports and state)."""
    cluster = _start_slurm(Path("/tmp/dwf-slurm-small"), False, {"CTLD_PORT": 7837, "SLURMD_PORT": 7838},
                           {"CLUSTER": "dwfsmall", "MAX_ARRAY_SIZE": "3"})
    yield cluster
    subprocess.run(["bash", str(INFRA / "stop-slurm.sh")], env={**os.environ, "SLURM_PREFIX": str(cluster.prefix)},
                   capture_output=True)


@pytest.mark.slurm
def test_part_larger_than_max_array_size_is_split(small_array_cluster, parts_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(small_array_cluster.conf))
    assert read_max_array_size() == 3
    site = site_for(tmp_path, "slurm")
    deliver(parts_cache, site.path(site.ingest.inbox), "wide")  # 4 CCDs: arrays of 3 + 1
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        drain(ingest)
        subs = ingest.db.submissions()
        assert [s.ntasks for s in subs] == [3, 1]
        assert [t.submission for t in ingest.db.tasks()] == [subs[0].id] * 3 + [subs[1].id]
        assert ingest.db.counts("tasks") == {"done": 4}
    finally:
        ingest.close()


@pytest.mark.slurm
def test_emitted_sbatch_script_is_accepted_by_slurm(slurm_cluster, parts_cache, tmp_path):
    site = site_for(tmp_path, "slurm")
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1")
    config = write_config(site, tmp_path / "site.yaml")
    assert main(["ingest", "--config", str(config), "--emit-scripts", str(tmp_path / "scripts")]) == 0
    (script,) = sorted((tmp_path / "scripts").glob("*.sbatch"))
    assert "#SBATCH --array=0-1" in script.read_text()
    check = slurm_cluster.run("sbatch", "--test-only", str(script), check=False)
    assert check.returncode == 0 and "to start at" in check.stderr
