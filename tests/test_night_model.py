"""Invariants of the night model (``benchmarks/night_model.py``): fast, no cluster, no network."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "night_model.py"
_spec = importlib.util.spec_from_file_location("night_model", PATH)
nm = importlib.util.module_from_spec(_spec)
sys.modules["night_model"] = nm  # dataclasses look their module up by name
_spec.loader.exec_module(nm)

FIXED = dict(wait_s=1.5, pack_start_s=2.0, call_setup_s=2.2, rtt_s=0.3, move_rtts=2, inbox_s=0.27, dispatch_s=0.1,
             release_s=1.2, start_s=4.0, stage_s=0.2, calibrate_s=1.0, copyback_s=0.05, other_s=0.3)


def small(**kw) -> "nm.Params":
    base = dict(cadence_s=60.0, n_exposures=6, nccd=16, mb_per_ccd=5.6, pack_ccd_s=0.5, telescope_cores=4, parts=4,
                streams=4, link_mbit=200.0, cluster_slots=16, **FIXED)
    base.update(kw)
    return nm.Params(**base)


def totals(p) -> list[float]:
    return [e["total"] for e in nm.simulate(p)]


def test_zero_cost_stages_give_the_sum_of_fixed_costs():
    p = small(pack_ccd_s=0.0, mb_per_ccd=0.0)
    expected = (p.wait_s + p.pack_start_s + p.call_setup_s + p.move_rtts * p.rtt_s + p.inbox_s + p.dispatch_s
                + p.start_s + p.stage_s + p.calibrate_s + p.copyback_s + p.other_s)
    for t in totals(p):
        assert t == pytest.approx(expected, abs=1e-9)
    # and everything at zero is zero
    assert all(t == pytest.approx(0.0, abs=1e-9) for t in totals(small(
        pack_ccd_s=0.0, mb_per_ccd=0.0, **{k: 0.0 for k in FIXED})))


def test_stage_times_add_up_to_the_latency():
    for e in nm.simulate(small(n_exposures=10, cadence_s=20.0, cluster_slots=5)):
        assert sum(e["stages"].values()) == pytest.approx(e["total"], abs=1e-6)
        assert min(e["stages"].values()) >= -1e-9


def test_link_time_alone_matches_size_over_rate():
    # one part, one stream, nothing else: setup + MB / min(stream ceiling, usable link) + move
    p = small(n_exposures=1, parts=1, streams=1, pack_ccd_s=0.0, stream_cap_mb_s=1e9, link_mbit=80.0,
              link_efficiency=1.0)
    e = nm.simulate(p)[0]
    assert e["stages"]["transfer"] == pytest.approx(p.call_setup_s + 16 * 5.6 / 10.0 + p.move_rtts * p.rtt_s)


@pytest.mark.parametrize("kw", [{}, {"cadence_s": 10.0}, {"streams": 1, "parts": 4}, {"streams": 8, "parts": 8},
                                {"cluster_slots": 3, "cadence_s": 15.0}, {"mb_per_ccd": 30.0, "cadence_s": 20.0}])
def test_doubling_the_link_never_increases_latency(kw):
    for mbit in (50.0, 200.0, 1000.0):
        slow, fast = totals(small(link_mbit=mbit, **kw)), totals(small(link_mbit=2 * mbit, **kw))
        assert all(f <= s + 1e-9 for s, f in zip(slow, fast))


def test_more_slots_or_workers_never_increase_latency():
    base = small(cadence_s=10.0, cluster_slots=4)
    assert all(b <= a + 1e-9 for a, b in zip(totals(base), totals(replace(base, cluster_slots=8))))
    warm = replace(base, mode="workers", start_s=0.0, release_s=0.0)
    assert all(b <= a + 1e-9 for a, b in zip(totals(base), totals(warm)))


def test_a_queue_builds_when_arrivals_outrun_the_cluster():
    # 16 tasks of ~6.75 s on 4 slots: ~27 s of cluster per exposure
    fast = totals(small(n_exposures=12, cadence_s=15.0, cluster_slots=4))  # arrivals faster than service
    slow = totals(small(n_exposures=12, cadence_s=60.0, cluster_slots=4))  # service keeps up
    assert fast[-1] - fast[0] > 100  # grows ~12 s per exposure
    assert all(b > a for a, b in zip(fast, fast[1:]))
    assert max(slow) - min(slow) < 1e-6  # steady state: every exposure alike
    # and the wait is in the scheduler queue
    last = nm.simulate(small(n_exposures=12, cadence_s=15.0, cluster_slots=4))[-1]
    assert max(last["stages"], key=last["stages"].get) == "queue"


def test_masters_hold_delays_tasks_until_ready():
    e = nm.simulate(small(n_exposures=1, masters_ready_s=100.0))[0]
    assert e["written"] + e["total"] > 100.0
    assert e["stages"]["hold"] > 0


def test_percentile_is_numpys_linear():
    assert nm.pct([235.7, 256.8, 261.2, 267.3], 95) == pytest.approx(261.2 + 0.85 * (267.3 - 261.2))
    assert nm.pct([1, 2, 3], 50) == 2


def test_the_measured_night_is_reproduced_within_20_percent():
    ni = nm.night_inputs()
    s = nm.summary(nm.simulate(nm.measured_night_params(ni)))
    assert abs(s["p95"] / ni["measured"]["p95"] - 1) <= 0.20
