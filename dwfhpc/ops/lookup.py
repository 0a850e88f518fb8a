"""How the operator commands find an exposure from what was typed: its expid or its number."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def names_exposure(wanted: str, expid: str, number: int | None = None) -> bool:
    """``wanted`` is this exposure's expid (``DECam_01100005``) or its number, leading zeros or not (``1100005``).

    The number is the expid's last ``_`` field unless given (an HSC visit's number).
    """
    digits = expid.split("_")[-1] if number is None else str(number)
    return wanted == expid or wanted.lstrip("0") == digits.lstrip("0")


def match_exposure(wanted: str, candidates: Iterable[T], *, expid: Callable[[T], str] = str,
                   number: Callable[[T], int] | None = None) -> T | None:
    """The first candidate ``wanted`` names (:func:`names_exposure`), or None."""
    for c in candidates:
        if names_exposure(wanted, expid(c), number(c) if number else None):
            return c
    return None
