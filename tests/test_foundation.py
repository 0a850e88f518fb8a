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
