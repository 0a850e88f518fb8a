"""Which observing night an exposure belongs to: the local date at the start of the night.

Computed from the exposure's own time (DATE-OBS or MJD-OBS) and the site's longitude, never
from the wall clock. Local mean solar time is UTC + longitude/15 h (east positive); a night
runs from local noon to the next local noon, and is named by the date of its evening.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from astropy.io import fits
from astropy.time import Time

from .errors import FitsFormatError


def night_of(utc: datetime, longitude_deg: float) -> date:
    """Night (local date at its start) of an instant ``utc`` at a site of east longitude."""
    if utc.tzinfo is None:
        utc = utc.replace(tzinfo=timezone.utc)
    local = utc.astimezone(timezone.utc) + timedelta(hours=longitude_deg / 15.0)
    return (local - timedelta(hours=12)).date()


TIME_KEYS = ("TIME-OBS", "UT-STR", "UT")
MJD_KEYS = ("MJD-OBS", "MJD-STR", "MJD")


def observation_time(header: fits.Header, path: str | None = None) -> datetime:
    """UTC start of the exposure.

    In order: DATE-OBS with a time of day; DATE-OBS as a bare date (HSC) with TIME-OBS, UT-STR
    or UT; MJD-OBS, MJD-STR or MJD. A bare date alone is refused rather than read as midnight
    UTC, which puts evening exposures at CTIO on the previous night.
    """
    date_obs = str(header.get("DATE-OBS") or "").strip()
    text = date_obs
    if date_obs and "T" not in date_obs:
        clock = next((str(header[k]).strip() for k in TIME_KEYS if str(header.get(k) or "").strip()), None)
        text = f"{date_obs}T{clock}" if clock else ""
    if text:
        try:
            return Time(text, format="isot", scale="utc").to_datetime(timezone=timezone.utc)
        except ValueError:
            pass
    for key in MJD_KEYS:
        if key in header:
            try:
                return Time(float(header[key]), format="mjd", scale="utc").to_datetime(timezone=timezone.utc)
            except (TypeError, ValueError):
                continue
    looked = ", ".join(("DATE-OBS",) + TIME_KEYS + MJD_KEYS)
    if date_obs and not text:
        raise FitsFormatError(f"DATE-OBS={date_obs!r} has no time of day, and no time or MJD keyword gives it "
                              f"(looked at {looked}): the night is ambiguous", path)
    raise FitsFormatError(f"no usable DATE-OBS or MJD-OBS keyword (looked at {looked})", path)


def night_string(header: fits.Header, longitude_deg: float, path: str | None = None) -> str:
    """Night as ``YYYY-MM-DD``."""
    return night_of(observation_time(header, path), longitude_deg).isoformat()
