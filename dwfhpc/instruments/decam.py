"""DECam: 62 science CCDs (CCDNUM 1-62, DETPOS S1..N31); 8 focus/guide chips never processed.

Geometry is read from each extension header (DATASECA/B, BIASSECA/B, CCDSECA/B), because
north and south CCDs, and readout eras, differ.
"""

from __future__ import annotations

import re
from pathlib import Path

from astropy.io import fits

from ..errors import FitsFormatError
from ..fitsio_utils import Section, require
from .base import Amplifier, CCDGeometry, Instrument

RAW_NAME = re.compile(r"^(DECam_(?P<expnum>\d{8})|c4d_\d{6}_\d{6}_ori)\.fits(\.fz)?\Z")
GEOMETRY_KEYS = ("DATASECA", "DATASECB", "BIASSECA", "BIASSECB", "CCDSECA", "CCDSECB")
_KIND = {"object": "science", "zero": "bias", "bias": "bias", "dome flat": "flat", "flat": "flat", "dark": "dark"}


_NAME_EXPNUM = re.compile(r"^DECam_(\d{8})\.fits(\.fz)?\Z")


def _expnum_from_name(name: str) -> int | None:
    """The exposure number in a raw file name or path (``.../DECam_00200666.fits.fz`` -> 200666)."""
    m = _NAME_EXPNUM.match(name.strip().rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


class DECam(Instrument):
    name = "decam"
    pixel_scale = 0.263
    # CTIO is 70.81 deg WEST. Raw headers carry OBS-LONG = +70.81489 labelled "east": never trust it.
    longitude = -70.81489
    science_ccds = tuple(range(1, 63))
    bad_ccds = (61,)

    id_keywords = ("INSTRUME", "DTINSTRU", "FILTER", "TELESCOP", "DETECTOR", "FILENAME", "DTACQNAM")

    @classmethod
    def identify(cls, header: fits.Header) -> str | None:
        """``INSTRUME = 'DECam'``; without INSTRUME, the conventions of older and archive headers:

        * ``DTINSTRU = 'decam'`` (NOAO archive keywords);
        * ``FILTER`` naming DECam (``'z DECam SDSS c0004 9260.0 1520.0'``), as astro_metadata_translator does;
        * ``TELESCOP`` the Blanco (``'CTIO 4.0-m telescope'``) with ``DETECTOR = 'DECam'`` or a
          ``DECam_NNNNNNNN`` raw file name in ``FILENAME`` / ``DTACQNAM`` (the Blanco alone is not
          enough: it carried Mosaic-2 before DECam).
        """
        instrume = cls._text(header, "INSTRUME")
        if instrume is not None:
            return f"INSTRUME={instrume!r}" if instrume.lower() == "decam" else None
        dtinstru = cls._text(header, "DTINSTRU")
        if dtinstru is not None and dtinstru.lower() == "decam":
            return f"DTINSTRU={dtinstru!r}"
        filter_ = cls._text(header, "FILTER")
        if filter_ is not None and "DECam" in filter_.split():
            return f"FILTER={filter_!r}"
        telescope = cls._text(header, "TELESCOP") or ""
        if "blanco" in telescope.lower() or "ctio 4.0" in telescope.lower():
            detector = cls._text(header, "DETECTOR")
            if detector is not None and detector.lower() == "decam":
                return f"TELESCOP={telescope!r} and DETECTOR={detector!r}"
            for key in ("FILENAME", "DTACQNAM"):
                name = cls._text(header, key)
                if name is not None and _expnum_from_name(name) is not None:
                    return f"TELESCOP={telescope!r} and {key}={name!r}"
        return None

    def expnum(self, header, path=None) -> int:
        """EXPNUM; without it, the number in a ``DECam_NNNNNNNN`` raw file name (FILENAME, DTACQNAM)."""
        if "EXPNUM" not in header:
            for key in ("FILENAME", "DTACQNAM"):
                number = _expnum_from_name(self._text(header, key) or "")
                if number is not None:
                    return number
            raise FitsFormatError("missing header keyword EXPNUM (and no DECam_NNNNNNNN file name in "
                                  "FILENAME or DTACQNAM)", path)
        return self._int(header, "EXPNUM", path)

    def expid(self, header, path=None) -> str:
        return f"DECam_{self.expnum(header, path):08d}"

    def ccd_number(self, header, path=None) -> int | None:
        if "CCDNUM" not in header:
            return None
        return self._int(header, "CCDNUM", path)

    def obstype(self, header) -> str:
        return str(header.get("OBSTYPE", "")).strip().lower()

    def kind(self, header) -> str:
        return _KIND.get(self.obstype(header), "other")

    def filter(self, header) -> str:
        text = str(header.get("FILTER", "")).strip()
        return text.split()[0] if text else ""

    def raw_ccd_filename(self, expnum: int, ccd: int) -> str:
        return f"DECam_{expnum:08d}_{ccd:02d}.fits"

    def geometry(self, header, path=None) -> CCDGeometry:
        require(header, GEOMETRY_KEYS, path, f"CCD {header.get('CCDNUM', header.get('EXTNAME', '?'))}")
        ccd = self.ccd_number(header, path) or 0
        nx = int(header.get("ZNAXIS1", header.get("NAXIS1", 0)) or header.get("RAWNAX1", 0))
        ny = int(header.get("ZNAXIS2", header.get("NAXIS2", 0)) or header.get("RAWNAX2", 0))
        if not nx or not ny:
            raise FitsFormatError(f"CCD {ccd}: no pixel dimensions (NAXIS1/2 or RAWNAX1/2)", path)
        amps = []
        defaults = getattr(self.settings, "saturation_default", None)
        for a in ("A", "B"):
            sat = header.get(f"SATURAT{a}", defaults)
            amps.append(
                Amplifier(
                    name=a,
                    data=Section.parse(header[f"DATASEC{a}"], path=path, key=f"DATASEC{a}"),
                    bias=Section.parse(header[f"BIASSEC{a}"], path=path, key=f"BIASSEC{a}"),
                    ccd=Section.parse(header[f"CCDSEC{a}"], path=path, key=f"CCDSEC{a}"),
                    gain=float(header.get(f"GAIN{a}", 1.0)),
                    rdnoise=float(header.get(f"RDNOISE{a}", 0.0)),
                    saturate=float(sat) if sat is not None else None,
                )
            )
        height = max(max(am.ccd.y1, am.ccd.y2) for am in amps)
        width = max(max(am.ccd.x1, am.ccd.x2) for am in amps)
        return CCDGeometry(ccd=ccd, name=str(header.get("DETPOS", "")).strip(), raw_shape=(ny, nx),
                           trimmed_shape=(height, width), amps=tuple(amps))

    @staticmethod
    def is_raw_name(name: str) -> bool:
        return bool(RAW_NAME.match(Path(name).name))
