"""``push.streams: auto``: the number of streams follows the link (one ssh stream: 2 MiB per round trip)."""

from __future__ import annotations

import pytest

from dwfhpc.config import load_site
from dwfhpc.errors import ConfigError
from dwfhpc.link.capacity import chosen_streams, stream_ceiling_mb_s, streams_for_link
from dwfhpc.push import Push, PushOptions


def test_one_ssh_stream_carries_one_window_per_round_trip():
    assert stream_ceiling_mb_s(300) == pytest.approx(2 * 1024 * 1024 / 0.3 / 1e6)
    assert stream_ceiling_mb_s(150) == pytest.approx(2 * stream_ceiling_mb_s(300))
    with pytest.raises(ValueError):
        stream_ceiling_mb_s(0)


@pytest.mark.parametrize("mbit, rtt, n", [(200, 300, 4), (1000, 300, 18), (1000, 30, 2), (100, 300, 2),
                                         (10_000, 300, 64), (56, 300, 2), (400, 300, 8)])
def test_streams_fill_the_link_between_2_and_64(mbit, rtt, n):
    assert streams_for_link(mbit, rtt) == n
    if 2 < n < 64:  # one stream fewer would not fill it
        assert (n - 1) * stream_ceiling_mb_s(rtt) < mbit / 8 <= n * stream_ceiling_mb_s(rtt)


def test_auto_without_a_link_says_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="link_mbit"):
        load_site("local", workdir=tmp_path, overrides={"push": {"streams": "auto"}, "transport": {
            "kind": "ssh", "host": "cluster", "known_hosts": str(tmp_path / "kh")}})
    assert chosen_streams("local", None, None)[0] == 4


def test_push_with_streams_auto_opens_one_transport_per_stream_and_packs_as_many_parts(tmp_path):
    (tmp_path / "kh").write_text("cluster ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO+placeholder+key+for+a+config+test\n")
    site = load_site("local", workdir=tmp_path, overrides={
        "push": {"streams": "auto", "parts": 2},
        "transport": {"kind": "ssh", "host": "cluster", "known_hosts": str(tmp_path / "kh"),
                      "link_mbit": 1000, "rtt_ms": 300}})
    push = Push(site, PushOptions(quiet=True, live=False))
    try:
        assert push.site.push.streams == 18 and push.site.push.parts == 18
        assert len(push.transports) == 18
        assert "18" in push.streams_reason and "7.0 MB/s" in push.streams_reason
    finally:
        push.journal.close()
        push.lock.release()
