"""Reading a few keyword values straight from FITS header cards, without astropy.

The inbox checks the identity cards of every member header a manifest carries, the packer and the
node walk the headers of compressed raws and members to find HDU sizes: each needs a handful of
keywords out of hundreds of cards. Why not astropy: reading a header's values with
:mod:`astropy.io.fits` builds and parses every card (~4 ms for a DECam CCD header); picking out only
the cards a caller needs here is ~50x cheaper. The values are astropy's ``Card.value`` for what these
headers hold (strings, logicals, integers, reals); complex values and ``CONTINUE`` long strings are
left as raw text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

CARD = 80

#: a parsed card value
Value = str | bool | int | float

_STRING = re.compile(r"'((?:[^']|'')*)")
_INT = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[EeDd][+-]?[0-9]+)?")
_LOGICAL = {"T": True, "F": False}
_COMMENTARY = frozenset({"COMMENT", "HISTORY", ""})


def card_value(field: str) -> Value:
    """The value of a card's value field (the text after ``= ``).

    A quoted string (quotes removed, ``''`` -> ``'``, trailing blanks stripped, anything after the
    closing quote ignored), ``T``/``F`` as bool, an integer, a real (``1.5``, ``-3E2``, ``1.0D2``);
    anything else is the raw text before a ``/`` comment, stripped (``""`` for an undefined value).
    """
    text = field.strip()
    if text.startswith("'"):
        return _STRING.match(text)[1].replace("''", "'").rstrip()
    text = text.split("/", 1)[0].strip()
    if text in _LOGICAL:
        return _LOGICAL[text]
    if _INT.fullmatch(text):
        return int(text)
    if _REAL.fullmatch(text):
        return float(text.replace("D", "E").replace("d", "e"))
    return text


def parse_card(card: str) -> tuple[str, Value | None]:
    """(keyword, value) of one 80-character card: the keyword is columns 1-8 stripped of trailing blanks;
    the value is None without the value indicator ``= `` in columns 9-10, and for COMMENT, HISTORY, blank."""
    key = card[:8].rstrip()
    if card[8:10] != "= " or key in _COMMENTARY:
        return key, None
    return key, card_value(card[10:CARD])


def split_cards(text: str) -> Iterator[tuple[str, str]]:
    """(keyword, card) of each whole 80-character card of a header string, in order (END included)."""
    for i in range(0, len(text) - CARD + 1, CARD):
        yield text[i:i + 8].rstrip(), text[i:i + CARD]


__all__ = ["CARD", "Value", "card_value", "parse_card", "split_cards"]
