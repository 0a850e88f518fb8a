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
    # the same file main() reads by default: whichever night.json the results dir holds (arrays or workers)
    path = nm.parse_args([]).night_json
    assert path == nm.NIGHT_JSON
    ni = nm.night_inputs(path)
    s = nm.summary(nm.simulate(nm.measured_night_params(ni)))
    assert abs(s["p95"] / ni["measured"]["p95"] - 1) <= 0.20


# --------------------------------------------------------------------------- CPU contention
CONTENDED = dict(cluster_slots=2, cadence_s=30.0, n_exposures=5, nccd=12, cluster_cores=2.0, telescope_busy_s=20.0)


@pytest.mark.parametrize("kw", [{}, {"cadence_s": 12.0}, {"cluster_slots": 4}, {"mode": "workers", "start_s": 0.0,
                                                                                 "release_s": 0.0}])
def test_cpu_contention_never_lowers_latency(kw):
    base = small(**{**CONTENDED, **kw})
    off = totals(replace(base, cluster_cores=0.0))
    # cores to share but nothing else running: the tasks fit (2 slots, 2 cores) unless there are more slots
    alone = totals(base)
    assert all(a >= o - 1e-9 for o, a in zip(off, alone))
    prev = alone
    for tel, bg, cores in ((10.0, 0.0, 2.0), (30.0, 0.0, 2.0), (30.0, 0.5, 2.0), (30.0, 0.5, 1.0), (60.0, 1.5, 1.0)):
        cur = totals(replace(base, telescope_cpu_s=tel, background_cores=bg, cluster_cores=cores))
        assert all(c >= p - 1e-9 for p, c in zip(prev, cur)), (tel, bg, cores)
        prev = cur
    assert sum(prev) > sum(off) + 1.0  # and it does stretch


def test_cpu_contention_stretches_calibrate_by_the_share():
    # one CCD, one slot, 1 core, a constant background of 1 core: the task gets half a core all along
    p = small(n_exposures=1, nccd=1, parts=1, streams=1, cluster_slots=1, cluster_cores=1.0, background_cores=1.0)
    e = nm.simulate(p)[0]
    assert e["stages"]["stage"] == pytest.approx(2 * p.stage_s)
    assert e["stages"]["calibrate"] == pytest.approx(2 * p.calibrate_s)
    assert sum(e["stages"].values()) == pytest.approx(e["total"])
    # two tasks on two cores, nothing else: no stretch
    q = small(n_exposures=1, nccd=2, parts=1, streams=1, cluster_slots=2, cluster_cores=2.0)
    assert nm.simulate(q)[0]["stages"]["calibrate"] == pytest.approx(q.calibrate_s)


# --------------------------------------------------------------------------- streams follow the link
def test_auto_streams_are_the_package_choice():
    from dwfhpc.link.capacity import streams_for_link
    assert nm.auto_streams(200.0, 0.3) == streams_for_link(200.0, 300.0) == 4
    assert nm.auto_streams(1000.0, 0.3) == streams_for_link(1000.0, 300.0) > 4


def test_auto_streams_fill_the_link_better_than_4_at_1_gbit():
    lp = nm.link_params("stream")
    site = dict(n_exposures=3, nccd=62, mb_per_ccd=5.7, pack_ccd_s=0.164, telescope_cores=8, link_mbit=1000.0,
                cluster_slots=62, mode="workers", dispatch_s=0.1, release_s=0.0, start_s=0.0, **lp)
    n = nm.auto_streams(1000.0, lp["rtt_s"])
    four = nm.simulate(nm.Params(parts=4, streams=4, **site))
    auto = nm.simulate(nm.Params(parts=n, streams=n, **site))
    for f, a in zip(four, auto):
        assert a["total"] < f["total"] - 5.0
        assert a["stages"]["transfer"] < f["stages"]["transfer"]
    # 4 streams are capped at 4 x one stream's ceiling, auto at the link's usable rate
    mb = 62 * 5.7
    assert four[0]["stages"]["transfer"] >= mb / (4 * lp["stream_cap_mb_s"]) - 1e-6
    assert auto[0]["stages"]["transfer"] < mb / (4 * lp["stream_cap_mb_s"]) / 2
    # at 200 Mbit/s auto is 4: the same night
    s200 = {**site, "link_mbit": 200.0}
    m = nm.auto_streams(200.0, lp["rtt_s"])
    assert totals(nm.Params(parts=m, streams=m, **s200)) == totals(nm.Params(parts=4, streams=4, **s200))


def test_site_params_auto_streams_sets_parts_too():
    ni = nm.night_inputs(nm.NIGHT_JSON)
    p = nm.site_params(ni, 1000.0, "workers", "stream", streams="auto")
    assert p.streams == p.parts == nm.auto_streams(1000.0, 0.3)
    assert p.cluster_cores == 0.0  # site scale: no contention
    assert nm.site_params(ni, 200.0, "workers", streams=4).streams == 4


# --------------------------------------------------------------------------- the reader: both formats
def _night(mode: str, *, cpu: bool = True, legacy: bool = False, n_exp: int = 3, nccd: int = 4) -> dict:
    """A small night.json as ``night_run.write_results`` writes it: arrays (Slurm queue/start) or warm workers
    (wait_worker, dispatch, start = claimed -> started, worker); ``legacy``: no ingest_mode/transport/cpu."""
    t0 = 1.0e9
    ccds, exposures = [], []
    for i in range(n_exp):
        written = t0 + 60.0 * i
        mine = []
        for j in range(nccd):
            st = {"wait": 1.0, "pack": 5.0 + 0.1 * j, "transfer": 10.0, "inbox": 0.1, "hold": 0.2}
            if mode == "workers":
                waited = j >= 2  # 2 workers: the third CCD on waits for one
                st.update({"wait_worker": 2.0 * (j - 1) if waited else 0.0, "dispatch": 0.3 if waited else 0.1,
                           "start": 0.05})
            else:
                st.update({"queue": 0.5 + j, "start": 2.0})
            st.update({"stage": 0.4, "calibrate": 1.6, "copyback": 0.03, "other": 0.02})
            total = sum(st.values())
            rec = {"expid": f"E{i}", "ccd": j + 1, "total": total, "finished": written + total, "attempt": 1,
                   "stages": st}
            if mode == "workers":
                rec.update({"worker": f"w{j % 2}", "preload": 0.0})
            mine.append(rec)
        ccds += mine
        last = max(mine, key=lambda c: c["finished"])
        exposures.append({"expid": f"E{i}", "ccds": nccd, "total": last["total"], "stages": last["stages"],
                          "written": written, "finished": last["finished"], "pack_busy": 4.0, "send_busy": 11.0,
                          "cluster_busy": 8.0})
    meta = {"mode": "tun+delayline", "nccd": nccd, "n_cal": 2, "n_sci": n_exp, "mb_per_exp": 5.7 * nccd,
            "n_seed": 0, "wall": 300.0, "date": "2026-12-07 17:00"}
    ours = {"ccds": ccds, "exposures": exposures, "counts": {}, "submissions": n_exp, "parts": n_exp,
            "push_retries": 0, "max_attempt": 1}
    if not legacy:
        meta.update({"transport": "stream", "ingest_mode": mode, "workers": 2 if mode == "workers" else 0})
        ours.update({"ingest_mode": mode, "workers_seen": 2 if mode == "workers" else 0})
        if cpu:
            comp = {"push (watch, pack, send)": 30.0, "WAN emulator": 15.0, "ingest daemon": 3.0,
                    "warm workers (node code)" if mode == "workers" else "node tasks (arrays, seed)": 1.5 * n_exp * nccd,
                    "other processes": 18.0}
            meta["cpu"] = {"components": comp, "machine": {"busy_s": sum(comp.values()) + 6.0,
                                                           "capacity_s": 360.0, "window_s": 180.0}}
    return {"meta": meta, "ours": ours, "seed": None}


def _write(tmp_path, d) -> Path:
    import json
    f = tmp_path / "night.json"
    f.write_text(json.dumps(d))
    return f


def test_reader_accepts_the_arrays_format(tmp_path):
    for legacy in (True, False):
        ni = nm.night_inputs(_write(tmp_path, _night("arrays", legacy=legacy)))
        assert ni["mode"] == "arrays" and ni["workers"] == 0
        assert ni["transport"] == ("rsync" if legacy else "stream")
        assert ni["cpu"] is None  # no warm workers' row: no contention
        assert ni["n_exposures"] == 3 and ni["nccd"] == 4 and len(ni["ccds"]) == 12
        assert ni["task_means"]["start"] == pytest.approx(2.0)
        p = nm.measured_night_params(ni)
        assert p.mode == "arrays" and p.cluster_slots == 4 and p.cluster_cores == 0.0
        assert ni["measured"]["p95"] == pytest.approx(nm.pct([e["total"] for e in ni["exposures"]], 95))


def test_reader_accepts_the_workers_format(tmp_path):
    ni = nm.night_inputs(_write(tmp_path, _night("workers")))
    assert ni["mode"] == "workers" and ni["workers"] == 2 and ni["transport"] == "stream"
    # the queue is wait for a worker + dispatch; every stage in the model's names
    c = ni["ccds"][3]
    assert set(c["stages"]) == set(nm.STAGES)
    assert c["stages"]["queue"] == pytest.approx(2.0 * 2 + 0.3)
    assert ni["dispatch_s"] == pytest.approx(0.1)   # idle worker: ticket -> claimed
    assert ni["release_s"] == pytest.approx(0.3)    # busy worker: end of its CCD -> next claimed
    assert ni["gaps_n"] == 6
    assert ni["task_means"]["start"] == pytest.approx(0.05)
    cpu = ni["cpu"]
    assert cpu["worker_cpu_per_ccd"] == pytest.approx(1.5)
    assert cpu["telescope_cpu_per_exp"] == pytest.approx((30.0 + 15.0 + 3.0) / 3)
    assert cpu["background_cores"] == pytest.approx((18.0 + 6.0) / 180.0)
    assert cpu["cores"] == pytest.approx(2.0)
    p = nm.measured_night_params(ni)
    assert p.mode == "workers" and p.cluster_slots == 2 and p.start_s == pytest.approx(0.05)
    assert p.dispatch_s == pytest.approx(0.1) and p.release_s == pytest.approx(0.3)
    assert p.cluster_cores == pytest.approx(2.0) and p.telescope_cpu_s == pytest.approx(16.0)
    assert p.stage_s + p.calibrate_s == pytest.approx(1.5)  # the CPU per CCD, at one core
    assert p.stage_s / p.calibrate_s == pytest.approx(0.4 / 1.6)
    off = nm.measured_night_params(ni, contention=False)
    assert off.cluster_cores == 0.0 and off.calibrate_s == pytest.approx(1.6)
    # without CPU figures: the run's wall times, no contention
    bare = nm.night_inputs(_write(tmp_path, _night("workers", cpu=False)))
    assert bare["cpu"] is None and nm.measured_night_params(bare).cluster_cores == 0.0
    # the model runs on it
    assert nm.summary(nm.simulate(p))["p95"] > 0


def test_main_reads_night_json_and_writes_out(tmp_path, monkeypatch):
    monkeypatch.setattr(nm, "SITE_SEEDS", 1)
    monkeypatch.setattr(nm, "BOOT_SEEDS", 3)
    src = _write(tmp_path, _night("workers", n_exp=4))
    out = tmp_path / "model.md"
    nm.main(["--night-json", str(src), "--out", str(out)])
    text = out.read_text()
    assert "warm workers" in text and "CPU contention (this VM)" in text and "streams_for_link" in text
    assert "**Validation:" in text
