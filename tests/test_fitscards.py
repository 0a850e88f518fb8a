"""dwfhpc.fitscards reads card values as astropy's ``fits.Card`` does, for the values headers carry."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
from astropy.io import fits

import dwfhpc
from dwfhpc.errors import IntegrityError
from dwfhpc.fitscards import card_value, parse_card, split_cards
from dwfhpc.node.crosscheck import identity_cards
from dwfhpc.parts.bounds import declared_shape

DATA = Path(dwfhpc.__file__).parent / "data"

CARDS = [
    "OBJECT  = 'abc'                / a comment",
    "OBJECT  = 'it''s'              / '' escape",
    "OBJECT  = 'x'''                / escape before the closing quote",
    "OBJECT  = 'a/b'                / slash inside the string, c/d in the comment",
    "OBJECT  = ''                   / empty string",
    "OBJECT  = '        '           / blank string",
    "OBJECT  = '  lead  '           / leading blanks kept, trailing dropped",
    "OBJECT  = 'T'                  / a string, not a logical",
    "OBJECT  = '12'                 / a string, not an integer",
    "SIMPLE  =                    T / conforms",
    "EXTEND  =                    F",
    "NAXIS   =                    2 / number of axes",
    "BZERO   =                32768",
    "CRPIX1  =                  -12 / negative",
    "EQUINOX =               +2000",
    "BITPIX  =                  -32",
    "EXPTIME =                  1.5 / float",
    "CD1_1   =                -3E2",
    "CD1_2   =              1.0D2   / FITS D exponent",
    "CD2_1   =             -2.5E-05",
    "CD2_2   =                   .5",
    "GAIN    =                   5.",
    "DATE-OBS= '2019-07-25T03:04:05.123456' / 8-character key, no HIERARCH",
    "ZQUANTIZ= 'NO_DITHER'          / 8-character key",
    "EXP-ID  = 'HSCA90333400'",
]


def _astropy(card: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = fits.Card.fromstring(card.ljust(80))
        return c.keyword, c.value


@pytest.mark.parametrize("card", CARDS)
def test_parse_card_is_astropys_value(card):
    key, value = parse_card(card.ljust(80))
    want_key, want = _astropy(card)
    assert (key, value) == (want_key, want) and type(value) is type(want)
    assert card_value(card.ljust(80)[10:]) == want


def test_cards_without_a_value_indicator_have_no_value():
    for card in ("NOVALUE  some text", "COMMENT   a comment = 'x'", "HISTORY = not a value", "END", "", "KEY     =5"):
        key, value = parse_card(card.ljust(80))
        assert key == card[:8].rstrip() and value is None
    assert _astropy("NOVALUE  some text") == ("NOVALUE", " some text")  # astropy keeps the raw text instead


def test_an_escaped_quote_before_a_slash_stays_in_the_string():
    assert card_value(" 'a''/''b' / c") == "a'/'b"  # FITS 4.0 4.2.1; astropy 8.0 ends the string at ''/ ("a'")


def test_raw_text_fallbacks():
    assert card_value("   ") == "" and card_value(" / only a comment") == ""  # astropy: Undefined
    assert card_value(" (1.0, 2.0) / complex") == "(1.0, 2.0)"  # astropy: a complex
    assert card_value(" NAN") == "NAN" and card_value(" 1_0") == "1_0"  # astropy: unparsable card
    assert card_value(" 'unterminated  ") == "unterminated"


def test_split_cards_takes_whole_cards_only():
    text = "A       = 1".ljust(80) + "END".ljust(80) + "partial"
    assert [k for k, _ in split_cards(text)] == ["A", "END"]
    assert [len(c) for _, c in split_cards(text)] == [80, 80]


@pytest.mark.parametrize("name", ["DECam_00200666_headers_only.fits", "HSCA90333426.headeronly.fits"])
def test_every_card_of_the_shipped_headers(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(DATA / name) as hdul:
            headers = [h.header for h in hdul]
    checked = 0
    for header in headers:
        for card in header.cards:
            image = card.image
            if image[8:10] != "= " or not isinstance(card.value, (str, bool, int, float)):
                continue
            assert parse_card(image) == (card.keyword, card.value), image
            checked += 1
    assert checked > 100


def _header(*cards: str) -> str:
    text = "".join(c.ljust(80) for c in (*cards, "END"))
    return text.ljust(-(-len(text) // 2880) * 2880)


def test_identity_cards_first_occurrence_and_blank_without_value():
    text = _header("INSTRUME= 'DECam   '", "EXPNUM  =               200666 / exposure", "CCDNUM    25",
                   "DATE-OBS= '2013-05-01T01:02:03' / a/b", "EXPNUM  = 1", "OBJECT  = 'x'")
    assert identity_cards(text) == {"INSTRUME": "DECam", "EXPNUM": 200666, "CCDNUM": "",
                                    "DATE-OBS": "2013-05-01T01:02:03"}


@pytest.mark.parametrize("value,ok", [(25, True), (25.0, True), ("25", True), (25.7, False), (True, False),
                                      ("T", False)])
def test_an_identity_number_is_a_whole_number_whatever_reader_typed_it(value, ok):
    """The cards' reader gives reals and logicals typed (as astropy does): CCDNUM 25.7 or T is no CCD."""
    from dwfhpc.errors import FitsFormatError
    from dwfhpc.instruments import get_instrument

    header = fits.Header()
    header["CCDNUM"] = value
    read = get_instrument("decam")._int
    if ok:
        assert read(header, "CCDNUM", "x.fits") == 25
    else:
        with pytest.raises(FitsFormatError, match="CCDNUM=.* is not an integer"):
            read(header, "CCDNUM", "x.fits")


def test_declared_shape_refuses_real_structure_keywords(tmp_path):
    """bounds reads NAXISn/BITPIX/ZNAXIS as integers only: a real (2.0) is refused, as its text was before."""
    def shape(*cards, blocks=1):
        (tmp_path / "m.fits").write_bytes(_header("SIMPLE  = T", *cards).encode() + b"\0" * 2880 * blocks)
        return declared_shape(tmp_path / "m.fits")

    assert shape("BITPIX  = 16", "NAXIS   = 2", "NAXIS1  = 4", "NAXIS2  = 3", "OBJECT  = 'a/b''c'") == (3, 4)
    with pytest.raises(IntegrityError, match="unreadable structure keywords"):
        shape("BITPIX  = 16", "NAXIS   = 2", "NAXIS1  = 4.0", "NAXIS2  = 3")
    with pytest.raises(IntegrityError, match="2.0-D image"):
        shape("BITPIX  = 8", "NAXIS   = 0", "ZIMAGE  = T", "ZNAXIS  = 2.0", "ZNAXIS1 = 4", "ZNAXIS2 = 3", blocks=0)


if importlib.util.find_spec("hypothesis") is not None:
    from hypothesis import given
    from hypothesis import strategies as st

    KEYS = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=8).filter(
        lambda k: k not in ("COMMENT", "HISTORY", "END", "CONTINUE", "HIERARCH"))
    PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    VALUES = st.one_of(st.booleans(), st.integers(-10 ** 18, 10 ** 18),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(PRINTABLE, max_size=30))

    @given(KEYS, VALUES, st.text(PRINTABLE, max_size=40))
    def test_round_trip_through_astropy_cards(key, value, comment):
        """astropy formats the card; parse_card reads back the value (a real as astropy reads its image:
        it may shorten the digits). Strings are checked against the value itself, as astropy 8.0 misreads
        a string holding ``''/`` (``"'/"`` reads back as ``"'"``)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = fits.Card(key, value, comment).image
        assert len(image) == 80
        got_key, got = parse_card(image)
        want_key, want = _astropy(image)
        assert got_key == want_key == key
        if isinstance(value, str):
            assert got == value.rstrip()
        elif isinstance(value, float):
            assert got == want and type(got) is float
        else:
            assert got == value == want and type(got) is type(value) is type(want)
