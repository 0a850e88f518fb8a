"""Operator commands on a real state DB: ``dwfhpc report``, ``dwfhpc reprocess``, ``dwfhpc fullred``.

The module fixture ingests real simulated parts (DECam exposures on two nights and an HSC visit;
the ingest path is instrument-blind, and the embedded calibrator calibrates HSC CCDs from their
channel keywords) with submitit's LocalExecutor, then a science exposure with ``require_masters``
on and no calibration frames anywhere, whose CCDs really fail ("no master bias").

fullred: hscPipe cannot be installed here (a multi-GB stack) and there is no hscpipe image, so the
rendered script runs with ``node.apptainer`` pointing at a STAND-IN (written below) that records
its argv, checks every absolute path it is given is inside a ``--bind``, and writes a file where
processCcd would write its calibrated exposure. Everything else is real: the script (bash), the
raw CCD it stages out of the real part, the private butler repo it lays out, the copy-back, and on
the real Slurm (``slurm_cluster``) ``sbatch --test-only`` and a submitted array that runs the
script for each CCD. PBS: no PBS server exists here (no Debian package of a PBS/Torque server), so
the PBS twin is checked as text and by ``bash -n`` for both array syntaxes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from astropy.io import fits

from dwfhpc.cli import main
from dwfhpc.config import load_site
from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.parts import pack_exposure
from dwfhpc.simulate import simulate_decam_exposure, simulate_hsc_visit
from dwfhpc.statedb import StateDB

NIGHT1, NIGHT2 = "2026-11-24", "2026-11-25"
VISIT = 903334  # HSC visit, CCDs 40 and 41
SCI_A, SCI_F, LATE, NEW = "DECam_01200001", "DECam_01200003", "DECam_01200002", "DECam_01200006"

STAND_IN_APPTAINER = f"""#!{sys.executable}
# STAND-IN for `apptainer exec <hscpipe image> ...` (no hscPipe image can exist here): records argv, refuses an
# absolute path outside the binds, checks ingestImages gets a real raw HSC file, and writes a file where processCcd
# writes its calibrated exposure (rerun/<rerun>/<field>/<filter>/corr/CORR-<visit>-<ccd>.fits).
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
assert argv[0] == "exec", argv
i, binds, pwd = 1, [], None
while argv[i].startswith("--"):
    if argv[i] == "--bind":
        binds += [b.split(":")[0] for b in argv[i + 1].split(",")]
    if argv[i] == "--pwd":
        pwd = argv[i + 1]
    i += 2
image, command = argv[i], argv[i + 1:]
for a in command:
    for piece in a.split("="):
        if piece.startswith("/") and not any(piece == b or piece.startswith(b + "/") for b in binds):
            sys.exit(f"stand-in apptainer: {{piece}} is not inside a bind")
record = {{"image": image, "binds": binds, "pwd": pwd, "command": command}}
if command[0] == "ingestImages.py":
    repo, raw = Path(command[1]), Path(command[2])
    record["raw_exists"] = raw.is_file()
    record["repo"] = sorted(p.name for p in repo.iterdir())
    record["calib_target"] = os.readlink(repo / "CALIB")
if command[0] == "processCcd.py":
    repo, rerun = Path(command[1]), command[command.index("--rerun") + 1]
    ident = dict(a.split("=") for a in command if a.startswith(("visit=", "ccd=")))
    out = repo / "rerun" / rerun / "DWF_HSC" / "HSC-r" / "corr"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"CORR-{{int(ident['visit']):07d}}-{{int(ident['ccd']):03d}}.fits").write_text("stand-in output")
with open(Path(os.environ.get("STANDIN_LOG", "{{LOG}}")), "a") as f:
    f.write(json.dumps(record) + "\\n")
"""


@dataclass
class World:
    root: Path
    plain: Path  # config: require_masters off (as the night was first ingested)
    masters: Path  # config: require_masters on, masters built automatically
    hsc: Path  # config for fullred: hscpipe repo, images folder, the stand-in apptainer
    packed: dict[str, list[Path]]  # name -> tarballs as packed (manifests beside them)
    standin_log: Path

    def db(self) -> StateDB:
        return StateDB(self.root / "cluster" / "state.sqlite")


def _site(work: Path, **over):
    o = {"ingest": {"executor": "local", "workers": 0, "poll_seconds": 0.3, "lost_after_seconds": 0.01,
                    "max_jobs": None, "arrival_grace_seconds": 2, "report_every_seconds": 3600, "max_attempts": 2,
                    "auto_masters": False},
         "node": {"require_masters": False}, "scheduler": {"array_parallelism": 4}}
    for section, values in over.items():
        o.setdefault(section, {}).update(values)
    return load_site("local", workdir=work, overrides=o)


def _config(site, path: Path) -> Path:
    path.write_text(yaml.safe_dump(site.model_dump(mode="json", exclude={"source"})))
    return path


def _deliver(world_packed: dict[str, list[Path]], inbox: Path, *names: str) -> None:
    """Tarball first, manifest last, as push does."""
    inbox.mkdir(parents=True, exist_ok=True)
    for name in names:
        for tar in world_packed[name]:
            shutil.copyfile(tar, inbox / tar.name)
            manifest = tar.with_name(tar.name[:-4] + ".manifest.json")
            shutil.copyfile(manifest, inbox / manifest.name)


def _drain(site) -> None:
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        ingest.run(drain=True, timeout=240)
        assert ingest.idle()
    finally:
        ingest.close()


def _snapshot(world: World) -> tuple:
    with world.db() as db:
        tasks = [(t.part, t.ccd, t.state, t.attempt) for t in db.tasks()]
        subs = len(db.submissions())
    inbox = sorted(p.name for p in (world.root / "cluster" / "inbox").glob("*"))
    return tasks, subs, inbox


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("ops")
    raw, packed_dir = root / "raw", root / "packed"
    plan = {"sciA": (lambda: simulate_decam_exposure(raw, expnum=1200001, ccds=[25, 32], seed=1, jobs=1), 2),
            "late": (lambda: simulate_decam_exposure(raw, expnum=1200002, ccds=[25], seed=2, jobs=1,
                                                     date_obs="2026-11-26T03:00:00"), 1),
            "hsc": (lambda: simulate_hsc_visit(raw / "hsc", visit=VISIT, ccds=[40, 41], seed=3, jobs=1), 1),
            "sciF": (lambda: simulate_decam_exposure(raw, expnum=1200003, ccds=[25, 32], seed=4, jobs=1), 1),
            "bias": (lambda: simulate_decam_exposure(raw, expnum=1200004, obstype="zero", ccds=[25, 32], seed=5,
                                                     jobs=1), 1),
            "flat": (lambda: simulate_decam_exposure(raw, expnum=1200005, obstype="dome flat", ccds=[25, 32],
                                                     seed=6, jobs=1), 1),
            "new": (lambda: simulate_decam_exposure(raw, expnum=1200006, ccds=[32], seed=7, jobs=1), 1)}
    packed = {name: [p.tar for p in pack_exposure(make(), packed_dir / name, codec="rice", parts=k, jobs=2)]
              for name, (make, k) in plan.items()}
    work = root
    plain = _site(work)
    masters = _site(work, node={"require_masters": True}, ingest={"auto_masters": True})
    inbox = plain.path(plain.ingest.inbox)
    _deliver(packed, inbox, "sciA", "late", "hsc")
    _drain(plain)
    _deliver(packed, inbox, "sciF")  # require_masters on, no calibration frames anywhere: it really fails
    _drain(masters)
    # fullred: a shared butler repo (CALIB, ref_cats), an images folder, and the stand-in apptainer
    repo = root / "hscrepo"
    (repo / "CALIB").mkdir(parents=True)
    (repo / "ref_cats").mkdir()
    log = root / "standin.jsonl"
    standin = root / "bin" / "apptainer"
    standin.parent.mkdir()
    standin.write_text(STAND_IN_APPTAINER.replace("{LOG}", str(log)))
    standin.chmod(0o755)
    hsc = _site(work, images={"deploy_dir": str(root / "images")},
                node={"hscpipe_repo": str(repo), "apptainer": str(standin), "scratch_vars": ["DWF_TEST_SCRATCH"],
                      "scratch_fallback": str(root / "scratch")})
    w = World(root, _config(plain, root / "plain.yaml"), _config(masters, root / "masters.yaml"),
              _config(hsc, root / "hsc.yaml"), packed, log)
    with w.db() as db:
        assert {t.state for t in db.tasks(expid=SCI_F)} == {"failed"}
        assert {t.state for t in db.tasks() if t.expid != SCI_F} == {"done"}
    return w


# --------------------------------------------------------------------------- report
def test_report_writes_every_night_with_plots(world, tmp_path, capsys):
    assert main(["report", "--config", str(world.plain), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["night"] for r in out["reports"]] == [NIGHT1, NIGHT2]
    for r in out["reports"]:
        page = Path(r["path"]).read_text()
        assert Path(r["path"]).parent == world.root / "reports" and page.count("<svg") == 4
    night1 = Path(out["reports"][0]["path"]).read_text()
    assert SCI_A in night1 and "HSC_0903334" in night1 and "no master bias" in night1  # the failure and its reason
    assert main(["report", "--config", str(world.plain), "--night", NIGHT2, "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / f"night-{NIGHT2}.html")
    assert "<svg" in (tmp_path / f"night-{NIGHT2}.html").read_text() and len(list(tmp_path.iterdir())) == 1


def test_report_refuses_an_unknown_night_and_a_missing_state_db(world, tmp_path, capsys):
    assert main(["report", "--config", str(world.plain), "--night", "1999-01-01"]) == 2
    err = capsys.readouterr().err
    assert f"no data for night 1999-01-01 (nights: {NIGHT1}, {NIGHT2})" in err and len(err.splitlines()) == 1
    assert main(["report", "--workdir", str(tmp_path)]) == 2
    assert "state.sqlite: no state DB here" in capsys.readouterr().err
    assert not (tmp_path / "cluster" / "state.sqlite").exists()  # asking did not create one


# --------------------------------------------------------------------------- reprocess: errors
def test_reprocess_errors_are_clear_and_change_nothing(world, tmp_path, capsys):
    before = _snapshot(world)
    cfg = ["--config", str(world.plain)]
    good = world.packed["sciA"][0]
    missing = tmp_path / "DECam_01200001.p9of9.tar"
    (tmp_path / "a.list").write_text(f"# comment\n{good}\n{missing}\n")
    assert main(["reprocess", str(tmp_path / "a.list"), *cfg]) == 2
    assert f"{missing}: tarball does not exist" in capsys.readouterr().err
    # a corrupt copy (one flipped byte, same size) beside its manifest: the good one listed first is not touched
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / good.name
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    shutil.copyfile(good.with_name(good.name[:-4] + ".manifest.json"), bad_dir / (good.name[:-4] + ".manifest.json"))
    (tmp_path / "b.list").write_text(f"{world.packed['sciA'][1]}\n{bad}  # the damaged one\n")
    assert main(["reprocess", str(tmp_path / "b.list"), *cfg]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "does not match the manifest" in err
    assert main(["reprocess", "--night", "1999-01-01", *cfg]) == 2
    assert f"no data for night 1999-01-01 (nights: {NIGHT1}, {NIGHT2})" in capsys.readouterr().err
    assert main(["reprocess", "--night", NIGHT2, "--exposure", SCI_A, *cfg]) == 2
    assert f"no exposure {SCI_A} of night {NIGHT2} in the state DB (exposures: {LATE})" in capsys.readouterr().err
    assert main(["reprocess", "--exposure", "7", *cfg]) == 2
    assert f"no exposure 7 in the state DB (exposures: {SCI_A}, {LATE}, {SCI_F}" in capsys.readouterr().err
    assert main(["reprocess", *cfg]) == 2
    assert "nothing selected" in capsys.readouterr().err
    assert main(["reprocess", str(tmp_path / "a.list"), "--failed", *cfg]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["reprocess", str(tmp_path / "nope.list"), *cfg]) == 2
    assert "nope.list: reprocess list does not exist" in capsys.readouterr().err
    assert _snapshot(world) == before


# --------------------------------------------------------------------------- reprocess: real runs
def test_reprocess_failed_counts_attempts_from_the_reprocess_then_reruns_to_done(world, capsys):
    with world.db() as db:
        failed = db.tasks(expid=SCI_F)
    assert [(t.state, t.attempt) for t in failed] == [("failed", 2)] * 2  # used its 2 attempts
    assert all("no master bias" in t.reason for t in failed)
    cfg = ["--config", str(world.masters)]
    # still no masters: the reprocess runs them again with a budget of max_attempts counted from it (attempts 3, 4)
    assert main(["reprocess", "--failed", *cfg]) == 1
    out = capsys.readouterr().out
    assert f"queued again: {SCI_F}.p1of1 CCD 25 (attempt 3, was failed), 32 (attempt 3, was failed)" in out
    assert "tasks: failed 2" in out
    with world.db() as db:
        assert [(t.state, t.attempt) for t in db.tasks(expid=SCI_F)] == [("failed", 4)] * 2
    # the night's bias and flat arrive; ingest files them and builds the masters
    site = load_site(world.masters)
    _deliver(world.packed, site.path(site.ingest.inbox), "bias", "flat")
    assert main(["ingest", *cfg, "--drain", "--no-report"]) == 1  # 1: the DB still holds the failed CCDs
    capsys.readouterr()
    with world.db() as db:
        assert db.masters_built(NIGHT1) is not None
    assert main(["reprocess", "--failed", *cfg]) == 0
    out = capsys.readouterr().out
    assert "reprocess: " in out and out.strip().endswith("tasks: done 2")
    with world.db() as db:
        tasks = db.tasks(expid=SCI_F)
        assert [(t.state, t.attempt, t.reason) for t in tasks] == [("done", 5, None)] * 2
        assert db.part(f"{SCI_F}.p1of1").state == "done" and db.count_tasks("failed", "lost") == 0
        assert any("reprocess requested" in e["message"] for e in db.events(limit=200))
    products = world.root / "cluster" / "products" / NIGHT1 / SCI_F
    assert sorted(p.name for p in products.glob("*.cal.fits.fz")) == [f"{SCI_F}_{c}.cal.fits.fz" for c in (25, 32)]
    assert (world.root / "reports" / f"night-{NIGHT1}.html").exists()


def test_reprocess_list_reruns_a_stored_tarball_and_restores_a_deleted_one(world, tmp_path, capsys):
    with world.db() as db:
        p1, p2 = db.part(f"{SCI_A}.p1of2"), db.part(f"{SCI_A}.p2of2")
        before = {t.ccd: t for t in db.tasks(expid=SCI_A)}
        n_subs = len(db.submissions())
    products = world.root / "cluster" / "products" / NIGHT1 / SCI_A
    mtimes = {p.name: p.stat().st_mtime_ns for p in products.glob("*.cal.fits.fz")}
    Path(p2.tar).unlink()  # the parts-store copy a task needs is gone; the list names the packed original
    original = next(t for t in world.packed["sciA"] if t.name == Path(p2.tar).name)
    shutil.copytree(original.parent, tmp_path / "from-telescope")
    listing = tmp_path / "redo.list"
    listing.write_text(f"# tarballs to run again\n{p1.tar}\n\n"
                       f"from-telescope/{original.name}   # relative to the list\n")
    assert main(["reprocess", str(listing), "--config", str(world.plain)]) == 0
    out = capsys.readouterr().out
    assert f"parts-store copy restored: {SCI_A}.p2of2" in out and out.strip().endswith("tasks: done 2")
    with world.db() as db:
        after = {t.ccd: t for t in db.tasks(expid=SCI_A)}
        assert len(db.submissions()) == n_subs + 2
    assert {c: (t.state, t.attempt) for c, t in after.items()} == {c: ("done", before[c].attempt + 1) for c in before}
    assert all(after[c].t_finished > before[c].t_finished for c in before)
    assert Path(p2.tar).read_bytes() == original.read_bytes()
    assert all(p.stat().st_mtime_ns > mtimes[p.name] for p in products.glob("*.cal.fits.fz"))  # really rewritten


def test_reprocess_list_sends_an_unknown_part_through_the_inbox(world, tmp_path, capsys):
    tar = world.packed["new"][0]
    (tmp_path / "new.list").write_text(f"{tar}\n")
    assert main(["reprocess", str(tmp_path / "new.list"), "--config", str(world.plain), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["delivered"] == [str(tar)] and out["requeued"] == [] and out["tasks"] == {"done": 1}
    assert out["submitted"] and out["waited"] and not out["ingest_running"]
    assert tar.is_file()  # copied, the operator's file stays where it was
    with world.db() as db:
        part = db.part(f"{NEW}.p1of1")
        assert part.state == "done" and Path(part.tar).parent == world.root / "cluster" / "parts" / NIGHT1
    assert not any((world.root / "cluster" / "inbox").iterdir())


def test_reprocess_leaves_submission_to_a_running_ingest(world, capsys):
    site = load_site(world.plain)
    ingest = Ingest(site, IngestOptions(report=False))  # holds the state DB's lock, as `dwfhpc ingest` does
    try:
        with world.db() as db:
            (before,) = db.tasks(expid=LATE)
        assert main(["reprocess", "--night", NIGHT2, "--config", str(world.plain)]) == 0
        out = capsys.readouterr().out
        assert "an ingest is running on this state DB: it will submit them at its next poll" in out
        assert "tasks: queued 1" in out
        ingest.run(drain=True, timeout=120)
        (after,) = ingest.db.tasks(expid=LATE)
        assert (after.state, after.attempt) == ("done", before.attempt + 1)
    finally:
        ingest.close()


def test_reprocess_json_with_no_submit_then_submit(world, capsys):
    cfg = ["--config", str(world.plain), "--json"]
    assert main(["reprocess", "--exposure", LATE.split("_")[1], "--no-submit", *cfg]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selection"] == "exposure" and [r["ccd"] for r in out["requeued"]] == [25]
    assert not out["submitted"] and out["tasks"] == {"queued": 1}
    assert main(["reprocess", "--night", NIGHT2, *cfg]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["skipped"] == [{"part": f"{LATE}.p1of1", "ccd": 25, "reason": "already queued"}]
    assert out["submitted"] and out["tasks"] == {"done": 1}
    assert "reprocess: done 1" in captured.err  # progress on stderr keeps stdout JSON


# --------------------------------------------------------------------------- fullred
def _run_task(script: Path, index: int, world: World) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index), "DWF_TEST_SCRATCH": str(world.root / "scratch"),
           "STANDIN_LOG": str(world.standin_log)}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)


def _log(world: World) -> list[dict]:
    if not world.standin_log.exists():
        return []
    return [json.loads(line) for line in world.standin_log.read_text().splitlines()]


def test_fullred_script_stages_the_ccd_runs_hscpipe_in_the_image_and_copies_back(world, tmp_path, capsys):
    script = tmp_path / "fullred.sbatch"
    assert main(["fullred", "--visit", str(VISIT), "--config", str(world.hsc), "--emit", str(script), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ccds"] == [40, 41] and info["expid"] == "HSC_0903334" and info["job_id"] is None
    assert info["image"] == str(world.root / "images" / "hscpipe.sif") and info["rerun"] == "dwf-full"
    text = script.read_text()
    assert "#SBATCH --array=0-1%4" in text and "#SBATCH --job-name=dwf-fullred-903334" in text
    assert "#SBATCH --mem=2048M" in text and "#SBATCH --time=00:15:00" in text  # the site's scheduler settings
    assert "exec --bind" in text and "processCcd.py" in text and "visit=903334" in text and 'ccd="${ccd}"' in text
    subprocess.run(["bash", "-n", str(script)], check=True)
    world.standin_log.unlink(missing_ok=True)
    done = _run_task(script, 1, world)
    assert done.returncode == 0, done.stderr
    ingest_call, process_call = _log(world)
    scratch = ingest_call["pwd"]
    assert Path(scratch).parent == world.root / "scratch" and not Path(scratch).exists()  # cleaned up
    assert ingest_call["command"][:3] == ["ingestImages.py", f"{scratch}/repo", f"{scratch}/raw/HSCA90333441.fits"]
    assert ingest_call["raw_exists"] and ingest_call["repo"] == ["CALIB", "_mapper", "ref_cats"]
    assert ingest_call["calib_target"] == str(world.root / "hscrepo" / "CALIB")
    assert ingest_call["binds"] == [scratch, str(world.root / "hscrepo")]
    assert process_call["command"] == ["processCcd.py", f"{scratch}/repo", "--rerun", "dwf-full", "--id",
                                       "visit=903334", "ccd=41", "--configfile", f"{scratch}/processCcd_dwf.py"]
    out = Path(info["out_dir"]) / "ccd-041"
    assert out == world.root / "cluster" / "products" / NIGHT1 / "HSC_0903334" / "hscpipe-dwf-full" / "ccd-041"
    assert (out / "DWF_HSC" / "HSC-r" / "corr" / "CORR-0903334-041.fits").is_file()
    assert not list(out.parent.glob(".ccd-*"))
    # the staging step on its own: the real raw CCD, under the name ingestImages expects
    with world.db() as db:
        part = db.part("HSC_0903334.p1of1")
    dest = tmp_path / "stage"
    staged = subprocess.run([sys.executable, "-m", "dwfhpc.ops.fullred", "stage", part.tar, part.manifest, "40",
                             str(dest)], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(staged) == dest / "HSCA90333440.fits"
    assert fits.getheader(staged)["DET-ID"] == 40 and fits.getheader(staged)["EXP-ID"] == "HSCA90333400"
    assert _run_task(script, 2, world).returncode == 2  # an index past the visit's CCDs


@pytest.mark.slurm
def test_fullred_array_is_accepted_and_runs_on_the_real_slurm(slurm_cluster, world, tmp_path, capsys):
    script = tmp_path / "fullred.sbatch"
    assert main(["fullred", "--visit", "HSC_0903334", "--config", str(world.hsc), "--emit", str(script)]) == 0
    capsys.readouterr()
    check = slurm_cluster.run("sbatch", "--test-only", str(script), check=False)
    assert check.returncode == 0 and "to start at" in check.stderr, check.stderr
    out_dir = world.root / "cluster" / "products" / NIGHT1 / "HSC_0903334" / "hscpipe-slurm-test"
    assert main(["fullred", "--visit", str(VISIT), "--config", str(world.hsc), "--rerun", "slurm-test"]) == 0
    line = capsys.readouterr().out.strip()
    job = line.split("submitted as slurm job ")[1].split()[0]
    assert job.isdigit()
    with world.db() as db:
        assert any(f"submitted as slurm job {job}" in e["message"] for e in db.events(limit=50))
    deadline = time.monotonic() + 180
    while not all((out_dir / f"ccd-{c:03d}").is_dir() for c in (40, 41)):
        assert time.monotonic() < deadline, f"job {job} did not finish; logs in {world.root / 'cluster' / 'jobs'}"
        time.sleep(0.5)
    while slurm_cluster.run("squeue", "-h", "-j", job, check=False).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.3)
    logs = sorted((world.root / "cluster" / "jobs" / "fullred").glob(f"dwf-fullred-903334-{job}_*.out"))
    assert len(logs) == 2 and all("dwfhpc fullred: HSC_0903334 CCD" in p.read_text() for p in logs)


@pytest.mark.parametrize("syntax,array_line", [("J", "#PBS -J 0-1"), ("t", "#PBS -t 0-1%4")])
def test_fullred_pbs_script_for_both_array_syntaxes(world, tmp_path, capsys, syntax, array_line):
    """No PBS server runs here: the PBS twin is checked as text and by `bash -n`."""
    site = load_site(world.hsc, overrides={"scheduler": {"pbs_array_syntax": syntax, "queue": "gstar",
                                                         "account": "p025"}})
    config = _config(site, tmp_path / "pbs.yaml")
    assert main(["fullred", "--visit", str(VISIT), "--config", str(config), "--scheduler", "pbs", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert array_line in text and ("#PBS -t" in text) == (syntax == "t") and ("#PBS -J" in text) == (syntax == "J")
    assert "#PBS -q gstar" in text and "#PBS -A p025" in text and "#PBS -N dwf-fullred-903334" in text
    assert 'i="${PBS_ARRAY_INDEX:-${PBS_ARRAYID:-0}}"' in text and "SLURM" not in text
    assert ("select=1:ncpus=1:mem=2048mb" in text) == (syntax == "J")
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_fullred_errors_name_the_problem(world, tmp_path, capsys):
    cfg = ["--config", str(world.hsc)]
    for wanted in ("123456", "1200001"):  # not a visit; a DECam exposure
        assert main(["fullred", "--visit", wanted, *cfg, "--dry-run"]) == 2
        assert f"no HSC visit {wanted} in the state DB (visits: {VISIT})" in capsys.readouterr().err
    assert main(["fullred", "--visit", str(VISIT), "--config", str(world.plain), "--dry-run"]) == 2
    assert "needs node.hscpipe_repo" in capsys.readouterr().err
    no_image = _config(load_site(world.hsc, overrides={"images": {"deploy_dir": None}}), tmp_path / "noimage.yaml")
    assert main(["fullred", "--visit", str(VISIT), "--config", str(no_image), "--dry-run"]) == 2
    assert "no hscpipe image: set images.deploy_dir" in capsys.readouterr().err
    missing = str(tmp_path / "x.py")
    assert main(["fullred", "--visit", str(VISIT), *cfg, "--dry-run", "--processccd-config", missing]) == 2
    assert "x.py: processCcd config file does not exist" in capsys.readouterr().err
