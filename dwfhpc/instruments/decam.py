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

RAW_NAME = re.compile(r"^(DECam_(?P<expnum>\d{8})|c4d_\d{6}_\d{6}_ori)\.fits(\.fz)?$")
GEOMETRY_KEYS = ("DATASECA", "DATASECB", "BIASSECA", "BIASSECB", "CCDSECA", "CCDSECB")
_KIND = {"object": "science", "zero": "bias", "bias": "bias", "dome flat": "flat", "flat": "flat", "dark": "dark"}


class DECam(Instrument):
    name = "decam"
    pixel_scale = 0.263
    # CTIO is 70.81 deg WEST. Raw headers carry OBS-LONG = +70.81489 labelled "east": never trust it.
    longitude = -70.81489
    science_ccds = tuple(range(1, 63))
    bad_ccds = (61,)

    @classmethod
    def matches(cls, header: fits.Header) -> bool:
        return str(header.get("INSTRUME", "")).strip().lower() == "decam"

    def expnum(self, header, path=None) -> int:
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
