"""Instrument models and the functions that read an exposure's identity from its headers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from ..errors import FitsFormatError
from ..fitsio_utils import merge_headers, open_fits
from ..night import observation_time
from .base import KINDS, Amplifier, CCDGeometry, ExposureInfo, Instrument
from .decam import DECam
from .hsc import HSC

INSTRUMENTS: dict[str, type[Instrument]] = {"decam": DECam, "hsc": HSC}

__all__ = [
    "KINDS", "Amplifier", "CCDGeometry", "ExposureInfo", "Instrument", "DECam", "HSC",
    "INSTRUMENTS", "get_instrument", "instrument_for", "detect", "identify", "unknown_instrument",
    "CCDHeader", "read_ccd_headers", "exposure_info",
]


def get_instrument(name: str, settings=None) -> Instrument:
    """Instrument model by name, optionally configured by an instrument config."""
    try:
        cls = INSTRUMENTS[name.lower()]
    except KeyError:
        raise FitsFormatError(f"unknown instrument {name!r} (known: {', '.join(INSTRUMENTS)})") from None
    return cls(settings)


def identify(header: fits.Header) -> tuple[str, str] | None:
    """``(instrument name, how it was recognised)`` for ``header``, or None.

    ``INSTRUME`` decides when present; without it each instrument's older conventions are tried
    (see :meth:`DECam.identify`, :meth:`HSC.identify`).
    """
    for name, cls in INSTRUMENTS.items():
        how = cls.identify(header)
        if how is not None:
            return name, how
    return None


def unknown_instrument(header: fits.Header, path: str | Path | None = None) -> FitsFormatError:
    """The error for a header no instrument recognises: the file, the keywords looked at, what they hold."""
    looked = list(dict.fromkeys(k for cls in INSTRUMENTS.values() for k in cls.id_keywords))
    instrume = Instrument._text(header, "INSTRUME")
    if instrume is not None:
        names = " nor ".join(repr(n) for n in ("DECam", "Hyper Suprime-Cam"))
        return FitsFormatError(f"unknown instrument INSTRUME={instrume!r} (neither {names})", path)
    found = [f"{k}={Instrument._text(header, k)!r}" for k in looked if Instrument._text(header, k) is not None]
    return FitsFormatError(f"unknown instrument: no INSTRUME, and no DECam or HSC convention matches "
                           f"(looked at {', '.join(looked)}; found {', '.join(found) if found else 'none of them'})",
                           path)


def detect(header: fits.Header, path: str | Path | None = None, settings_by_name: dict | None = None) -> Instrument:
    """The instrument that wrote ``header``: INSTRUME, else the telescope and frame-id conventions of older headers."""
    found = identify(header)
    if found is None:
        raise unknown_instrument(header, path)
    name = found[0]
    return INSTRUMENTS[name]((settings_by_name or {}).get(name))


@dataclass(frozen=True)
class CCDHeader:
    """One science CCD in a file: its number, HDU index, and primary+extension header merged."""

    ccd: int
    hdu: int
    header: fits.Header


def read_ccd_headers(path: str | Path, instrument: Instrument | None = None,
                     ccds: list[int] | None = None) -> tuple[Instrument, fits.Header, list[CCDHeader]]:
    """Headers of the science CCDs in a raw MEF, a per-CCD file, or a header-only file.

    Returns the instrument, the primary header and the CCDs (science CCDs only, in file order,
    restricted to ``ccds`` when given). Pixels are not read.
    """
    hdul = open_fits(path)
    try:
        primary = hdul[0].header
        inst = instrument or detect(primary, path)
        found: list[CCDHeader] = []
        single = inst.ccd_number(primary, path)
        if single is not None:  # a per-CCD file: everything is in the primary
            if single in inst.science_ccds and (ccds is None or single in ccds):
                found.append(CCDHeader(single, 0, primary.copy()))
        else:
            for index, hdu in enumerate(hdul[1:], start=1):
                number = inst.ccd_number(hdu.header, path)
                if number is None or number not in inst.science_ccds:
                    continue
                if ccds is not None and number not in ccds:
                    continue
                merged = merge_headers(primary, hdu.header)
                # the pixel dimensions are structure cards; keep them as RAWNAX1/2 for the geometry
                for axis in (1, 2):
                    dim = hdu.header.get(f"ZNAXIS{axis}", hdu.header.get(f"NAXIS{axis}"))
                    if dim and f"RAWNAX{axis}" not in merged:
                        merged[f"RAWNAX{axis}"] = (int(dim), f"raw pixels along axis {axis}")
                found.append(CCDHeader(number, index, merged))
        return inst, primary.copy(), found
    except (OSError, ValueError) as exc:
        raise FitsFormatError(f"truncated or damaged FITS file ({exc})", path) from None
    finally:
        hdul.close()


def exposure_info(path: str | Path, instrument: Instrument | None = None) -> ExposureInfo:
    """Identity of the exposure in ``path`` (instrument, expid, expnum, night, ...), from headers."""
    inst, primary, ccds = read_ccd_headers(path, instrument)
    header = ccds[0].header if ccds else primary
    return ExposureInfo(
        instrument=inst.name,
        expid=inst.expid(header, path),
        expnum=inst.expnum(header, path),
        night=inst.night(header, path),
        obstype=inst.obstype(header),
        kind=inst.kind(header),
        filter=inst.filter(header),
        field=inst.field(header),
        date_obs=str(header.get("DATE-OBS", "")).strip() or observation_time(header, str(path)).isoformat(
            timespec="milliseconds").replace("+00:00", ""),
        exptime=float(header.get("EXPTIME", 0.0)),
        ccds=tuple(c.ccd for c in ccds),
    )


def instrument_for(name: str) -> Instrument:
    """Instrument model configured from the shipped instrument config of that name."""
    from ..config import load_instrument

    return get_instrument(name, load_instrument(name))
