"""Every codec round-trips one real-format CCD: lossless ones bit-exact, lossy ones within their budget."""


import fitsio
import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.codecs import CODEC_NAMES, decompress_member, get_codec
from dwfhpc.errors import DwfError
from dwfhpc.instruments import DECam, read_ccd_headers
from dwfhpc.parts.fidelity import measure, sky_sigma
from dwfhpc.simulate import simulate_decam_exposure


@pytest.fixture(scope="module")
def ccd(tmp_path_factory):
    raw = simulate_decam_exposure(tmp_path_factory.mktemp("raw"), expnum=5150, ccds=[32], seed=2)
    _, _, headers = read_ccd_headers(raw)
    data = fitsio.read(str(raw), ext=headers[0].hdu).astype(np.uint16)
    return headers[0].header, data


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_round_trip_gives_a_complete_single_ccd_fits(name, ccd, tmp_path):
    header, data = ccd
    codec = get_codec(name)
    member = tmp_path / f"m{codec.suffix}"
    codec.compress(header, data, member)
    out = decompress_member(member, tmp_path / "ccd.fits", codec=name, header=header)
    with fits.open(out) as hdul:
        assert len(hdul) == 1
        h = hdul[0].header
        assert h["BITPIX"] == 16 and h["BZERO"] == 32768  # original raw dtype restored
        for key in ("EXPNUM", "FILTER", "OBJECT", "OBSTYPE", "DATE-OBS", "DATASECA", "BIASSECB", "GAINA", "CTYPE1", "CCDNUM"):
            assert h[key] == header[key], key
        assert h["DWFCODEC"] == name
        restored = hdul[0].data
    assert restored.dtype.kind == "u" and restored.shape == data.shape
    geometry = DECam().geometry(fits.getheader(out))  # geometry works on the restored file alone
    if codec.lossless:
        assert np.array_equal(restored, data)
    else:
        added = np.std(restored.astype(float) - data) / sky_sigma(data, geometry)
        assert 0 < added < (0.6 if name == "jp2" else 0.05)


def test_jp2_reaches_the_requested_ratio(ccd, tmp_path):
    header, data = ccd
    for ratio in (5, 10, 20):
        member = tmp_path / f"r{ratio}.jp2"
        get_codec("jp2", ratio=ratio).compress(header, data, member)
        achieved = data.nbytes / member.stat().st_size
        assert abs(achieved / ratio - 1) < 0.10, (ratio, achieved)


def test_rice_q_is_reproducible_and_meets_the_noise_budget(ccd, tmp_path):
    header, data = ccd
    geometry = DECam().geometry(header)
    a, b = tmp_path / "a.fits.fz", tmp_path / "b.fits.fz"
    get_codec("rice-q", qlevel=4).compress(header, data, a)
    get_codec("rice-q", qlevel=4).compress(header, data, b)
    assert a.read_bytes() == b.read_bytes()  # fixed dither seed
    f = measure("rice-q", header, data, geometry, tmp_path, qlevel=4)
    assert f.added_noise <= 0.05 and f.star_flux_error < 1e-3


def test_unknown_codec_is_a_clear_error():
    with pytest.raises(DwfError, match="unknown codec 'lzw'"):
        get_codec("lzw")


def test_damaged_member_is_a_clear_error(ccd, tmp_path):
    header, data = ccd
    member = tmp_path / "m.jp2"
    get_codec("jp2").compress(header, data, member)
    member.write_bytes(member.read_bytes()[:5000])
    with pytest.raises(DwfError, match="cannot decompress jp2 member"):
        decompress_member(member, tmp_path / "x.fits", codec="jp2", header=header)
    assert not (tmp_path / "x.fits").exists()
