"""Instrument identification by every convention real raw headers use (issue 18.4).

The headers are the real ones shipped in dwfhpc/data/, with keywords deleted or changed the way
older headers lack them: early HSC frames carry no INSTRUME (only TELESCOP, FRAMEID/EXP-ID,
DET-ID, DATA-TYP), older DECam headers no INSTRUME either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

from dwfhpc.errors import FitsFormatError
from dwfhpc.instruments import exposure_info, identify

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "dwfhpc" / "data"
HSC_FILE = DATA / "HSCA90333426.headeronly.fits"
DECAM_FILE = DATA / "DECam_00200666_headers_only.fits"

HSC_EXPECTED = {"instrument": "hsc", "expid": "HSC_0903334", "expnum": 903334, "night": "2013-06-16",
                "obstype": "object", "kind": "science", "ccds": [23]}
DECAM_EXPECTED = {"instrument": "decam", "expid": "DECam_00200666", "expnum": 200666, "night": "2013-04-21",
                  "obstype": "object", "kind": "science"}


def edited(src: Path, dst: Path, delete=(), **set_) -> Path:
    """A copy of ``src`` with primary keywords deleted (``delete``) or set (``KEY=value``, ``_`` for ``-``)."""
    with fits.open(src) as hdul:
        header = hdul[0].header
        for key in delete:
            header.remove(key, ignore_missing=True, remove_all=True)
        for key, value in set_.items():
            header[key.replace("_", "-")] = value
        hdul.writeto(dst)
    return dst


def check(info, expected: dict) -> None:
    got = info.as_dict()
    assert {k: got[k] for k in expected} == expected


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dwfhpc", *args], capture_output=True, text=True, env=env,
                          timeout=120)


# --------------------------------------------------------------------------- HSC
def test_shipped_headers_identify_by_instrume():
    assert identify(fits.getheader(HSC_FILE)) == ("hsc", "INSTRUME='Hyper Suprime-Cam'")
    assert identify(fits.getheader(DECAM_FILE)) == ("decam", "INSTRUME='DECam'")
    check(exposure_info(HSC_FILE), HSC_EXPECTED)
    check(exposure_info(DECAM_FILE), DECAM_EXPECTED)


def test_early_hsc_frame_without_instrume(tmp_path):
    f = edited(HSC_FILE, tmp_path / "HSCA90333426.fits", delete=["INSTRUME"])
    assert identify(fits.getheader(f)) == ("hsc", "TELESCOP='Subaru' and EXP-ID='HSCA90333400'")
    check(exposure_info(f), HSC_EXPECTED)


def test_hsc_without_instrume_through_the_cli(tmp_path, capsys):
    from dwfhpc.cli import main

    f = edited(HSC_FILE, tmp_path / "HSCA90333426.fits", delete=["INSTRUME"])
    proc = cli("info", "--json", str(f))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert {k: got[k] for k in HSC_EXPECTED} == HSC_EXPECTED
    assert main(["info", str(f)]) == 0
    out = capsys.readouterr().out
    assert "instrument hsc" in out and "exposure   HSC_0903334" in out and "night      2013-06-16" in out


def test_hsc_visit_from_frameid_when_exp_id_is_missing_or_zero(tmp_path):
    no_exp = edited(HSC_FILE, tmp_path / "a.fits", delete=["INSTRUME", "EXP-ID"])
    assert identify(fits.getheader(no_exp)) == ("hsc", "TELESCOP='Subaru' and FRAMEID='HSCA90333426'")
    check(exposure_info(no_exp), HSC_EXPECTED)
    zero = edited(HSC_FILE, tmp_path / "b.fits", delete=["INSTRUME"], EXP_ID="HSCA00000000")
    check(exposure_info(zero), HSC_EXPECTED)
    odd = edited(HSC_FILE, tmp_path / "c.fits", delete=["INSTRUME", "EXP-ID"], FRAMEID="HSCA90333526")
    assert exposure_info(odd).expnum == 903334  # odd frame numbers belong to the even visit


def test_hsc_frame_id_alone_is_enough_without_telescop(tmp_path):
    f = edited(HSC_FILE, tmp_path / "a.fits", delete=["INSTRUME", "TELESCOP"])
    assert identify(fits.getheader(f)) == ("hsc", "EXP-ID='HSCA90333400'")


def test_hsc_night_from_mjd_when_date_obs_or_its_time_is_missing(tmp_path):
    no_time = edited(HSC_FILE, tmp_path / "a.fits", delete=["INSTRUME", "UT", "UT-STR"])
    check(exposure_info(no_time), HSC_EXPECTED)
    no_date = edited(HSC_FILE, tmp_path / "b.fits", delete=["INSTRUME", "DATE-OBS", "UT", "UT-STR"])
    info = exposure_info(no_date)
    check(info, HSC_EXPECTED)
    assert info.date_obs.startswith("2013-06-17T13:28:36")  # from MJD-STR
    only_mjd = edited(HSC_FILE, tmp_path / "c.fits", delete=["INSTRUME", "DATE-OBS", "UT", "UT-STR", "MJD-STR"])
    check(exposure_info(only_mjd), HSC_EXPECTED)


def test_bare_date_without_time_or_mjd_is_refused_not_read_as_midnight(tmp_path):
    f = edited(HSC_FILE, tmp_path / "a.fits", delete=["UT", "UT-STR", "MJD", "MJD-STR"])
    with pytest.raises(FitsFormatError) as err:
        exposure_info(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: DATE-OBS='2013-06-17' has no time of day") and "MJD-OBS" in msg


def test_hsc_obstype_from_data_typ(tmp_path):
    f = edited(HSC_FILE, tmp_path / "a.fits", delete=["INSTRUME"], DATA_TYP="BIAS")
    info = exposure_info(f)
    assert (info.obstype, info.kind) == ("bias", "bias")


def test_hsc_frame_id_on_another_telescope_is_not_hsc(tmp_path):
    f = edited(HSC_FILE, tmp_path / "a.fits", delete=["INSTRUME"], TELESCOP="CTIO 4.0-m telescope")
    assert identify(fits.getheader(f)) is None


def test_instrume_decides_when_present(tmp_path):
    f = edited(HSC_FILE, tmp_path / "a.fits", INSTRUME="SuprimeCam")  # EXP-ID still says HSC
    assert identify(fits.getheader(f)) is None
    with pytest.raises(FitsFormatError, match=r"unknown instrument INSTRUME='SuprimeCam'"):
        exposure_info(f)


# --------------------------------------------------------------------------- DECam
def test_older_decam_without_instrume_by_filter_name(tmp_path):
    f = edited(DECAM_FILE, tmp_path / "DECam_00200666.fits", delete=["INSTRUME", "DTINSTRU"])
    assert identify(fits.getheader(f)) == ("decam", "FILTER='z DECam SDSS c0004 9260.0 1520.0'")
    check(exposure_info(f), DECAM_EXPECTED)


def test_decam_without_instrume_by_archive_keyword(tmp_path):
    f = edited(DECAM_FILE, tmp_path / "a.fits", delete=["INSTRUME"])
    assert identify(fits.getheader(f)) == ("decam", "DTINSTRU='decam'")


def test_decam_by_telescope_and_raw_file_name(tmp_path):
    f = edited(DECAM_FILE, tmp_path / "a.fits", delete=["INSTRUME", "DTINSTRU"], FILTER="z")
    assert identify(fits.getheader(f)) == ("decam", "TELESCOP='CTIO 4.0-m telescope' and "
                                                    "FILENAME='DECam_00200666.fits'")
    check(exposure_info(f), DECAM_EXPECTED)


def test_decam_by_telescope_and_detector(tmp_path):
    f = edited(DECAM_FILE, tmp_path / "a.fits", delete=["INSTRUME", "DTINSTRU", "FILENAME", "DTACQNAM"],
               FILTER="z", TELESCOP="Blanco 4m", DETECTOR="DECam")
    assert identify(fits.getheader(f)) == ("decam", "TELESCOP='Blanco 4m' and DETECTOR='DECam'")


def test_decam_expnum_from_file_name_when_expnum_is_missing(tmp_path):
    f = edited(DECAM_FILE, tmp_path / "a.fits", delete=["INSTRUME", "EXPNUM"])
    check(exposure_info(f), DECAM_EXPECTED)
    g = edited(DECAM_FILE, tmp_path / "b.fits", delete=["INSTRUME", "EXPNUM", "FILENAME"])
    assert exposure_info(g).expnum == 200666  # DTACQNAM: /data_local/images/DTS/2013A-0741/DECam_00200666.fits.fz


def test_the_blanco_alone_is_not_decam(tmp_path):
    f = edited(DECAM_FILE, tmp_path / "a.fits", delete=["INSTRUME", "DTINSTRU", "FILENAME", "DTACQNAM"],
               FILTER="z")
    assert identify(fits.getheader(f)) is None


# --------------------------------------------------------------------------- nothing recognisable
def test_unrecognisable_header_names_the_file_and_keywords(tmp_path, capsys):
    from dwfhpc.cli import main

    f = edited(HSC_FILE, tmp_path / "mystery.fits", delete=["INSTRUME", "EXP-ID", "FRAMEID"])
    with pytest.raises(FitsFormatError) as err:
        exposure_info(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: unknown instrument: no INSTRUME")
    for key in ("INSTRUME", "TELESCOP", "EXP-ID", "FRAMEID", "DTINSTRU", "FILTER", "DETECTOR", "FILENAME"):
        assert key in msg
    assert "found TELESCOP='Subaru'" in msg
    assert main(["info", str(f)]) == 2
    assert capsys.readouterr().err.strip() == f"dwfhpc info: error: {msg}"
    proc = cli("info", str(f))
    assert proc.returncode == 2 and proc.stderr.strip() == f"dwfhpc info: error: {msg}"
