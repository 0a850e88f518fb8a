"""Dusk never holds science (issue 25 item 2): an earlier night's masters, within an age limit, until tonight's.

Real files throughout: simulated DECam bias, dome flat and science exposures (night 2026-11-24, CCDs 25
and 32) packed into real parts; masters built from the real frames and filed under earlier nights'
folders; node tasks run in-process (as ``dwfhpc node run``); ingest with submitit's LocalExecutor;
``dwfhpc reprocess`` and ``dwfhpc status`` through the command line.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from astropy.io import fits

from dwfhpc.calibrate.masters import build_master, choose_master, find_master, usable_nights
from dwfhpc.cli import main
from dwfhpc.config import CalibrationSettings, load_site
from dwfhpc.ingest import Ingest, IngestOptions
from dwfhpc.layout import master_path, product_paths
from dwfhpc.node import TaskSpec, run_task
from dwfhpc.node.result import TaskResult
from dwfhpc.parts import pack_exposure, read_manifest
from dwfhpc.simulate import simulate_decam_exposure
from dwfhpc.statedb import StateDB

NIGHT = "2026-11-24"
CCDS = [25, 32]
SCI, SCI2 = "DECam_01300003", "DECam_01300004"
THREE_DAYS, EIGHT_DAYS, LATER = "2026-11-21", "2026-11-16", "2026-11-25"
KINDS = (("bias", None), ("flat", "g"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Parts of a bias, a dome flat and two science exposures; masters of every CCD built from the real frames
    (``early/``), to be filed under whichever night a test needs."""
    root = tmp_path_factory.mktemp("fallback")
    raw = root / "raw"
    made = {"bias": simulate_decam_exposure(raw, expnum=1300001, obstype="zero", ccds=CCDS, seed=1, jobs=1),
            "flat": simulate_decam_exposure(raw, expnum=1300002, obstype="dome flat", ccds=CCDS, seed=2, jobs=1),
            "sci": simulate_decam_exposure(raw, expnum=1300003, ccds=CCDS, seed=3, jobs=1),
            "sci2": simulate_decam_exposure(raw, expnum=1300004, ccds=CCDS, seed=4, jobs=1)}
    parts = {k: pack_exposure(f, root / "parts" / k, codec="rice", parts=1, jobs=1)[0] for k, f in made.items()}
    early = root / "early"
    for ccd in CCDS:
        bias = build_master("bias", [made["bias"]], master_path(early, NIGHT, "bias", ccd), ccd=ccd)
        build_master("flat", [made["flat"]], master_path(early, NIGHT, "flat", ccd, "g"), ccd=ccd, bias=bias,
                     filter_="g")
    return root, parts, early / NIGHT


def file_masters(early: Path, masters: Path, night: str) -> None:
    """The prebuilt masters filed as ``night``'s."""
    shutil.copytree(early, masters / night, dirs_exist_ok=True)


def site_for(work: Path, **over):
    o = {"ingest": {"executor": "local", "workers": 0, "poll_seconds": 0.3, "lost_after_seconds": 0.01, "max_jobs": 8,
                    "retry_delay_seconds": 0, "arrival_grace_seconds": 2, "report_every_seconds": 3600,
                    "auto_masters": True, "max_attempts": 1},
         "node": {"require_masters": True, "scratch_vars": ["DWF_TEST_SCRATCH"],
                  "scratch_fallback": str(work / "scratch"), "min_free_gb": 0.01},
         "scheduler": {"array_parallelism": 4}}
    for section, values in over.items():
        o.setdefault(section, {}).update(values)
    return load_site("local", workdir=work, overrides=o)


def deliver(parts, inbox: Path, *names: str) -> None:
    """Tarball first, manifest last, as push does."""
    inbox.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(parts[name].tar, inbox / parts[name].tar.name)
        shutil.copyfile(parts[name].manifest, inbox / parts[name].manifest.name)


def accept(ingest: Ingest, part) -> None:
    """Inbox scans (no scheduler poll: nothing learns a task finished) until ``part`` is verified and queued."""
    deadline = time.monotonic() + 60
    while ingest.db.part(part.tar.name[:-4]) is None:
        assert time.monotonic() < deadline, f"{part.tar.name} not accepted"
        ingest.step(collect=False)


def drain(site) -> None:
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        ingest.run(drain=True, timeout=240)
        assert ingest.idle()
    finally:
        ingest.close()


# --------------------------------------------------------------------------- the rule
def test_age_limit_tonight_first_then_newest_earlier_never_later(tmp_path):
    masters = tmp_path / "masters"
    for night in (EIGHT_DAYS, LATER, "not-a-night"):
        (masters / night).mkdir(parents=True)
        master_path(masters, night, "bias", 25).touch()
    assert CalibrationSettings().masters_max_age_days == 7
    # only an 8-day-old master (and a later night's): nothing with a 7-day limit
    assert choose_master(masters, "bias", NIGHT, 25) is None
    assert choose_master(masters, "bias", NIGHT, 25, max_age_days=8).night == EIGHT_DAYS
    # a 3-day-old one is used, flagged as a fallback; a 5-day-old one is not preferred over it
    for night in (THREE_DAYS, "2026-11-19"):
        (masters / night).mkdir()
        master_path(masters, night, "bias", 25).touch()
    c = choose_master(masters, "bias", NIGHT, 25)
    assert (c.path, c.night, c.fallback) == (master_path(masters, THREE_DAYS, "bias", 25), THREE_DAYS, True)
    assert find_master(masters, "bias", NIGHT, 25) == c.path
    assert usable_nights(masters, NIGHT) == [THREE_DAYS, "2026-11-19"]
    # 0: never fall back
    assert choose_master(masters, "bias", NIGHT, 25, max_age_days=0) is None
    # a later night's never, however large the limit
    assert choose_master(masters, "bias", "2026-11-20", 25, max_age_days=10_000).night == "2026-11-19"
    assert choose_master(masters, "bias", "2026-11-10", 25, max_age_days=10_000) is None
    # tonight's, once there, wins (not a fallback), and only for the CCD it exists for
    (masters / NIGHT).mkdir()
    master_path(masters, NIGHT, "bias", 25).touch()
    c = choose_master(masters, "bias", NIGHT, 25, max_age_days=0)
    assert (c.night, c.fallback) == (NIGHT, False)
    assert choose_master(masters, "bias", NIGHT, 32) is None


# --------------------------------------------------------------------------- provenance, in-process node task
def _run_science(site, parts, name: str, index: int = 0) -> dict:
    spec = TaskSpec.from_site(site, parts["sci"].manifest, parts["sci"].tar, require_masters=True)
    return run_task(spec.write(site.path(site.ingest.specs) / f"{name}.json"), index, write=True)


def test_fallback_masters_recorded_in_the_product_header_and_the_state_db(world, tmp_path):
    root, parts, early = world
    (tmp_path / "scratch").mkdir()
    site = site_for(tmp_path)
    masters = site.path(site.calibration.masters)
    file_masters(early, masters, EIGHT_DAYS)
    # an 8-day-old master with the 7-day default: not used, the task fails naming the rule
    result = _run_science(site, parts, "too-old")
    assert result["status"] == "failed" and result["error_kind"] == "calibration"
    assert f"no master bias for night {NIGHT} CCD 25 (nor any earlier night within 7 days)" in result["error"]
    file_masters(early, masters, LATER)  # a later night's: never
    assert _run_science(site, parts, "later")["status"] == "failed"
    file_masters(early, masters, THREE_DAYS)  # 3 days old: used
    result = _run_science(site, parts, "three-days")
    assert result["status"] == "ok", result["error"]
    assert result["masters"] == {"bias": str(master_path(masters, THREE_DAYS, "bias", 25)),
                                 "flat": str(master_path(masters, THREE_DAYS, "flat", 25, "g")),
                                 "bias_night": THREE_DAYS, "flat_night": THREE_DAYS, "fallback": True}
    cal = product_paths(site.path(site.calibration.products), NIGHT, SCI, 25)["cal"]
    h = fits.getheader(cal, 1)
    assert (h["MBIAS"], h["MBIASNT"], h["MFLAT"], h["MFLATNT"], h["MFALLBK"]) == (
        "bias_25.fits", THREE_DAYS, "flat_g_25.fits", THREE_DAYS, True)
    # through the collector's path into the state DB, and queryable there
    with StateDB(tmp_path / "state.sqlite") as db:
        m = read_manifest(parts["sci"].manifest)
        db.add_part(m, stem=parts["sci"].tar.name[:-4], tar=str(parts["sci"].tar),
                    manifest_path=str(parts["sci"].manifest), t_inbox=time.time(), mem_gb=1, time_minutes=5)
        db.finish(f"{SCI}.p1of1", 25, TaskResult.from_dict(result))
        assert db.task(f"{SCI}.p1of1", 25).result.masters.fallback is True
        rows = db.rows("SELECT ccd, json_extract(result, '$.masters.bias_night') AS n FROM tasks"
                       " WHERE json_extract(result, '$.masters.fallback')")
        assert [(r["ccd"], r["n"]) for r in rows] == [(25, THREE_DAYS)]
    # tonight's, once built, is preferred: not a fallback
    file_masters(early, masters, NIGHT)
    result = _run_science(site, parts, "tonight", 1)
    assert result["status"] == "ok" and result["masters"]["fallback"] is False
    assert result["masters"]["bias_night"] == result["masters"]["flat_night"] == NIGHT
    h = fits.getheader(product_paths(site.path(site.calibration.products), NIGHT, SCI, 32)["cal"], 1)
    assert (h["MBIASNT"], h["MFALLBK"]) == (NIGHT, False)


def test_result_masters_key_is_validated():
    from dwfhpc.node.result import ResultError

    base = {"status": "ok", "version": 1}
    assert TaskResult.from_dict(base).masters is None  # results written before it: nothing recorded
    with pytest.raises(ResultError, match="masters"):
        TaskResult.from_dict({**base, "masters": {"bias": "b.fits", "fallback": "yes"}})


# --------------------------------------------------------------------------- ingest: the hold
def test_science_goes_on_with_earlier_masters_while_tonights_calibrations_run(world, tmp_path):
    root, parts, early = world
    site = site_for(tmp_path)
    file_masters(early, site.path(site.calibration.masters), THREE_DAYS)
    inbox = site.path(site.ingest.inbox)
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        deliver(parts, inbox, "bias")
        accept(ingest, parts["bias"])
        deliver(parts, inbox, "sci")
        accept(ingest, parts["sci"])  # the bias is not final in the DB: tonight's masters are not ready
        db = ingest.db
        assert ingest.masters.blocked_nights() == {NIGHT}
        assert [t.state for t in db.tasks(expid=SCI)] == ["submitted", "submitted"]  # not held
        assert any("science goes on with the masters there are" in e["message"] for e in db.events())
        ingest.run(drain=True, timeout=240)
        assert [t.state for t in db.tasks(expid=SCI)] == ["done", "done"]
    finally:
        ingest.close()


def test_without_usable_masters_science_waits_and_status_says_so(world, tmp_path, capsys):
    root, parts, early = world
    site = site_for(tmp_path)
    file_masters(early, site.path(site.calibration.masters), EIGHT_DAYS)  # too old to be used
    inbox = site.path(site.ingest.inbox)
    ingest = Ingest(site, IngestOptions(report=False))
    try:
        deliver(parts, inbox, "bias")
        accept(ingest, parts["bias"])
        deliver(parts, inbox, "sci")
        accept(ingest, parts["sci"])
        ingest.step(collect=False)
        assert [t.state for t in ingest.db.tasks(expid=SCI)] == ["queued", "queued"]  # held for tonight's
        assert main(["status", "--workdir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert (f"waiting for masters: night {NIGHT} (no masters tonight yet, none within 7 days): "
                f"2 science CCDs") in out
        assert main(["status", "--workdir", str(tmp_path), "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["masters_waiting"] == [{"night": NIGHT, "ccds": 2,
                                         "reason": "no masters tonight yet, none within 7 days"}]
        ingest.request_stop()
    finally:
        ingest.close()


def test_status_names_a_night_without_calibration_frames(world, tmp_path, capsys):
    root, parts, early = world
    site = site_for(tmp_path, calibration={"masters_max_age_days": 0})
    file_masters(early, site.path(site.calibration.masters), THREE_DAYS)  # not used: falling back is off
    with StateDB(site.path(site.ingest.state_db)) as db:
        m = read_manifest(parts["sci"].manifest)
        db.add_part(m, stem=parts["sci"].tar.name[:-4], tar=str(parts["sci"].tar),
                    manifest_path=str(parts["sci"].manifest), t_inbox=time.time(), mem_gb=1, time_minutes=5)
    from dwfhpc.ingest.status import summary

    with StateDB(site.path(site.ingest.state_db)) as db:
        (w,) = summary(db, site=site)["masters_waiting"]
        assert w == {"night": NIGHT, "ccds": 2, "reason": "no calibration frames tonight, no fallback "
                                                          "(calibration.masters_max_age_days is 0)"}
        site7 = site_for(tmp_path)  # with the 7-day default the 3-day-old masters serve: nothing waits
        assert summary(db, site=site7)["masters_waiting"] == []


# --------------------------------------------------------------------------- reprocess with tonight's masters
def test_reprocess_fallback_masters_reruns_exactly_those_ccds_with_tonights(world, tmp_path, capsys):
    root, parts, early = world
    site = site_for(tmp_path)
    masters = site.path(site.calibration.masters)
    file_masters(early, masters, THREE_DAYS)
    inbox = site.path(site.ingest.inbox)
    deliver(parts, inbox, "sci")  # dusk: tonight's calibrations have not come; science goes on at once
    drain(site)
    with StateDB(site.path(site.ingest.state_db)) as db:
        first = db.tasks(expid=SCI)
        assert [t.state for t in first] == ["done", "done"]
        assert all(t.result.masters.fallback and t.result.masters.bias_night == THREE_DAYS for t in first)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(site.model_dump(mode="json", exclude={"source"})))
    cfg = ["--config", str(config)]
    # before tonight's masters exist: nothing is run again (it would use the same fallback)
    assert main(["reprocess", "--night", NIGHT, "--fallback-masters", *cfg]) == 0
    out = capsys.readouterr().out
    assert f"left alone: {SCI}.p1of1 CCD 25: tonight's ({NIGHT}) master bias and flat" in out
    # tonight's bias and flat come and are built; a later exposure uses them
    deliver(parts, inbox, "bias", "flat")
    drain(site)
    deliver(parts, inbox, "sci2")
    drain(site)
    with StateDB(site.path(site.ingest.state_db)) as db:
        assert db.masters_built(NIGHT) is not None
        assert all(t.result.masters.fallback is False for t in db.tasks(expid=SCI2))
    assert main(["reprocess", "--night", NIGHT, "--fallback-masters", "--json", *cfg]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert sorted((r["part"], r["ccd"]) for r in outcome["requeued"]) == [(f"{SCI}.p1of1", c) for c in CCDS]
    assert outcome["selection"] == "fallback-masters" and outcome["tasks"] == {"done": 2}
    with StateDB(site.path(site.ingest.state_db)) as db:
        again = db.tasks(expid=SCI)
        assert [(t.state, t.attempt) for t in again] == [("done", 2), ("done", 2)]
        for t in again:
            assert t.result.masters.to_dict() == {"bias": str(master_path(masters, NIGHT, "bias", t.ccd)),
                                           "flat": str(master_path(masters, NIGHT, "flat", t.ccd, "g")),
                                           "bias_night": NIGHT, "flat_night": NIGHT, "fallback": False}
        assert [t.attempt for t in db.tasks(expid=SCI2)] == [1, 1]  # not selected
    h = fits.getheader(product_paths(site.path(site.calibration.products), NIGHT, SCI, 32)["cal"], 1)
    assert (h["MBIASNT"], h["MFLATNT"], h["MFALLBK"]) == (NIGHT, NIGHT, False)
    # nothing is left to redo
    assert main(["reprocess", "--night", NIGHT, "--fallback-masters", *cfg]) == 0
    assert "nothing to reprocess" in capsys.readouterr().out


def test_reprocess_fallback_masters_refuses_failed(tmp_path, capsys):
    assert main(["reprocess", "--failed", "--fallback-masters", "--workdir", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
