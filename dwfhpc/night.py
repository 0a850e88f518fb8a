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


def observation_time(header: fits.Header, path: str | None = None) -> datetime:
    """UTC start of the exposure from DATE-OBS (+ TIME-OBS / UT when DATE-OBS is a bare date) or MJD-OBS."""
    date_obs = header.get("DATE-OBS")
    if date_obs:
        text = str(date_obs).strip()
        if "T" not in text:
            clock = header.get("TIME-OBS") or header.get("UT-STR") or header.get("UT")
            if clock:
                text = f"{text}T{str(clock).strip()}"
        try:
            return Time(text, format="isot", scale="utc").to_datetime(timezone=timezone.utc)
        except ValueError:
            pass
    for key in ("MJD-OBS", "MJD-STR", "MJD"):
        if key in header:
            return Time(float(header[key]), format="mjd", scale="utc").to_datetime(timezone=timezone.utc)
    raise FitsFormatError("no usable DATE-OBS or MJD-OBS keyword", path)


def night_string(header: fits.Header, longitude_deg: float, path: str | None = None) -> str:
    """Night as ``YYYY-MM-DD``."""
    return night_of(observation_time(header, path), longitude_deg).isoformat()
