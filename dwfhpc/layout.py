"""Names and places of every file the toolkit writes, in one spot.

Parts:     ``<expid>.p<k>of<K>.tar`` and ``<expid>.p<k>of<K>.manifest.json`` (k is 1-based)
Members:   ``<expid>_<ccd:02d><codec suffix>`` inside a part tarball
CCD FITS:  ``<expid>_<ccd:02d>.fits`` (a complete single-CCD raw file)
Products:  ``<products>/<night>/<expid>/<expid>_<ccd:02d>.{cal.fits.fz,mask.fits.fz,cat.fits,qa.json}``
Library:   ``<library>/<night>/<ccd:02d>/bias/<expid>_<ccd:02d>.fits``
           ``<library>/<night>/<ccd:02d>/flat/<filter>/<expid>_<ccd:02d>.fits``
Masters:   ``<masters>/<night>/bias_<ccd:02d>.fits``, ``<masters>/<night>/flat_<filter>_<ccd:02d>.fits``
"""

from __future__ import annotations

import re
from pathlib import Path

PRODUCT_KINDS = ("cal", "mask", "cat", "qa")
_PRODUCT_SUFFIX = {"cal": ".cal.fits.fz", "mask": ".mask.fits.fz", "cat": ".cat.fits", "qa": ".qa.json"}
PART_RE = re.compile(r"^(?P<expid>[A-Za-z0-9_\-]+)\.p(?P<k>\d+)of(?P<n>\d+)$")


def part_stem(expid: str, k: int, n: int) -> str:
    return f"{expid}.p{k}of{n}"


def part_tar_name(expid: str, k: int, n: int) -> str:
    return f"{part_stem(expid, k, n)}.tar"


def manifest_name(expid: str, k: int, n: int) -> str:
    return f"{part_stem(expid, k, n)}.manifest.json"


def manifest_for_tar(tar: Path) -> Path:
    """``X.p1of4.tar`` -> ``X.p1of4.manifest.json`` beside it."""
    return tar.with_name(tar.name[: -len(".tar")] + ".manifest.json")


def tar_for_manifest(manifest: Path) -> Path:
    return manifest.with_name(manifest.name[: -len(".manifest.json")] + ".tar")


def parse_part_stem(stem: str) -> tuple[str, int, int] | None:
    """``DECam_00200666.p2of4`` -> (``DECam_00200666``, 2, 4), or None."""
    m = PART_RE.match(stem)
    return (m["expid"], int(m["k"]), int(m["n"])) if m else None


def ccd_stem(expid: str, ccd: int) -> str:
    return f"{expid}_{ccd:02d}"


def ccd_fits_name(expid: str, ccd: int) -> str:
    return f"{ccd_stem(expid, ccd)}.fits"


def product_dir(products: Path, night: str, expid: str) -> Path:
    return Path(products) / night / expid


def product_paths(products: Path, night: str, expid: str, ccd: int) -> dict[str, Path]:
    d = product_dir(products, night, expid)
    stem = ccd_stem(expid, ccd)
    return {k: d / f"{stem}{_PRODUCT_SUFFIX[k]}" for k in PRODUCT_KINDS}


def product_names(expid: str, ccd: int) -> dict[str, str]:
    stem = ccd_stem(expid, ccd)
    return {k: f"{stem}{_PRODUCT_SUFFIX[k]}" for k in PRODUCT_KINDS}


def library_path(library: Path, night: str, ccd: int, kind: str, filter_: str, expid: str) -> Path:
    """Where a raw calibration CCD is filed: bias by night/CCD, flats also by filter."""
    base = Path(library) / night / f"{ccd:02d}" / kind
    if kind == "flat":
        base = base / (filter_ or "none")
    return base / ccd_fits_name(expid, ccd)


def master_path(masters: Path, night: str, kind: str, ccd: int, filter_: str | None = None) -> Path:
    if kind == "bias":
        return Path(masters) / night / f"bias_{ccd:02d}.fits"
    return Path(masters) / night / f"flat_{filter_ or 'none'}_{ccd:02d}.fits"
