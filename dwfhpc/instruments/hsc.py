"""Subaru Hyper Suprime-Cam: one raw file per CCD (``HSCA<visit:06d><ccd:02d>.fits``).

Visits are grouped by EXP-ID from the header; the CCD is DET-ID (0-103 science). HSC ids are
``HSC`` + a letter + digits: an exposure id is the visit followed by ``00`` (``HSCA90333400``), a
frame id the visit followed by a two-digit frame slot (``HSCA90333426``); since 2016-06-14 an
exposure id may also be ``HSCE`` + the visit in 8 digits (astro_metadata_translator's two schemes).
Ids of 6 to 10 digits are read (visits of 4 to 8 digits).

Each CCD has four readout channels whose overscan and data ranges are in
T_OSMN/T_OSMX/T_EFMN/T_EFMX keywords (``c1`` = x, ``c2`` = y, 1-based inclusive).
"""

from __future__ import annotations

import re

from astropy.io import fits

from ..errors import FitsFormatError
from ..fitsio_utils import Section, require
from .base import Amplifier, CCDGeometry, Instrument

# \Z, not $: `$` also matches before a trailing newline
RAW_NAME = re.compile(r"^HSCA(?P<visit>\d{4,8})(?P<ccd>\d{2})\.fits(\.fz)?\Z")
#: an HSC exposure or frame id: the visit, then ``00`` (exposure) or a frame slot (frame)
FRAME_ID = re.compile(r"^HSC(?P<letter>[A-Z])(?P<digits>\d{6,10})\Z")
#: an exposure id of the 2016-06-14 scheme: ``HSCE`` + the visit itself in 8 digits
NEW_EXP_ID = re.compile(r"^HSCE(?P<visit>\d{8})\Z")
_KIND = {"object": "science", "bias": "bias", "domeflat": "flat", "flat": "flat", "dark": "dark"}


class HSC(Instrument):
    name = "hsc"
    pixel_scale = 0.168
    longitude = -155.4761  # Maunakea
    science_ccds = tuple(range(0, 104))
    bad_ccds = (9,)  # DET-ID 9 is the known dead CCD of HSC

    id_keywords = ("INSTRUME", "TELESCOP", "EXP-ID", "FRAMEID")

    @classmethod
    def identify(cls, header: fits.Header) -> str | None:
        """``INSTRUME = 'Hyper Suprime-Cam'``; early raw frames carry no INSTRUME, and are HSC's
        when ``EXP-ID`` or ``FRAMEID`` is an HSC frame id (``HSCA90333400``) and ``TELESCOP``, if
        present, is Subaru (astro_metadata_translator's HSC rule, with the telescope as a guard).
        """
        instrume = cls._text(header, "INSTRUME")
        if instrume is not None:
            known = "hyper suprime" in instrume.lower() or instrume.upper() == "HSC"
            return f"INSTRUME={instrume!r}" if known else None
        telescope = cls._text(header, "TELESCOP")
        if telescope is not None and "subaru" not in telescope.lower():
            return None
        for key in ("EXP-ID", "FRAMEID"):
            frame = cls._text(header, key)
            if frame is not None and FRAME_ID.fullmatch(frame):
                return f"TELESCOP={telescope!r} and {key}={frame!r}" if telescope else f"{key}={frame!r}"
        return None

    def _frame(self, header, key, path) -> str:
        if key not in header:
            raise FitsFormatError(f"missing header keyword {key}", path)
        text = str(header[key]).strip()
        if not FRAME_ID.fullmatch(text):
            raise FitsFormatError(f"header keyword {key}={text!r} is not an HSC frame id", path)
        return text

    def expnum(self, header, path=None) -> int:
        """The visit number, from EXP-ID (``HSCA90333400`` -> 903334, ``HSCE00123456`` -> 123456).

        Early frames may lack EXP-ID or carry a zero visit in it; the visit then comes from FRAMEID
        (``HSCA90333426``: its digits but the last two, rounded down to even, as astro_metadata_translator does).
        """
        visit = 0
        if "EXP-ID" in header:
            text = self._frame(header, "EXP-ID", path)
            new = NEW_EXP_ID.fullmatch(text)
            visit = int(new["visit"]) if new else self._visit_digits(text)
        if visit:
            return visit
        if "FRAMEID" not in header:
            raise FitsFormatError("missing header keyword EXP-ID" if "EXP-ID" not in header else
                                  f"header keyword EXP-ID={header['EXP-ID']!r} has visit 0 and there is no FRAMEID",
                                  path)
        visit = self._visit_digits(self._frame(header, "FRAMEID", path))
        return visit - visit % 2

    @staticmethod
    def _visit_digits(frame_id: str) -> int:
        """The visit in an old-scheme id (checked by :data:`FRAME_ID`): its digits but the last two."""
        return int(FRAME_ID.fullmatch(frame_id)["digits"]) // 100

    def expid(self, header, path=None) -> str:
        return f"HSC_{self.expnum(header, path):07d}"

    def ccd_number(self, header, path=None) -> int | None:
        if "DET-ID" not in header:
            return None
        return self._int(header, "DET-ID", path)

    def obstype(self, header) -> str:
        return str(header.get("DATA-TYP", "")).strip().lower()

    def kind(self, header) -> str:
        return _KIND.get(self.obstype(header), "other")

    def filter(self, header) -> str:
        return str(header.get("FILTER01", "")).strip()

    def raw_ccd_filename(self, expnum: int, ccd: int) -> str:
        return f"HSCA{expnum:06d}{ccd:02d}.fits"

    def geometry(self, header, path=None) -> CCDGeometry:
        keys = [f"T_{k}{c}{a}" for c in range(1, 5) for k in ("OSMN", "OSMX", "EFMN", "EFMX") for a in (1, 2)]
        require(header, keys, path, f"CCD {header.get('DET-ID', '?')}")
        ccd = self.ccd_number(header, path) or 0
        nx = int(header.get("ZNAXIS1", header.get("NAXIS1", 0)) or 0)
        ny = int(header.get("ZNAXIS2", header.get("NAXIS2", 0)) or 0)
        if not nx or not ny:
            raise FitsFormatError(f"CCD {ccd}: no pixel dimensions (NAXIS1/2)", path)
        sat_default = getattr(self.settings, "saturation_default", None) or 50000.0
        rn_default = getattr(self.settings, "read_noise_default", None) or 4.5
        amps = []
        x0 = 1
        for c in range(1, 5):
            ex1, ex2 = int(header[f"T_EFMN{c}1"]), int(header[f"T_EFMX{c}1"])
            ey1, ey2 = int(header[f"T_EFMN{c}2"]), int(header[f"T_EFMX{c}2"])
            ox1, ox2 = int(header[f"T_OSMN{c}1"]), int(header[f"T_OSMX{c}1"])
            width, height = ex2 - ex1 + 1, ey2 - ey1 + 1
            gain = float(header.get(f"T_GAIN{c}", 0.0)) or 3.0
            amps.append(
                Amplifier(
                    name=str(c),
                    data=Section(ex1, ex2, ey1, ey2),
                    bias=Section(ox1, ox2, ey1, ey2),
                    ccd=Section(x0, x0 + width - 1, 1, height),
                    gain=gain,
                    rdnoise=float(rn_default),
                    saturate=float(sat_default),
                )
            )
            x0 += width
        return CCDGeometry(ccd=ccd, name=f"{ccd:03d}", raw_shape=(ny, nx),
                           trimmed_shape=(amps[0].ccd.shape[0], x0 - 1), amps=tuple(amps))

    @staticmethod
    def is_raw_name(name: str) -> bool:
        return bool(RAW_NAME.fullmatch(name.rsplit("/", 1)[-1]))
