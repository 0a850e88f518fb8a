"""Night computation, section parsing and config loading: no external parts needed."""

from datetime import datetime, timezone

import pytest

from dwfhpc.config import load_site
from dwfhpc.errors import ConfigError
from dwfhpc.fitsio_utils import Section
from dwfhpc.night import night_of


def test_night_at_ctio_is_local_date_at_start_of_night():
    # c4d_171113_060340: 2017-11-13 06:03 UTC at CTIO belongs to the night of 2017-11-12
    assert night_of(datetime(2017, 11, 13, 6, 3, 40, tzinfo=timezone.utc), -70.81489).isoformat() == "2017-11-12"
    # evening exposure, same night
    assert night_of(datetime(2017, 11, 13, 0, 30, tzinfo=timezone.utc), -70.81489).isoformat() == "2017-11-12"


def test_night_across_a_month_end():
    assert night_of(datetime(2017, 12, 1, 8, 0, tzinfo=timezone.utc), -70.81489).isoformat() == "2017-11-30"
    assert night_of(datetime(2018, 1, 1, 3, 0, tzinfo=timezone.utc), -70.81489).isoformat() == "2017-12-31"


def test_section_parsing_handles_reversed_ranges():
    s = Section.parse("[2048:1025,4096:1]")
    assert s.x_reversed and s.y_reversed
    assert s.shape == (4096, 1024)
    assert s.slices == (slice(0, 4096), slice(1024, 2048))


def test_shipped_configs_load():
    for name in ("local", "ctio", "ozstar", "g2"):
        assert load_site(name).name == name


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "site.yaml"
    bad.write_text("name: x\npush:\n  streems: 3\n")
    with pytest.raises(ConfigError) as err:
        load_site(bad)
    assert str(bad) in str(err.value) and "push.streems" in str(err.value)


def test_info_errors_are_one_line_naming_the_file(tmp_path, capsys):
    from dwfhpc.cli import main

    text = tmp_path / "notes.fits"
    text.write_text("not a fits file")
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    assert main(["info", str(text)]) == 2
    assert main(["info", str(empty)]) == 2
    assert main(["info", str(tmp_path / "missing.fits")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dwfhpc info: error: {text}: not a FITS file (no SIMPLE card at the start)",
                   f"dwfhpc info: error: {empty}: empty file (0 bytes)",
                   f"dwfhpc info: error: {tmp_path / 'missing.fits'}: no such file"]


def test_info_on_truncated_and_keywordless_files(tmp_path, capsys):
    import numpy as np
    from astropy.io import fits

    from dwfhpc.cli import main

    no_expnum = tmp_path / "noexp.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.int16), header=fits.Header({"INSTRUME": "DECam", "CCDNUM": 5})).writeto(no_expnum)
    assert main(["info", str(no_expnum)]) == 2
    assert "missing header keyword EXPNUM" in capsys.readouterr().err
    data = no_expnum.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[:3000])
    assert main(["info", str(cut)]) == 2
    assert str(cut) in capsys.readouterr().err
    with pytest.raises(Exception, match="EXPNUM"):  # --debug shows the real exception
        main(["--debug", "info", str(no_expnum)])


def test_info_on_real_headers_gives_night_and_expnum(shared_data, capsys):
    from dwfhpc.cli import main

    raw = shared_data / "decam" / "raw_headers" / "DECam_00200666_headers_only.fits"
    cp = next((shared_data / "decam" / "cp_cutouts" / "testcase6").rglob("c4d_171113_061941_ooi_r_ls9.S4.fits"))
    assert main(["info", "--json", str(raw), str(cp)]) == 0
    out = capsys.readouterr().out.splitlines()
    import json

    first, second = (json.loads(x) for x in out)
    assert first["expnum"] == 200666 and first["night"] == "2013-04-21" and len(first["ccds"]) == 62
    assert second["night"] == "2017-11-12"  # CP20171112: local date at the start of the night
