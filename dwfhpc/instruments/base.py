"""What every instrument model provides: identity, CCD lists, per-header geometry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from ..errors import FitsFormatError
from ..fitsio_utils import Section
from ..night import night_string

KINDS = ("science", "bias", "flat", "dark", "other")


@dataclass(frozen=True)
class Amplifier:
    """One readout amplifier: where its pixels and overscan sit in the raw frame, and where they go."""

    name: str
    data: Section  # raw data pixels
    bias: Section  # raw serial overscan
    ccd: Section  # destination in the trimmed, assembled frame
    gain: float  # electrons / ADU
    rdnoise: float  # electrons
    saturate: float | None  # ADU, raw


@dataclass(frozen=True)
class CCDGeometry:
    """Layout of one raw CCD, read from its own header."""

    ccd: int
    name: str
    raw_shape: tuple[int, int]  # (ny, nx)
    trimmed_shape: tuple[int, int]
    amps: tuple[Amplifier, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ExposureInfo:
    """The identity of an exposure, from its headers only."""

    instrument: str
    expid: str
    expnum: int
    night: str
    obstype: str
    kind: str
    filter: str
    field: str
    date_obs: str
    exptime: float
    ccds: tuple[int, ...]

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class Instrument(ABC):
    """A camera: its science CCDs, names, and how to read identity and geometry from headers."""

    name: str = ""
    pixel_scale: float = 0.0  # arcsec / pixel
    longitude: float = 0.0  # site, degrees east (negative west)
    science_ccds: tuple[int, ...] = ()
    bad_ccds: tuple[int, ...] = ()

    def __init__(self, settings: "object | None" = None):
        if settings is not None:
            self.pixel_scale = settings.pixel_scale
            self.longitude = settings.longitude
            self.bad_ccds = tuple(settings.bad_ccds)
            self.settings = settings
        else:
            self.settings = None

    @property
    def good_ccds(self) -> tuple[int, ...]:
        return tuple(c for c in self.science_ccds if c not in self.bad_ccds)

    #: the header keywords :meth:`identify` reads (named when no instrument recognises a header)
    id_keywords: tuple[str, ...] = ("INSTRUME",)

    @classmethod
    @abstractmethod
    def identify(cls, header: fits.Header) -> str | None:
        """How ``header`` shows this instrument wrote it (e.g. ``"INSTRUME='DECam'"``), or None.

        ``INSTRUME`` decides when it is there; older headers without it are recognised by
        each instrument's own conventions (telescope, frame ids, file names).
        """

    @classmethod
    def matches(cls, header: fits.Header) -> bool:
        """True when ``header`` (primary or merged) was written by this instrument."""
        return cls.identify(header) is not None

    @abstractmethod
    def expnum(self, header: fits.Header, path: str | Path | None = None) -> int: ...

    @abstractmethod
    def expid(self, header: fits.Header, path: str | Path | None = None) -> str: ...

    @abstractmethod
    def ccd_number(self, header: fits.Header, path: str | Path | None = None) -> int | None:
        """CCD number of an extension or per-CCD header, or None when it has none."""

    @abstractmethod
    def geometry(self, header: fits.Header, path: str | Path | None = None) -> CCDGeometry: ...

    @abstractmethod
    def obstype(self, header: fits.Header) -> str: ...

    @abstractmethod
    def kind(self, header: fits.Header) -> str:
        """One of :data:`KINDS`."""

    @abstractmethod
    def filter(self, header: fits.Header) -> str: ...

    def field(self, header: fits.Header) -> str:
        return str(header.get("OBJECT", "")).strip()

    def night(self, header: fits.Header, path: str | Path | None = None) -> str:
        return night_string(header, self.longitude, str(path) if path else None)

    @abstractmethod
    def raw_ccd_filename(self, expnum: int, ccd: int) -> str:
        """File name of one raw CCD as a member of a part (e.g. ``DECam_00200666_25.fits``)."""

    @staticmethod
    def _text(header: fits.Header, key: str) -> str | None:
        """A keyword's value as stripped text; None when absent, undefined or blank."""
        value = header.get(key)
        if value is None or isinstance(value, fits.card.Undefined):
            return None
        text = str(value).strip()
        return text or None

    def _int(self, header: fits.Header, key: str, path) -> int:
        if key not in header:
            raise FitsFormatError(f"missing header keyword {key}", path)
        value = header[key]
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)  # a logical is no number; 25.7 is no CCD (25.0 is, as astropy may read it)
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise FitsFormatError(f"header keyword {key}={value!r} is not an integer", path) from None
