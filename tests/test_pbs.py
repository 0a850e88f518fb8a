"""dwfhpc on a real PBS: OpenPBS built from ../shared/tools/pbs and started on this host by
``tests/infra/start-pbs.sh`` (server, scheduler, comm, mom and the PostgreSQL datastore; the build is
cached per machine under /var/cache/dwfhpc-pbs), stopped by ``stop-pbs.sh`` at the end of the module.

Everything goes through the real ``qsub``/``qstat``/``qdel``: arrays with ``-J`` and ``$PBS_ARRAY_INDEX``,
a ``qdel``'d task found lost through ``qstat -x`` and retried once, ``--max-jobs``, warm workers from
``pbs_templates/worker-array.pbs`` with the site's scratch, ``dwfhpc jobs``, ``dwfhpc fullred`` and the
image staging script. Without root or the OpenPBS source the module skips (fails under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from dwfhpc.cli import main
from dwfhpc.config import load_site
from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.ingest.executors import worker_queue_root
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_hsc_visit
from dwfhpc.statedb import StateDB
from dwfhpc.workers import WorkerSettings, WorkQueue

from conftest import INFRA, missing
from test_ingest import deliver, parts_cache, products, site_for, write_config  # noqa: F401  (fixture)

# the first test may build OpenPBS (3.5-8 min on one core) before it runs
pytestmark = [pytest.mark.pbs, pytest.mark.timeout(1800)]

PBS_PREFIX = Path("/tmp/dwf-pbs")


# --------------------------------------------------------------------------- the server
@dataclass
class PbsServer:
    prefix: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def jobs(self, history: bool = False) -> dict[str, dict]:
        """Every job and subjob the server knows (``qstat -t -f -F json``; with ``-x`` finished ones too)."""
        argv = ["qstat", "-t", "-f", "-F", "json"] + (["-x"] if history else [])
        out = self.run(*argv, check=False).stdout
        return json.loads(out).get("Jobs", {}) if out.strip() else {}

    def ours(self) -> dict[str, str]:
        """Our subjobs and plain jobs (named dwf-*) still queued, held or running: id -> one-letter state."""
        return {jid: j["job_state"] for jid, j in self.jobs().items()
                if j.get("Job_Name", "").startswith("dwf-") and "[]" not in jid and j["job_state"] in "QHRETW"}


@pytest.fixture(scope="module")
def pbs() -> PbsServer:
    if os.geteuid() != 0:
        missing("the private PBS needs root (its daemons, the datastore as user postgres, /etc/hosts)")
    env = {**os.environ, "PBS_PREFIX": str(PBS_PREFIX)}
    try:
        proc = subprocess.run(["bash", str(INFRA / "start-pbs.sh")], env=env, capture_output=True, text=True,
                              timeout=1700)
    except subprocess.TimeoutExpired:
        missing("start-pbs.sh did not finish in 1700 s (building OpenPBS)")
    if proc.returncode == 3:
        missing(proc.stderr.strip().splitlines()[-1])  # "cannot build PBS: the OpenPBS source tarball ... is not there"
    if proc.returncode != 0:
        subprocess.run(["bash", str(INFRA / "stop-pbs.sh")], env=env, capture_output=True)
        missing(f"could not start PBS: {proc.stderr.strip()[-800:]}")
    m = re.search(r"^export PBS_CONF_FILE=(\S+) PATH=(\S+):\$PATH$", proc.stdout, re.M)
    assert m, proc.stdout
    server = PbsServer(PBS_PREFIX, {"PBS_CONF_FILE": m.group(1), "PATH": f"{m.group(2)}:{os.environ['PATH']}"})
    with pytest.MonkeyPatch.context() as mp:  # dwfhpc's own qsub/qstat/qdel calls find this server
        for key, value in server.env.items():
            mp.setenv(key, value)
        yield server
    stop = subprocess.run(["bash", str(INFRA / "stop-pbs.sh")], env=env, capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr


def wait_for(cond, timeout: float, what: str, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


def wait_no_jobs_of_ours(pbs: PbsServer, timeout: float = 120) -> None:
    wait_for(lambda: not pbs.ours(), timeout, "our PBS jobs to leave the queue")


def pbs_site(work: Path, **over):
    """The embedded default on ``work`` with the PBS executor (PBS Pro ``-J``), small tasks."""
    over.setdefault("scheduler", {})
    over["scheduler"] = {"mem_gb": 1, "time_minutes": 10, **over["scheduler"]}
    return site_for(work, "pbs", **over)


# --------------------------------------------------------------------------- the server itself
def test_server_runs_arrays_and_keeps_history(pbs, tmp_path):
    """What the rest relies on: root may submit, -J arrays set PBS_ARRAY_INDEX, qstat -x shows finished jobs."""
    script = tmp_path / "smoke.pbs"
    script.write_text("#!/bin/bash\n#PBS -N dwf-smoke\n#PBS -J 0-2\n#PBS -l select=1:ncpus=1:mem=64mb\n"
                      f"#PBS -l walltime=00:01:00\n#PBS -j oe\n#PBS -o {tmp_path}/\n"
                      f'echo "$PBS_ARRAY_INDEX $TMPDIR" > {tmp_path}/out.$PBS_ARRAY_INDEX\n')
    job = pbs.run("qsub", str(script)).stdout.strip()
    assert re.fullmatch(r"\d+\[\]\.\S+", job), job
    wait_for(lambda: all((tmp_path / f"out.{i}").exists() for i in range(3)), 90, "the three subjobs")
    for i in range(3):
        index, tmpdir = (tmp_path / f"out.{i}").read_text().split()
        assert index == str(i) and tmpdir.startswith(str(PBS_PREFIX / "tmp"))
    wait_for(lambda: pbs.jobs(history=True).get(job, {}).get("job_state") == "F", 60, "the array to finish")


# --------------------------------------------------------------------------- ingest --executor pbs
def test_ingest_array_executor_pbs_takes_parts_to_products(pbs, parts_cache, tmp_path):
    wait_no_jobs_of_ours(pbs)
    site = pbs_site(tmp_path)
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1", "sci2")
    config = write_config(site, tmp_path / "site.yaml")
    proc = subprocess.run([sys.executable, "-m", "dwfhpc", "ingest", "--config", str(config), "--array",
                           "--executor", "pbs", "--drain", "--no-report"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with StateDB(site.path(site.ingest.state_db)) as db:
        assert db.counts("tasks") == {"done": 4}
        subs = db.submissions()
        assert sorted(s.name for s in subs) == ["dwf-DECam_01100003-p1", "dwf-DECam_01100004-p1"]
        for s in subs:
            assert re.fullmatch(r"\d+\[\]\.\S+", s.job_id), s.job_id  # a PBS Pro array id
            tasks = sorted((t for t in db.tasks() if t.submission == s.id), key=lambda t: t.idx)
            assert [t.job_id for t in tasks] == [s.job_id.replace("[]", f"[{i}]") for i in range(2)]
            assert all(t.attempt == 1 and t.result.host for t in tasks)
    scripts = sorted((site.path(site.ingest.jobs_dir)).glob("*.pbs"))
    assert scripts and all("#PBS -J 0-1" in p.read_text() for p in scripts)
    assert products(tmp_path) == sorted(f"DECam_0110000{e}_{c}.cal.fits.fz" for e in (3, 4) for c in (25, 32))
    history = pbs.jobs(history=True)
    assert all(history[s.job_id]["job_state"] == "F" for s in subs)  # qstat -x: finished, not lost


def test_qdel_of_a_running_task_is_lost_through_history_and_retried_once(pbs, parts_cache, tmp_path):
    wait_no_jobs_of_ours(pbs)
    # a setup line keeps each task running long enough to be deleted while it runs
    site = pbs_site(tmp_path, scheduler={"setup": ["sleep 6"]}, ingest={"lost_after_seconds": 1.0})
    deliver(parts_cache, site.path(site.ingest.inbox), "wide")  # 4 CCDs
    ingest = Ingest(site, IngestOptions(report=False, poll_seconds=0.5))
    try:
        def submitted():
            ingest.step()
            return ingest.db.submissions()

        wait_for(submitted, 60, "the array to be submitted")
        (sub,) = ingest.db.submissions()
        victim = sub.job_id.replace("[]", "[3]")
        wait_for(lambda: pbs.ours().get(victim) == "R", 60, f"{victim} to run")
        pbs.run("qdel", victim)
        polls = 0
        while ingest.db.tasks(part="DECam_01100006.p1of1")[3].attempt == 1 and polls < 40:
            time.sleep(ingest.poll_seconds)
            ingest.step()
            polls += 1
        retried = ingest.db.tasks(part="DECam_01100006.p1of1")[3]
        assert retried.attempt == 2, (retried.state, retried.reason)
        assert "lost" in retried.reason and "(cancelled)" in retried.reason  # the reason from qstat -x
        ingest.run(drain=True, timeout=300)
        assert ingest.idle()
        final = ingest.db.tasks(part="DECam_01100006.p1of1")
        assert [t.state for t in final] == ["done"] * 4 and [t.attempt for t in final] == [1, 1, 1, 2]
        assert [s.ntasks for s in ingest.db.submissions()] == [4, 1]  # only the lost CCD went again
    finally:
        ingest.close()
    # 0 CCDs calibrated twice: one product per CCD, and one task log per CCD that says ok
    assert products(tmp_path) == sorted(f"DECam_01100006_{c:02d}.cal.fits.fz" for c in (1, 2, 3, 4))
    logs = list((site.path(site.ingest.jobs_dir) / "logs").glob("*"))
    ok = [json.loads(line)["ccd"] for p in logs for line in p.read_text().splitlines()
          if line.startswith("{") and '"status": "ok"' in line]
    assert sorted(ok) == [1, 2, 3, 4], ok


def test_max_jobs_holds_on_pbs(pbs, parts_cache, tmp_path):
    wait_no_jobs_of_ours(pbs)
    site = pbs_site(tmp_path, scheduler={"setup": ["sleep 2"]})
    deliver(parts_cache, site.path(site.ingest.inbox), "sci1", "sci2", "sci3")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(pbs.ours()))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    ingest = Ingest(site, IngestOptions(max_jobs=3, report=False))
    try:
        ingest.run(drain=True, timeout=400)
        assert ingest.idle() and ingest.db.counts("tasks") == {"done": 6}
    finally:
        stop.set()
        watcher.join()
        ingest.close()
    assert len(seen) > 10 and 2 <= max(seen) <= 3, seen  # really watched, filled, never past the cap


# --------------------------------------------------------------------------- warm workers
def test_pbs_workers_claim_ccds_use_the_site_scratch_and_drain(pbs, parts_cache, tmp_path):
    """Workers from pbs_templates/worker-array.pbs: node.scratch_vars names PBS_JOBFS (made by a setup line, as
    on Gadi), which is not among the built-in defaults: the calibrations must go there, not to TMPDIR or /tmp."""
    wait_no_jobs_of_ours(pbs)
    site = pbs_site(tmp_path, masters=True,
                    ingest={"workers": 2, "poll_seconds": 0.5, "lost_after_seconds": 2.0, "worker_time_minutes": 20},
                    scheduler={"setup": ['export PBS_JOBFS="$TMPDIR/jobfs"', 'mkdir -p "$PBS_JOBFS"']},
                    node={"scratch_vars": ["PBS_JOBFS"], "scratch_fallback": str(tmp_path / "fallback")})
    deliver(parts_cache, site.path(site.ingest.inbox), "bias", "flat", "sci1", "sci2")
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        ingest.run(drain=True, timeout=400)
        assert ingest.idle()
        tasks = ingest.db.tasks()
        assert tasks and all(t.state == "done" for t in tasks), [(t.ccd, t.state, t.reason) for t in tasks]
        assert len({(t.expid, t.ccd) for t in tasks}) == len(tasks) == 8
        workers = [t.result.worker for t in tasks]
        assert all(w and re.fullmatch(r"\d+\[\d\]\.\S+", w.job_id) for w in workers)  # PBS subjobs ran them
        assert 1 <= len({w.name for w in workers}) <= 2
        # $PBS_JOBFS, under its bracket-free name (pbs_templates/scratch-names.sh): TMPDIR's would end .TMPDIR
        for w in workers:
            cal = Path(w.calibrations)
            assert cal.parent.name.endswith(".PBS_JOBFS") and cal.parent.parent == PBS_PREFIX / "tmp", cal
        for t in tasks:  # each CCD's own scratch too
            assert ".PBS_JOBFS/" in t.result.scratch, t.result.scratch
        assert not (tmp_path / "fallback").exists()
    finally:
        ingest.close()  # drains the workers: each finishes its CCD and exits
    q = WorkQueue(worker_queue_root(site))
    wait_for(lambda: {b.state for b in q.beats()} == {"exited"}, 120, "the workers to exit")
    wait_no_jobs_of_ours(pbs)
    script = next(site.path(site.ingest.jobs_dir).glob("workers-*.pbs")).read_text()
    assert "#PBS -J 0-1" in script and "--scratch-var" not in script  # the workers read it from settings.json
    assert WorkerSettings.read(worker_queue_root(site)).scratch_vars == ["PBS_JOBFS"]


# --------------------------------------------------------------------------- dwfhpc jobs
def test_dwfhpc_jobs_shows_our_pbs_jobs(pbs, tmp_path, capsys):
    site = pbs_site(tmp_path)
    config = write_config(site, tmp_path / "site.yaml")
    script = tmp_path / "held.pbs"
    script.write_text("#!/bin/bash\n#PBS -l select=1:ncpus=1:mem=64mb\n#PBS -l walltime=00:01:00\ntrue\n")
    ours = pbs.run("qsub", "-h", "-J", "0-2", "-N", "dwf-DECam_00000001-p1", "-o", "/dev/null", "-j", "oe",
                   str(script)).stdout.strip()
    other = pbs.run("qsub", "-h", "-N", "someone-else", "-o", "/dev/null", "-j", "oe", str(script)).stdout.strip()
    try:
        assert main(["jobs", "--config", str(config), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        mine = [t for t in data["tasks"] if t["job_id"].split("[")[0] == ours.split("[")[0]]
        assert sorted(t["job_id"] for t in mine) == [ours.replace("[]", f"[{i}]") for i in range(3)]
        assert all(t["name"] == "dwf-DECam_00000001-p1" for t in mine)
        assert not [t for t in data["tasks"] if t["name"] == "someone-else"]
        assert sum(data["counts"].values()) == len(data["tasks"]) >= 3
        assert main(["jobs", "--config", str(config), "--list"]) == 0
        assert ours.replace("[]", "[0]") in capsys.readouterr().out
    finally:
        pbs.run("qdel", ours, other, check=False)


# --------------------------------------------------------------------------- dwfhpc fullred
VISIT = 903334


@pytest.fixture(scope="module")
def hsc_world(tmp_path_factory):
    """One HSC visit (CCDs 40, 41) ingested locally into a state DB, a shared butler repo, the stand-in apptainer."""
    from test_ops import STAND_IN_APPTAINER

    root = tmp_path_factory.mktemp("hsc")
    files = simulate_hsc_visit(root / "raw", visit=VISIT, ccds=[40, 41], seed=3, jobs=1)
    parts = pack_exposure(files, root / "packed", codec="rice", parts=1, jobs=2)
    local = site_for(root)
    deliver({"hsc": [p.tar for p in parts] + [p.manifest for p in parts]}, local.path(local.ingest.inbox), "hsc")
    ingest = Ingest(local, IngestOptions(report=False))
    try:
        ingest.run(drain=True, timeout=240)
        assert ingest.db.counts("tasks") == {"done": 2}
    finally:
        ingest.close()
    repo = root / "hscrepo"
    (repo / "CALIB").mkdir(parents=True)
    (repo / "ref_cats").mkdir()
    standin = root / "bin" / "apptainer"
    standin.parent.mkdir()
    standin.write_text(STAND_IN_APPTAINER.replace("{LOG}", str(root / "standin.jsonl")))
    standin.chmod(0o755)
    return root, {"images": {"deploy_dir": str(root / "images")},
                  "node": {"hscpipe_repo": str(repo), "apptainer": str(standin), "scratch_vars": ["TMPDIR"],
                           "scratch_fallback": str(root / "scratch")}}


def _hsc_config(hsc_world, path: Path, **scheduler) -> Path:
    root, over = hsc_world
    site = site_for(root, "pbs", **over, scheduler={"mem_gb": 1, "time_minutes": 10, **scheduler})
    return write_config(site, path)


def test_fullred_emit_is_accepted_by_qsub_and_runs(pbs, hsc_world, tmp_path, capsys):
    root, _ = hsc_world
    config = _hsc_config(hsc_world, tmp_path / "pbs.yaml")
    script = tmp_path / "fullred.pbs"
    assert main(["fullred", "--visit", str(VISIT), "--config", str(config), "--emit", str(script)]) == 0
    assert "submit with: qsub" in capsys.readouterr().out
    text = script.read_text()
    assert "#PBS -J 0-1" in text and "select=1:ncpus=1:mem=1024mb" in text and "#PBS -l walltime=00:10:00" in text
    job = pbs.run("qsub", str(script)).stdout.strip()
    out_dir = root / "cluster" / "products" / "2026-11-24"
    wait_for(lambda: len(list(out_dir.glob("HSC_0903334/hscpipe-dwf-full/ccd-04?"))) == 2, 180,
             f"fullred job {job} to copy back both CCDs")
    # and submitted by dwfhpc itself (qsub through the scheduler layer), recorded in the state DB
    assert main(["fullred", "--visit", str(VISIT), "--config", str(config), "--rerun", "pbs-test"]) == 0
    line = capsys.readouterr().out
    jid = line.split("submitted as pbs job ")[1].split()[0]
    assert re.fullmatch(r"\d+\[\]\.\S+", jid), line
    with StateDB(root / "cluster" / "state.sqlite") as db:
        assert any(f"submitted as pbs job {jid}" in e["message"] for e in db.events(limit=50))
    wait_for(lambda: len(list(out_dir.glob("HSC_0903334/hscpipe-pbs-test/ccd-04?"))) == 2, 180,
             f"fullred job {jid} to copy back both CCDs")


def test_fullred_on_a_torque_site_renders_torque_syntax_throughout(hsc_world, tmp_path, capsys):
    """Only OpenPBS runs here: a Torque site (pbs_array_syntax t) is checked on what fullred renders and on the
    scheduler its later steps (script name, qsub) use."""
    from dwfhpc.ops.fullred import default_script_path, plan, submit
    from dwfhpc.scheduler import Torque

    config = _hsc_config(hsc_world, tmp_path / "torque.yaml", pbs_array_syntax="t", queue="gstar")
    assert main(["fullred", "--visit", str(VISIT), "--config", str(config), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "#PBS -t 0-1%4" in text and "#PBS -J" not in text and "#PBS -l nodes=1:ppn=1" in text
    assert "select=" not in text and "#PBS -q gstar" in text
    site = load_site(config)
    with StateDB(site.path(site.ingest.state_db)) as db:
        red = plan(site, db, str(VISIT))
    assert isinstance(red.scheduler_of_site(), Torque) and "settings" not in red.as_dict()
    assert default_script_path(site, red).suffix == ".pbs"
    calls = []

    def fake_qsub(argv, timeout):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "77.gstar\n", "")

    assert submit(red, tmp_path / "x.pbs", red.scheduler_of_site().__class__(site.scheduler, call=fake_qsub)) \
        == "77.gstar" and calls == [["qsub", str(tmp_path / "x.pbs")]]


# --------------------------------------------------------------------------- image staging
def test_image_deploy_then_stage_image_pbs_copies_it_checksum_verified(pbs, tmp_path, capsys):
    """`dwfhpc image deploy` puts a (dummy) image on the shared FS; pbs_templates/stage-image.pbs, submitted with
    qsub, copies it to node-local storage on every node of the job (here: this one), checksum-verified."""
    from dwfhpc.atomic import sha256_file
    from dwfhpc.templates import stage_image_script

    dummy = tmp_path / "build" / "dwfhpc.sif"
    dummy.parent.mkdir()
    dummy.write_bytes(bytes(range(256)) * 4000)
    shared = tmp_path / "shared"
    shared.mkdir()
    assert main(["image", "deploy", "dwfhpc", str(dummy), "--to", str(shared)]) == 0
    capsys.readouterr()
    image = shared / "dwfhpc.sif"
    local = tmp_path / "node-local"
    site = pbs_site(tmp_path)
    script = tmp_path / "stage.pbs"
    script.write_text(stage_image_script(site, "pbs", image, local, 1, tmp_path / "logs"))
    (tmp_path / "logs").mkdir()
    job = pbs.run("qsub", str(script)).stdout.strip()
    wait_for(lambda: pbs.jobs(history=True).get(job, {}).get("job_state") == "F", 120, f"stage job {job}")
    info = pbs.jobs(history=True)[job]
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert info.get("Exit_status") == 0, log
    assert sha256_file(local / "dwfhpc.sif") == sha256_file(dummy)
    assert not list(local.glob(".staging.*")) and f"{socket.gethostname()}: {local / 'dwfhpc.sif'} staged" in log
    assert "on 1 node(s)" in log


# --------------------------------------------------------------------------- the site config's vocabulary
def test_g2_config_vocabulary_on_the_real_server(pbs, tmp_path):
    """configs/g2.yaml is a Torque site (-t, nodes=1:ppn=1): this OpenPBS refuses -t, as PBS Pro does. Rendered
    for PBS Pro, its walltime, select/ncpus/mem, -A, -j and -o are accepted; its queue is the site's own; and
    tmp_gb becomes jobfs, a resource only sites that define it (NCI's Gadi) have."""
    from dwfhpc.templates import array_script

    torque = tmp_path / "g2-torque.pbs"
    torque.write_text(array_script(load_site("g2"), "pbs", tmp_path / "spec.json", 3, "dwf-g2-p1", tmp_path))
    refused = pbs.run("qsub", "-h", str(torque), check=False)
    assert refused.returncode != 0 and "-t 0-2%64" in refused.stderr
    site = load_site("g2", overrides={"scheduler": {"pbs_array_syntax": "J"}})
    script = tmp_path / "g2.pbs"
    script.write_text(array_script(site, "pbs", tmp_path / "spec.json", 3, "dwf-g2-p1", tmp_path))
    assert "#PBS -l select=1:ncpus=1:mem=4096mb:jobfs=4096mb" in script.read_text()
    assert "Unknown queue" in pbs.run("qsub", "-h", str(script), check=False).stderr  # gstar is G2's
    site = load_site("g2", overrides={"scheduler": {"pbs_array_syntax": "J", "queue": "workq"}})
    script.write_text(array_script(site, "pbs", tmp_path / "spec.json", 3, "dwf-g2-p1", tmp_path))
    listed = pbs.run("qmgr", "-c", "list resource").stdout
    if "Resource jobfs\n" not in listed:  # (PBS_HOME is kept between starts: defined below by an earlier run)
        assert "Unknown resource: jobfs" in pbs.run("qsub", "-h", str(script), check=False).stderr
        pbs.run("qmgr", "-c", "create resource jobfs type=size, flag=h")  # what a site with jobfs has defined
    pbs.run("qdel", pbs.run("qsub", "-h", str(script)).stdout.strip())
    no_tmp = load_site("g2", overrides={"scheduler": {"pbs_array_syntax": "J", "queue": "workq", "tmp_gb": None}})
    script.write_text(array_script(no_tmp, "pbs", tmp_path / "spec.json", 3, "dwf-g2-p1", tmp_path))
    assert "jobfs=" not in script.read_text()
    pbs.run("qdel", pbs.run("qsub", "-h", str(script)).stdout.strip())
