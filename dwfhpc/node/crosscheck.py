"""On the node, before calibrating: the CCD's own FITS header must describe what the manifest says.

The manifest's identity (instrument, expnum/expid, CCD, DATE-OBS, night, kind, filter) passed the
schema at the inbox, but it is only the packer's word: the header inside the member (for the FITS
codecs) and the header of the restored raw file are what calibration and the products will carry.
Any disagreement is an :class:`~dwfhpc.errors.IntegrityError` whose text says "does not match the
manifest" and names the keyword and the field. The header, not the manifest, decides what a frame
is: a science exposure labelled ``kind: bias`` (OBSTYPE / DATA-TYP), or a flat or science frame
whose FILTER is not the manifest's, is refused before it is filed or calibrated. The collector
treats all of these as permanent (another attempt reads the same bytes).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

from astropy.io import fits

from ..errors import DwfError, IntegrityError
from ..fitscards import parse_card, split_cards
from ..instruments import get_instrument, instrument_for
from ..parts import Manifest

#: HDU holding the member's header, for the codecs whose member is itself a FITS file
MEMBER_HDU = {"rice": 1, "rice-q": 1, "none": 0}
#: the keyword saying what a frame is, and its filter, by instrument (named in the messages)
OBSTYPE_KEY = {"decam": "OBSTYPE", "hsc": "DATA-TYP"}
FILTER_KEY = {"decam": "FILTER", "hsc": "FILTER01"}


@lru_cache(maxsize=None)
def _models(name: str):
    """(the packer's default model, the site-configured one or None): their longitudes give the night."""
    try:
        configured = instrument_for(name)
    except DwfError:
        configured = None
    return get_instrument(name), configured


def _mismatch(what: str, path, key: str, got, field: str, want) -> IntegrityError:
    return IntegrityError(f"{what}: header {key}={got!r} does not match the manifest (field {field}: {want!r})", path)


def check_kind(header, manifest: Manifest, *, what: str, path=None) -> None:
    """The header's OBSTYPE (DECam) / DATA-TYP (HSC) gives the manifest's kind; for flats and science also its FILTER."""
    inst, _ = _models(manifest.instrument)
    key = OBSTYPE_KEY.get(manifest.instrument, "OBSTYPE")
    kind = inst.kind(header)
    if kind != manifest.kind:
        raise IntegrityError(f"{what}: header {key}={header.get(key)!r} is a {kind} frame: does not match the "
                             f"manifest (field kind: {manifest.kind!r})", path)
    if manifest.kind in ("flat", "science"):
        got = inst.filter(header)
        if got != manifest.filter:
            fkey = FILTER_KEY.get(manifest.instrument, "FILTER")
            raise _mismatch(what, path, fkey, got, "filter", manifest.filter)


def check_header(header: fits.Header, manifest: Manifest, ccd: int, *, what: str, path=None,
                 night: bool = True, kind: bool = True) -> None:
    """Raise :class:`IntegrityError` ("does not match the manifest") unless ``header`` is CCD ``ccd`` of the manifest's exposure.

    ``kind``: also what the frame is (:func:`check_kind`).
    """
    inst, configured = _models(manifest.instrument)
    if not inst.matches(header):
        raise _mismatch(what, path, "INSTRUME", header.get("INSTRUME"), "instrument", manifest.instrument)
    try:
        expnum = inst.expnum(header, path)
        expid = inst.expid(header, path)
        number = inst.ccd_number(header, path)
    except DwfError as exc:
        raise IntegrityError(f"{what}: {exc.problem}: does not match the manifest (field expid: {manifest.expid!r})",
                             path) from None
    if expnum != manifest.expnum:
        raise _mismatch(what, path, "EXPNUM" if manifest.instrument == "decam" else "EXP-ID", expnum, "expnum",
                        manifest.expnum)
    if expid != manifest.expid:
        raise _mismatch(what, path, "expid", expid, "expid", manifest.expid)
    if number != ccd:
        raise _mismatch(what, path, "CCDNUM" if manifest.instrument == "decam" else "DET-ID", number, "ccd", ccd)
    date_obs = str(header.get("DATE-OBS", "")).strip()
    if date_obs != manifest.date_obs.strip():
        raise _mismatch(what, path, "DATE-OBS", date_obs, "date_obs", manifest.date_obs)
    if kind:
        check_kind(header, manifest, what=what, path=path)
    if not night:
        return
    try:
        nights = {inst.night(header, path)}
        if configured is not None and configured.longitude != inst.longitude:
            nights.add(configured.night(header, path))
    except DwfError as exc:
        raise IntegrityError(f"{what}: {exc.problem}: does not match the manifest (field night: {manifest.night!r})",
                             path) from None
    if manifest.night not in nights:
        raise _mismatch(what, path, "DATE-OBS -> night", sorted(nights)[0], "night", manifest.night)


def check_member_file(member_path: Path, manifest: Manifest, ccd: int) -> None:
    """The header inside a verified member (FITS codecs only; a JPEG 2000 member carries none)."""
    hdu = MEMBER_HDU.get(manifest.member(ccd).codec)
    if hdu is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(member_path, hdu)
    except (OSError, IndexError, ValueError) as exc:
        raise IntegrityError(f"member header unreadable ({exc}): does not match the manifest", member_path) from None
    check_header(header, manifest, ccd, what=f"member {member_path.name}", path=member_path)


def check_restored(raw_fits: Path, manifest: Manifest, ccd: int) -> None:
    """The restored single-CCD raw FITS (the header calibration will read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(raw_fits, 0)
    except (OSError, IndexError, ValueError) as exc:
        raise IntegrityError(f"restored CCD header unreadable ({exc}): does not match the manifest", raw_fits) from None
    check_header(header, manifest, ccd, what=f"CCD {ccd}", path=raw_fits)


#: the cards :func:`check_manifest_headers` needs (the night is left to the node: it costs an astropy Time)
IDENTITY_KEYS = ("INSTRUME", "EXPNUM", "EXP-ID", "CCDNUM", "DET-ID", "DATE-OBS")


def identity_cards(text: str) -> dict:
    """Only the identity cards of a header string (first occurrence of each), as a dict the models read.

    ~50x cheaper than parsing the whole header with astropy (see :mod:`dwfhpc.fitscards`). A keyed card
    without ``= `` reads as blank.
    """
    out: dict = {}
    for key, card in split_cards(text):
        if key in IDENTITY_KEYS and key not in out:
            value = parse_card(card)[1]
            out[key] = "" if value is None else value
        elif key == "END":
            break
    return out


def check_manifest_headers(manifest: Manifest, path=None) -> None:
    """The CCD headers embedded in the manifest itself (no tarball read), e.g. at the inbox.

    Identity cards only (instrument, EXPNUM/EXP-ID, CCDNUM/DET-ID, DATE-OBS); the night from
    DATE-OBS is checked on the node, and the manifest's night against its date_obs by the schema.
    """
    for i, m in enumerate(manifest.members):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = identity_cards(m.header)
        except (ValueError, KeyError, IndexError) as exc:
            raise IntegrityError(f"field members[{i}].header: not a FITS header ({exc})", path) from None
        check_header(header, manifest, m.ccd, what=f"field members[{i}].header ({m.name})", path=path, night=False,
                     kind=False)
