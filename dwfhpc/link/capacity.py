"""How many streams a link needs: one ssh stream carries at most its channel window per round trip.

OpenSSH's channel window is fixed at 2 MiB, so one stream (rsync over ssh, or a streamed
``dwfhpc receive``) moves at most ``2 MiB / RTT`` whatever the TCP buffers: 7.0 MB/s at 300 ms,
measured 6.3 MB/s on the emulated link (``benchmarks/results/transfer.md``). To fill a link of
``link_mbit`` the push needs ``ceil(link / ceiling)`` streams (at least 2: one stream's gap between
calls is covered by another), and an exposure needs at least that many parts to use them all.
``push.streams: auto`` asks for exactly that, from ``transport.link_mbit`` and ``transport.rtt_ms``.
"""

from __future__ import annotations

import math

#: OpenSSH's per-channel receive window (bytes): CHAN_SES_WINDOW_DEFAULT in channels.h
SSH_CHANNEL_WINDOW = 2 * 1024 * 1024
#: at most this many streams (``push.streams``' upper bound)
MAX_STREAMS = 64
MIN_STREAMS = 2


def stream_ceiling_mb_s(rtt_ms: float, window_bytes: int = SSH_CHANNEL_WINDOW) -> float:
    """One ssh stream's ceiling in MB/s (10^6 bytes): one window per round trip."""
    if rtt_ms <= 0:
        raise ValueError(f"round-trip time must be positive, not {rtt_ms!r} ms")
    return window_bytes / (rtt_ms / 1000.0) / 1e6


def streams_for_link(link_mbit: float, rtt_ms: float, window_bytes: int = SSH_CHANNEL_WINDOW) -> int:
    """Streams that fill a link of ``link_mbit`` Mbit/s at ``rtt_ms`` (between 2 and 64)."""
    if link_mbit <= 0:
        raise ValueError(f"link capacity must be positive, not {link_mbit!r} Mbit/s")
    need = math.ceil(link_mbit / 8.0 / stream_ceiling_mb_s(rtt_ms, window_bytes) - 1e-9)
    return max(MIN_STREAMS, min(MAX_STREAMS, need))


def explain(link_mbit: float, rtt_ms: float) -> str:
    """One line saying how ``streams: auto`` chose (for push's start event and ``config check``)."""
    n = streams_for_link(link_mbit, rtt_ms)
    return (f"streams auto: {n} (a {link_mbit:g} Mbit/s link = {link_mbit / 8:.1f} MB/s; one ssh stream at "
            f"{rtt_ms:g} ms RTT carries at most {stream_ceiling_mb_s(rtt_ms):.1f} MB/s)")


def chosen_streams(kind: str, link_mbit: float | None, rtt_ms: float | None, default: int = 4) -> tuple[int, str]:
    """``push.streams: auto`` for a transport: streams and why (no link to fill locally: ``default``)."""
    if kind != "ssh" or not (link_mbit and rtt_ms):
        return default, f"streams auto: {default} (no link capacity and round-trip time given)"
    return streams_for_link(link_mbit, rtt_ms), explain(link_mbit, rtt_ms)
