"""Convert a SIP-distorted TAN WCS to the equivalent TPV WCS (the seed's convertCorrCorr2).

SWarp, SCAMP and photpipe read TPV (``PV1_k``/``PV2_k``) but not SIP (``A_p_q``/``B_p_q``),
while the HSC pipeline writes SIP. The conversion is exact polynomial algebra, not a fit:

SIP:  (xi, eta) = CD . (u + f(u, v), v + g(u, v)),   u, v = pixel - CRPIX
TPV:  (x, y) = CD . (u, v);  xi = P1(x, y);  eta = P2(y, x)  (note the swapped arguments)

so with (u, v) = CD^-1 (x, y), ``P1(x, y) = x + [CD (f, g)]_1`` evaluated as a polynomial in
(x, y), and likewise for ``P2``. TPV holds polynomials up to order 7; the radial terms
(PV1_3, 11, 23, 39) stay zero. The inverse SIP terms (AP/BP) are dropped: TPV has none.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from .errors import DwfError

MAX_ORDER = 7
_RADIAL = {3, 11, 23, 39}


def _tpv_index() -> dict[tuple[int, int], int]:
    """TPV term number -> (power of first argument, power of second), radial terms skipped."""
    index: dict[tuple[int, int], int] = {}
    k = 0
    for order in range(MAX_ORDER + 1):
        for j in range(order + 1):
            while k in _RADIAL:
                k += 1
            index[(order - j, j)] = k
            k += 1
    return index


TPV_INDEX = _tpv_index()


def _polymul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Product of two bivariate polynomials given as coefficient arrays c[i, j] * x**i * y**j."""
    out = np.zeros((a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1))
    for (i, j), c in np.ndenumerate(a):
        if c:
            out[i : i + b.shape[0], j : j + b.shape[1]] += c * b
    return out


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shape = (max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]))
    out = np.zeros(shape)
    out[: a.shape[0], : a.shape[1]] += a
    out[: b.shape[0], : b.shape[1]] += b
    return out


def _sip_poly(header: fits.Header, prefix: str, order: int) -> np.ndarray:
    c = np.zeros((order + 1, order + 1))
    for p in range(order + 1):
        for q in range(order + 1 - p):
            c[p, q] = float(header.get(f"{prefix}_{p}_{q}", 0.0))
    return c


def _cd_matrix(header: fits.Header) -> np.ndarray:
    if "CD1_1" in header or "CD2_2" in header:
        return np.array([[header.get("CD1_1", 0.0), header.get("CD1_2", 0.0)],
                         [header.get("CD2_1", 0.0), header.get("CD2_2", 0.0)]], dtype=float)
    cdelt = np.array([header.get("CDELT1", 1.0), header.get("CDELT2", 1.0)], dtype=float)
    pc = np.array([[header.get("PC1_1", 1.0), header.get("PC1_2", 0.0)],
                   [header.get("PC2_1", 0.0), header.get("PC2_2", 1.0)]], dtype=float)
    return cdelt[:, None] * pc


def _substitute(poly: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """poly(u(x, y), v(x, y)) where u and v are themselves polynomials in (x, y)."""
    result = np.zeros((1, 1))
    u_pow = [np.ones((1, 1))]
    v_pow = [np.ones((1, 1))]
    for _ in range(poly.shape[0]):
        u_pow.append(_polymul(u_pow[-1], u))
        v_pow.append(_polymul(v_pow[-1], v))
    for (p, q), c in np.ndenumerate(poly):
        if c:
            result = _add(result, c * _polymul(u_pow[p], v_pow[q]))
    return result


def sip_to_tpv(header: fits.Header, path: str | None = None) -> fits.Header:
    """A copy of ``header`` with its SIP distortion rewritten as TPV.

    Raises :class:`DwfError` when the header has no SIP TAN WCS or its order exceeds TPV's 7.
    """
    ctype1, ctype2 = str(header.get("CTYPE1", "")), str(header.get("CTYPE2", ""))
    if not (ctype1.startswith("RA---TAN") and ctype2.startswith("DEC--TAN")):
        raise DwfError(f"not a TAN WCS (CTYPE1={ctype1!r}, CTYPE2={ctype2!r})", path)
    order_a, order_b = int(header.get("A_ORDER", 0)), int(header.get("B_ORDER", 0))
    if not ctype1.endswith("-SIP") or not (order_a or order_b):
        raise DwfError("no SIP distortion (CTYPE not ...-SIP or A_ORDER/B_ORDER missing)", path)
    order = max(order_a, order_b)
    if order > MAX_ORDER:
        raise DwfError(f"SIP order {order} exceeds TPV's maximum of {MAX_ORDER}", path)

    cd = _cd_matrix(header)
    inv = np.linalg.inv(cd)
    # u, v as linear polynomials in x, y (coefficient arrays indexed [power of x, power of y])
    u = np.zeros((2, 2)); u[1, 0], u[0, 1] = inv[0, 0], inv[0, 1]
    v = np.zeros((2, 2)); v[1, 0], v[0, 1] = inv[1, 0], inv[1, 1]
    f = _substitute(_sip_poly(header, "A", order_a), u, v)
    g = _substitute(_sip_poly(header, "B", order_b), u, v)
    x = np.zeros((2, 2)); x[1, 0] = 1.0
    y = np.zeros((2, 2)); y[0, 1] = 1.0
    xi = _add(x, _add(cd[0, 0] * f, cd[0, 1] * g))
    eta = _add(y, _add(cd[1, 0] * f, cd[1, 1] * g))

    out = header.copy()
    for key in list(out.keys()):
        if key.startswith(("A_", "B_", "AP_", "BP_")) and key.split("_")[0] in ("A", "B", "AP", "BP"):
            del out[key]
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        out.remove(key, ignore_missing=True)
    for (i, j), name in (((0, 0), "CD1_1"), ((0, 1), "CD1_2"), ((1, 0), "CD2_1"), ((1, 1), "CD2_2")):
        out[name] = cd[i, j]
    out["CTYPE1"] = ("RA---TPV", "TPV distortion (converted from SIP by dwfhpc)")
    out["CTYPE2"] = ("DEC--TPV", "TPV distortion (converted from SIP by dwfhpc)")
    for (i, j), k in TPV_INDEX.items():
        # PV1 is a polynomial in (x, y); PV2 in (y, x): swap the powers for eta.
        c1 = xi[i, j] if i < xi.shape[0] and j < xi.shape[1] else 0.0
        c2 = eta[j, i] if j < eta.shape[0] and i < eta.shape[1] else 0.0
        if i + j <= max(order, 1):
            out[f"PV1_{k}"] = float(c1)
            out[f"PV2_{k}"] = float(c2)
    return out
