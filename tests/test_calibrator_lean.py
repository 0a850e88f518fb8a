"""The lean calibrator against a frozen copy of the previous one (tests/reference_calibrator.py).

Same inputs through both, on real header layouts: DECam south (CCD 25) and north (CCD 32) CCDs,
whose amplifiers are laid out differently, with master bias, master flat, the shipped bad-pixel
boxes and a reference catalog; and an HSC CCD (four channels). Promised:

* calibrated array and mask: identical (bit for bit);
* mask product: identical; image product: every pixel within step / 2 of the float32 value,
  step = sky sigma / qlevel (quantisation noise sigma / (qlevel sqrt 12) = 0.072 sigma at 4);
* QA: the same sources (count and positions), sky, noise, FWHM, fractions;
* WCS: same status and matches, shift within 1 mas, catalog sky positions within 1e-9 deg.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from dwfhpc.calibrate import build_master, calibrate_array, calibrate_file, read_master
from dwfhpc.calibrate.products import quantize_step, write_image
from dwfhpc.calibrate.qa import PIXSTACK, detect
from dwfhpc.calibrate.rawio import read_master_pixels, read_pixels
from dwfhpc.fitsio_utils import STRUCTURAL
from dwfhpc.instruments import DECam, HSC
from dwfhpc.parts import pack_exposure, unpack_part
from dwfhpc.simulate import simulate_decam_exposure, simulate_hsc_visit

sys.path.insert(0, str(Path(__file__).parent))
import reference_calibrator as ref  # noqa: E402

SOUTH, NORTH = 25, 32
BPM = Path(__file__).resolve().parents[1] / "dwfhpc" / "data" / "bpm_decam"


@pytest.fixture(scope="module")
def decam(tmp_path_factory):
    """Per-CCD raw files as node tasks see them, masters, reference catalog."""
    root = tmp_path_factory.mktemp("lean")
    files: dict[tuple[int, int], Path] = {}
    for expnum, obstype in ((1, "zero"), (2, "dome flat"), (3, "object")):
        raw = simulate_decam_exposure(root / "raw", expnum=expnum, obstype=obstype, ccds=[SOUTH, NORTH], seed=expnum,
                                      jobs=1, catalog_out=root / "refcat.fits" if expnum == 3 else None)
        for part in pack_exposure(raw, root / "parts", codec="rice", parts=1, jobs=1):
            for f in unpack_part(part.tar, root / "ccd"):
                files[(expnum, fits.getheader(f)["CCDNUM"])] = f
    masters = {}
    for ccd in (SOUTH, NORTH):
        bias = build_master("bias", [files[(1, ccd)]], root / f"bias_{ccd}.fits")
        flat = build_master("flat", [files[(2, ccd)]], root / f"flat_{ccd}.fits", bias=bias)
        masters[ccd] = (bias, flat)
    return root, files, masters


@pytest.fixture(scope="module")
def hsc(tmp_path_factory):
    root = tmp_path_factory.mktemp("lean_hsc")
    return simulate_hsc_visit(root, visit=1000, ccds=[23], seed=1, jobs=1)[0]


def _read(path: Path) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        return hdul[1].data.copy(), hdul[1].header.copy()


def _table_header(path: Path) -> fits.Header:
    """The compressed HDU's own (BINTABLE) header: ZCMPTYPE, ZQUANTIZ ..."""
    with fits.open(path, disable_image_compression=True) as hdul:
        return hdul[1].header.copy()


def _compare_products(new, old, image: np.ndarray) -> None:
    """The promises above, for one CCD's two sets of products."""
    # mask: exact
    new_mask, new_mh = _read(new.products["mask"])
    old_mask, _ = _read(old.products["mask"])
    assert new_mask.dtype == old_mask.dtype == np.int16 and np.array_equal(new_mask, old_mask)
    assert _table_header(new.products["mask"])["ZCMPTYPE"] == "PLIO_1" and new_mh["MASKB0"] == 1
    # image: within half a step of the float32 calibrated value, step = sky sigma / qlevel
    new_img, new_h = _read(new.products["cal"])
    old_img, old_h = _read(old.products["cal"])
    step = quantize_step(new.qa["sky_noise"], 4.0)
    table = _table_header(new.products["cal"])
    assert new_h["QSTEP"] == pytest.approx(step) and table["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_2"
    assert table["ZCMPTYPE"] == "RICE_1" and table["ZTILE2"] == 100
    finite = np.isfinite(image)
    err = (new_img - image)[finite]
    assert np.abs(err).max() <= step / 2 * (1 + 1e-4) + 1e-6 * np.abs(image[finite]).max()
    assert np.std(err) == pytest.approx(step / math.sqrt(12), rel=0.05)  # noise = sigma / (q sqrt 12)
    old_err = np.abs(old_img - image)[finite].max()
    assert np.abs(new_img - old_img)[finite].max() <= step / 2 * (1 + 1e-4) + old_err + 1e-3
    # same header cards (values) apart from the compression bookkeeping and the step we add
    skip = {"QSTEP", *STRUCTURAL}
    for card in old_h.cards:
        if card.keyword in skip or card.keyword.startswith("Z") or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        value = new_h[card.keyword]  # floats: astropy writes more digits than fitsio did
        assert value == (pytest.approx(card.value, rel=1e-13) if isinstance(card.value, float) else card.value), \
            card.keyword
    assert len([c for c in new_h.cards if c.keyword not in skip]) == len([c for c in old_h.cards if c.keyword not in skip])
    # QA: same numbers and the same sources
    for key in ("sky", "sky_noise", "fwhm_arcsec", "ellipticity", "saturated_fraction", "bad_fraction"):
        a, b = new.qa[key], old.qa[key]
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-9), key
    assert new.qa["n_stars"] == old.qa["n_stars"]
    assert new.qa["n_sources"] == old.qa["n_sources"]  # tolerance allowed: 2%; measured: identical
    with fits.open(new.products["cat"]) as a, fits.open(old.products["cat"]) as b:
        ca, cb = a[1].data, b[1].data
        assert len(ca) == len(cb)
        assert np.allclose(ca["x"], cb["x"], atol=1e-3) and np.allclose(ca["y"], cb["y"], atol=1e-3)
        if len(ca):
            assert np.abs(ca["ra"] - cb["ra"]).max() < 1e-9 and np.abs(ca["dec"] - cb["dec"]).max() < 1e-9
    # WCS: same result; shift within 1 mas
    for key in ("status", "n_match", "reason"):
        assert new.wcs[key] == old.wcs[key], key
    for key in ("dx", "dy", "rms"):
        if old.wcs[key] is not None:
            assert abs(new.wcs[key] - old.wcs[key]) < 1e-3, key
    assert new_h["CRVAL1"] == pytest.approx(old_h["CRVAL1"], abs=1e-9)
    assert new_h["CRVAL2"] == pytest.approx(old_h["CRVAL2"], abs=1e-9)
    new_qa = json.loads(new.products["qa"].read_text())
    assert set(new_qa) == set(json.loads(old.products["qa"].read_text()))


@pytest.mark.parametrize("ccd", [SOUTH, NORTH])
def test_decam_lean_matches_reference(decam, tmp_path, ccd):
    root, files, (masters) = decam
    bias, flat = masters[ccd]
    raw = files[(3, ccd)]
    kw = dict(bias=bias, flat=flat, bpm=BPM, refcat=root / "refcat.fits")
    new = calibrate_file(raw, tmp_path / "new", **kw)
    old = ref.calibrate_file(raw, tmp_path / "old", **kw)
    # the arrays: identical
    header = fits.getheader(raw)
    b, f = read_master(bias)[0], read_master(flat)[0]
    bpm = ref.bad_pixel_mask(ref.bpm_file(BPM, ccd), DECam().geometry(header).trimmed_shape)
    image, mask = calibrate_array(fits.getdata(raw), header, DECam(), bias=b, flat=f, bpm=bpm)
    old_image, old_mask = ref.calibrate_array(fits.getdata(raw), header, DECam(), bias=b, flat=f, bpm=bpm)
    assert np.array_equal(image, old_image, equal_nan=True) and np.array_equal(mask, old_mask)
    assert (mask & 1).any()  # the bad-pixel boxes are in play
    assert new.wcs["status"] == "ok" and new.qa["n_stars"] > 20
    _compare_products(new, old, image)
    # a second CCD through the same (reused) buffers gives the same products
    again = calibrate_file(raw, tmp_path / "again", **kw)
    for key in ("cal", "mask"):
        assert again.products[key].read_bytes() == new.products[key].read_bytes()


def test_hsc_lean_matches_reference(hsc, tmp_path):
    new = calibrate_file(hsc, tmp_path / "new")
    old = ref.calibrate_file(hsc, tmp_path / "old")
    header = fits.getheader(hsc)
    image, mask = calibrate_array(fits.getdata(hsc), header, HSC())
    old_image, old_mask = ref.calibrate_array(fits.getdata(hsc), header, HSC())
    assert np.array_equal(image, old_image) and np.array_equal(mask, old_mask)
    assert new.qa["n_sources"] > 10
    _compare_products(new, old, image)


def test_fast_readers_match_fitsio_and_astropy(decam):
    root, files, masters = decam
    raw = files[(3, SOUTH)]
    pixels = read_pixels(raw, 0, buffer="raw")
    assert pixels.dtype == np.uint16 and np.array_equal(pixels, fitsio.read(str(raw)))
    assert np.array_equal(pixels, ref.read_pixels(raw, 0))
    flat = read_master_pixels(masters[SOUTH][1], buffer="flat")
    assert flat.dtype == np.float32 and np.array_equal(flat, read_master(masters[SOUTH][1])[0])
    # a tile-compressed exposure goes through fitsio
    mef = root / "raw" / "DECam_00000003.fits.fz"
    with fitsio.FITS(str(mef)) as f:
        hdu = next(i for i in range(1, len(f)) if f[i].read_header().get("CCDNUM") == SOUTH)
    assert np.array_equal(read_pixels(mef, hdu, buffer="raw2"), pixels)


def test_crowded_frame_retries_with_the_large_pixel_stack():
    """More pixels above the threshold than sep's default buffer: detected all the same."""
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 5.0, (1200, 1200)).astype(np.float32)
    side = int(math.sqrt(PIXSTACK)) + 60
    image[200:200 + side, 200:200 + side] += 500.0
    mask = np.zeros(image.shape, np.uint8)
    det = detect(image, mask)
    old = ref.detect(image, mask)
    assert len(det.sources) == len(old.sources) >= 1
    assert np.allclose(det.sources["x"], old.sources["x"]) and np.allclose(det.sources["y"], old.sources["y"])


def test_image_product_without_a_usable_noise_falls_back_to_per_tile_quantisation(tmp_path):
    image = np.random.default_rng(1).normal(50.0, 3.0, (300, 200)).astype(np.float32)
    write_image(tmp_path / "a.fits.fz", image, fits.Header({"OBJECT": "x"}), 4.0, noise=float("nan"))
    with fits.open(tmp_path / "a.fits.fz") as hdul:
        assert "QSTEP" not in hdul[1].header and hdul[1].header["OBJECT"] == "x"
        assert np.abs(hdul[1].data - image).max() < 3.0 / 4.0  # step ~ noise / 4 per tile
    assert quantize_step(0.0, 4.0) is None and quantize_step(8.0, 4.0) == 2.0
