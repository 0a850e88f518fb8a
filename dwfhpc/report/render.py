"""Render a night as one self-contained HTML page with inline SVG plots.

Input is a :class:`~dwfhpc.report.model.NightData` (built from the state DB by
:mod:`dwfhpc.report.collect`); nothing here touches the database, so the page can be rendered
from any source and tested on its own.
"""

from __future__ import annotations

import html
import io
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .. import __version__  # noqa: E402
from ..atomic import atomic_write_text  # noqa: E402
from ..instruments import decam_focal_plane, hsc_focal_plane  # noqa: E402
from .counts import GROUPS, LABELS, CCDCounts, tally  # noqa: E402
from ..states import DisplayState  # noqa: E402
from .model import STAGES, NightData, percentile  # noqa: E402

STATE_COLOURS = {DisplayState.DONE: "#2e7d32", DisplayState.FAILED: "#c62828", DisplayState.LOST: "#6a1b9a",
                 DisplayState.RUNNING: "#f9a825", DisplayState.QUEUED: "#90a4ae", DisplayState.MISSING: "#eceff1"}


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _times(values: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(v, tz=timezone.utc) for v in values]


def plot_exposures_over_time(data: NightData) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    done = sorted(e.t_products for e in data.exposures if e.t_products)
    arrived = sorted(e.t_complete for e in data.exposures if e.t_complete)
    if arrived:
        ax.step(_times(arrived), range(1, len(arrived) + 1), where="post", label="file complete at telescope")
    if done:
        ax.step(_times(done), range(1, len(done) + 1), where="post", label="all CCDs calibrated")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("exposures")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Exposures over the night")
    fig.autofmt_xdate()
    return _svg(fig)


def plot_latency_stages(data: NightData) -> str:
    exposures = [e for e in data.exposures if e.stages]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if exposures:
        labels = [str(e.expnum) for e in exposures]
        positions = np.arange(len(exposures))
        bottom = np.zeros(len(exposures))
        for stage in STAGES:
            vals = np.array([e.stages.get(stage, 0.0) for e in exposures])
            ax.bar(positions, vals, bottom=bottom, label=stage)
            bottom += vals
        ax.legend(fontsize=7, ncol=3)
        step = max(1, len(labels) // 12)
        ax.set_xticks(positions[::step], labels[::step])
    ax.set_xlabel("exposure")
    ax.set_ylabel("seconds")
    ax.set_title("Latency from file complete to products, by stage")
    return _svg(fig)


def plot_quality(data: NightData) -> str:
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    science = [e for e in data.exposures if e.kind == "science" and e.t_complete]
    t = _times([e.t_complete for e in science])
    for ax, attr, label in zip(axes, ("fwhm", "sky", "nsources"), ("seeing FWHM (arcsec)", "sky (ADU)", "sources per CCD")):
        ax.plot(t, [getattr(e, attr) if getattr(e, attr) is not None else np.nan for e in science], "o-", ms=3)
        ax.set_ylabel(label, fontsize=8)
    axes[0].set_title("Seeing, sky and source counts (median over CCDs)")
    axes[-1].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    return _svg(fig)


FOCAL_PLANES = {"decam": ("DECam", decam_focal_plane.ccd_boxes), "hsc": ("HSC", hsc_focal_plane.ccd_boxes)}
_WORST_LAST = [DisplayState.MISSING, DisplayState.DONE, DisplayState.QUEUED, DisplayState.RUNNING,
               DisplayState.FAILED, DisplayState.LOST]


def focal_plane_states(data: NightData) -> dict[int, str]:
    """The map's state per CCD: the worst over the night's science exposures (all exposures when none)."""
    science = {e.expid for e in data.exposures if e.kind == "science"}
    ccds = [c for c in data.ccds if c.expid in science] or data.ccds
    states: dict[int, str] = {}
    for c in ccds:
        state = c.state if c.state in _WORST_LAST else DisplayState.MISSING
        prev = states.get(c.ccd)
        if prev is None or _WORST_LAST.index(state) > _WORST_LAST.index(prev):
            states[c.ccd] = state
    return states


def focal_plane_boxes(data: NightData) -> tuple[str, dict[int, tuple[str, float, float, float, float]]]:
    """The camera's name and its CCD boxes; an anonymous grid for an instrument without a layout."""
    if data.instrument in FOCAL_PLANES:
        name, boxes = FOCAL_PLANES[data.instrument]
        return name, boxes()
    ccds = sorted({c.ccd for c in data.ccds}) or list(range(16))
    return data.instrument, {c: (f"{c}", (i % 13) * 2200, (i // 13) * 4300, 2048, 4176) for i, c in enumerate(ccds)}


def plot_focal_plane(data: NightData) -> str:
    """CCD status (colour) and median FWHM (text) on the instrument's focal plane (camera coordinates).

    DECam: DETSEC of the real raw headers; HSC: obs_subaru's camera description, by DET-ID (see
    :mod:`dwfhpc.instruments.hsc_focal_plane`). CCDs not observed this night are drawn as missing.
    """
    states = focal_plane_states(data)
    science = {e.expid for e in data.exposures if e.kind == "science"}
    fwhm: dict[int, list[float]] = {}
    for c in data.ccds:
        if c.fwhm is not None and c.expid in science:
            fwhm.setdefault(c.ccd, []).append(c.fwhm)
    camera, boxes = focal_plane_boxes(data)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    fontsize = 5 if len(boxes) <= 70 else 4
    for ccd, (name, x0, y0, w, h) in boxes.items():
        state = states.get(ccd, DisplayState.MISSING)
        ax.add_patch(Rectangle((x0, y0), w, h, facecolor=STATE_COLOURS.get(state, "#eceff1"), edgecolor="k", lw=0.5,
                               gid=f"ccd-{ccd}-{state}"))
        label = name
        if ccd in fwhm:
            label += f"\n{np.median(fwhm[ccd]):.2f}\""
        ax.text(x0 + w / 2, y0 + h / 2, label, ha="center", va="center", fontsize=fontsize)
    xs = [b[1] for b in boxes.values()] + [b[1] + b[3] for b in boxes.values()]
    ys = [b[2] for b in boxes.values()] + [b[2] + b[4] for b in boxes.values()]
    ax.set_xlim(min(xs) - 500, max(xs) + 500)
    ax.set_ylim(min(ys) - 500, max(ys) + 500)
    ax.set_aspect("equal")
    ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in STATE_COLOURS.values()]
    ax.legend(handles, list(STATE_COLOURS), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=6, frameon=False)
    ax.set_title(f"{camera} focal plane: science CCD state and median FWHM")
    return _svg(fig)


def night_counts(data: NightData) -> dict[str, CCDCounts]:
    """The night's science and calibration CCD counts: the state DB's, or tallied from ``data.ccds``."""
    if data.counts is not None:
        return data.counts
    kinds = {e.expid: e.kind for e in data.exposures}
    return tally((kinds.get(c.expid, "science"), c.state) for c in data.ccds)


def _summary_rows(data: NightData) -> list[tuple[str, str]]:
    counts = night_counts(data)
    lat = [e.latency for e in data.exposures if e.latency is not None and e.kind == "science"]
    kinds = {k: sum(e.kind == k for e in data.exposures) for k in ("science", "bias", "flat")}
    return [
        ("night", data.night),
        ("instrument", data.instrument),
        ("exposures", f"{kinds['science']} science, {kinds['bias']} bias, {kinds['flat']} flat"),
        *((LABELS[g], f"{counts[g].calibrated} calibrated, {counts[g].failed} failed, {counts[g].lost} lost, "
                      f"{counts[g].in_flight} in flight (of {counts[g].total})") for g in GROUPS),
        ("science latency p50 / p95", f"{percentile(lat, 50):.1f} s / {percentile(lat, 95):.1f} s" if lat else "n/a"),
        *_mode_rows(data),
    ]


def _mode_rows(data: NightData) -> list[tuple[str, str]]:
    """How the CCDs ran (arrays or warm workers), their queue wait, what the runaway guard stopped and the nodes
    excluded for repeated resource failures."""
    rows = []
    if data.mode:
        w = data.mode.get("workers")
        rows.append(("mode", f"warm workers: {w['alive']} alive ({w['busy']} busy, {w['idle']} idle)"
                     if w else "one job array per part"))
    q = data.queue_seconds or {}
    if q.get("n"):
        rows.append(("per CCD submitted -> running p50 / p95", f"{q['p50']:.1f} s / {q['p95']:.1f} s"))
    for stop in data.stops:
        rows.append((f"resubmissions stopped ({stop['scope']} {stop['name']})", stop["reason"]))
    for node in data.excluded_nodes:
        rows.append((f"node excluded ({node['node']})", node["reason"]))
    return rows


def render_html(data: NightData) -> str:
    """The whole page as a string."""
    esc = html.escape
    summary = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _summary_rows(data))
    failures = [c for c in data.ccds if c.state in (DisplayState.FAILED, DisplayState.LOST)]
    fail_rows = "".join(
        f"<tr><td>{esc(c.expid)}</td><td>{c.ccd}</td><td>{esc(c.state)}</td><td>{c.attempts}</td><td>{esc(c.reason or '')}</td></tr>"
        for c in failures
    ) or '<tr><td colspan="5">none</td></tr>'
    exp_rows = "".join(
        f"<tr><td>{e.expnum}</td><td>{esc(e.expid)}</td><td>{esc(e.kind)}</td><td>{esc(e.filter)}</td><td>{esc(e.field)}</td>"
        f"<td>{e.n_done}/{e.n_ccds}</td><td>{'' if e.latency is None else f'{e.latency:.1f}'}</td>"
        f"<td>{'' if e.fwhm is None else f'{e.fwhm:.2f}'}</td></tr>"
        for e in data.exposures
    )
    plots = {
        "exposures": plot_exposures_over_time(data),
        "latency": plot_latency_stages(data),
        "quality": plot_quality(data),
        "focalplane": plot_focal_plane(data),
    }
    figures = "".join(f'<figure class="plot" id="plot-{k}">{v}</figure>' for k, v in plots.items())
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>DWF night report {esc(data.night)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
th {{ background: #f4f4f4; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure.plot {{ margin: 0; border: 1px solid #ddd; padding: 4px; }}
figure.plot svg {{ max-width: 640px; height: auto; }}
</style></head><body>
<h1>DWF night report: {esc(data.night)}</h1>
<p>dwfhpc {esc(__version__)}, generated {generated}</p>
<table id="summary">{summary}</table>
<div class="plots">{figures}</div>
<h2>Failures</h2>
<table id="failures"><tr><th>exposure</th><th>CCD</th><th>state</th><th>attempts</th><th>reason</th></tr>{fail_rows}</table>
<h2>Exposures</h2>
<table id="exposures"><tr><th>expnum</th><th>exposure</th><th>kind</th><th>filter</th><th>field</th><th>CCDs done</th><th>latency (s)</th><th>FWHM (")</th></tr>{exp_rows}</table>
</body></html>
"""


def write_report(data: NightData, out_dir: Path) -> Path:
    """Write ``night-<night>.html`` into ``out_dir`` atomically and return its path."""
    out = Path(out_dir) / f"night-{data.night}.html"
    atomic_write_text(out, render_html(data))
    return out
