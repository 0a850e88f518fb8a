"""Faults of warm workers' preloaded calibrations (``--faults --workers N``): new masters arriving mid-night (the
workers must copy them again), and the node scratch filling up while the workers' copies live in it."""

from __future__ import annotations

import re
import subprocess
import time

from common.procs import dwfhpc, env, say
from common.tables import pct, rel, short
from dwfhpc.states import TaskState
from night_telescope import stash_files

from .base import Fault
from .cluster import ScratchFull
from .warm import at_walltime, exit_reasons, lifetimes, live_workers

#: the late calibration frames' first exposure number (after any science exposure of the campaign)
LATE_EXPNUM = 1100901


def _worker_gens(camp) -> dict[str, list[tuple[float, int]]]:
    """worker -> [(t, masters generation)] at each change seen by the observer."""
    out: dict[str, list[tuple[float, int]]] = {}
    for t, seen in camp.worker_log:
        for w, (state, ticket, gen, pid) in seen.items():
            if gen is not None and (w not in out or out[w][-1][1] != gen):
                out.setdefault(w, []).append((t, gen))
    return out


class NewMasters(Fault):
    """One more bias and dome flat of the same night written by the telescope among the science exposures: ingest
    rebuilds the night's masters and bumps ``masters.generation``; the warm workers copy them again."""

    name = "new-masters"
    title = "(13) new masters mid-night (one more bias + dome flat)"
    at = 460
    passive = True  # the telescope writes the frames (placed in its schedule before the night); nothing to inject
    workers_only = True

    def prepare(self, args, work, files: list) -> list:
        late = work / "stash-late"
        subprocess.run(dwfhpc("simulate", "--biases", "1", "--flats", "1", "--exposures", "0", "--ccds", args.ccds,
                              "--seed", "7", "--start-expnum", str(LATE_EXPNUM), "--out", str(late)),
                       env=env(), check=True, stdout=subprocess.DEVNULL)
        extra = stash_files(late)
        sci = [i for i, (_, k) in enumerate(files) if k == "science"]
        k = min(len(sci) - 1, round(self.at * args.fault_scale / args.cadence))
        say(f"new-masters: {', '.join(p.name for p, _ in extra)} written after science exposure {k + 1} of {len(sci)}")
        return files[: sci[k] + 1] + extra + files[sci[k] + 1:]

    def inject(self, c) -> dict:
        first = next((i for i, (_, k) in enumerate(c.files) if k == "science"), len(c.files))
        late = [p.name.split(".")[0] for p, k in c.files[first:] if k != "science"]
        if not late:
            return {"t0": time.time(), "t1": time.time(), "error": "no calibration frame scheduled among the science"}
        gen = c.generation()
        c.wait_for(lambda: all(e in c.tel.written for e in late), 900, every=0.5)
        t0, t1 = c.tel.written.get(late[0], time.time()), c.tel.written.get(late[-1], time.time())
        say(f"fault: {', '.join(late)} written (masters generation {gen})")
        return {"t0": t0, "t1": t1, "expids": late, "gen_before": gen, "live": sorted(live_workers(c))}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, t0, t1 = camp.t_ref, rec["t0"], rec["t1"]
        late = rec["expids"]
        row["when"] += f" ({', '.join(late)} written {rel(t0, t_ref)}..{rel(t1, t_ref)}, masters generation {rec['gen_before']})"
        ltasks = [t for t in ev.tasks if t["expid"] in late]
        cal_done = [t for t in ltasks if t["state"] == TaskState.DONE]
        built = ev.sev(t0, t0 + 900, "masters built")
        bump = next(((t, g) for t, g in camp.gen_log if t >= t0 and g > rec["gen_before"]), None)
        row["detected"] = (f"ingest: {len(cal_done)}/{len(ltasks)} late calibration CCDs done, then "
                           + (f"state DB {rel(built[0]['t'], t_ref)}: \"{short(built[0]['message'], 80)}\"" if built
                              else "no masters build event")
                           + (f"; `masters.generation` {rec['gen_before']} -> {bump[1]} at {rel(bump[0], t_ref)}" if bump
                              else "; `masters.generation` never moved on"))
        affected = set(late)
        if not bump:
            row.update(recovered="nothing: the workers were never told of new masters", ttr="never", ok=False)
            return affected
        tb, gnew = bump
        lt = lifetimes(camp)
        gens = _worker_gens(camp)
        at_bump = sorted(w for w, x in lt.items() if (x["started"] or 0) < tb < x["end"])
        after = sorted(w for w, x in lt.items() if (x["started"] or 0) >= tb)
        reloaded, stale = {}, []
        for w in at_bump:
            t_new = next((t for t, g in gens.get(w, []) if g >= gnew and t >= tb - 3), None)
            later = [r for r in ev.results if r.get("worker") == w and (r.get("claimed") or 0) > tb]
            if t_new is not None:
                reloaded[w] = (t_new, min(later, key=lambda r: r["claimed"]) if later else None)
            elif later:
                stale.append(w)  # it took CCDs after the bump without copying the new masters
        usual = pct([r.get("preload") for r in ev.results if r.get("preload") is not None], 50)
        window = [r for r in ev.results if tb - 5 <= (r.get("finished") or 0) <= tb + 180]
        # failures of the reload: any but a full scratch (fault scratch-full-worker) or a signal (a cancelled worker)
        failed = [r for r in window if r["status"] != "ok" and not r.get("interrupted")
                  and not any(k in (r.get("error") or "") for k in ("scratch has", "No space left"))]
        sci = [r for r in window if r.get("kind") == "science"]
        row["recovered"] = ("workers reloaded: " + ("; ".join(
            f"{w} on generation {gnew} {t - tb:.0f} s after the bump"
            + (f" (its next CCD {r['expid']}/{r['ccd']}: preload {r['preload']:.2f} s, usual p50 {usual:.2f} s)" if r and
               r.get("preload") is not None else "") for w, (t, r) in sorted(reloaded.items())) or "none")
            + (f"; NOT reloaded although they ran CCDs after: {', '.join(stale)}" if stale else "")
            + (f"; {len(after)} worker(s) started after the bump on generation {gnew}" if after else "")
            + f"; {len(sci)} science CCDs ran in the 3 min after the bump, {len(failed)} failed"
            + (" (" + "; ".join(f"{r['expid']}/{r['ccd']} a{r['attempt']}: {short(r['error'], 60)}" for r in failed[:3]) + ")"
               if failed else ""))
        t_all = max((t for t, _ in reloaded.values()), default=None)
        row["ttr"] = (f"{tb - t1:.0f} s from the last frame written to the new generation; every live worker on it "
                      + (f"{t_all - tb:.0f} s later" if t_all is not None else "(none live took a CCD)"))
        row["ok"] = len(cal_done) == len(ltasks) and bool(ltasks) and not stale and not failed
        row["notes"].append("product headers name the master files (MBIAS/MFLAT: file name and night), the same names "
                            "after a rebuild; the reload is read from the workers' heartbeats (`masters_generation`) "
                            "and the preload time of their next CCD")
        affected |= {r["expid"] for r in ev.results if tb - 30 <= (r.get("claimed") or 0) <= tb + 120}
        return affected


def _du_mb(path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.is_dir() else 0.0


class ScratchFullWorker(ScratchFull):
    """The node scratch filled while the warm workers' preloaded calibrations live in it: CCDs failing for it are
    retried within ``max_attempts``, the workers are not killed, and CCDs run again once it is freed."""

    name = "scratch-full-worker"
    title = "(14) node scratch full {scratch:g} s under warm workers (their masters preloaded in it)"
    at = 540
    workers_only = True

    def inject(self, c) -> dict:
        before = live_workers(c)
        caches = {w: round(_du_mb(c.scratch / f"dwfhpc-{re.sub(r'[^A-Za-z0-9._-]', '_', w)}-cal"), 1) for w in before}
        rec = super().inject(c)
        rec.update(workers_before={w: b.get("pid") for w, b in before.items()}, cache_mb=caches,
                   live_after=sorted(live_workers(c)))
        return rec

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        affected = super().examine(row, rec, ev, camp, t_next)
        t0, t1, a = rec["t0"], rec["t1"], camp.args
        row["when"] += ("; workers' preloaded calibrations in it: "
                        + (", ".join(f"{w} {mb:g} MB" for w, mb in rec["cache_mb"].items()) or "no worker live"))
        lt, why = lifetimes(camp), exit_reasons(camp)
        died = [w for w in rec["workers_before"] if w in lt and t0 <= lt[w]["end"] <= t1 + 60
                and not at_walltime(why.get(w, {}).get("reason", ""))]
        hit = [r for r in ev.results if r["error"] and "scratch" in r["error"].lower() and t0 - 5 <= (r["finished"] or 0) <= t1 + 30]
        by = sorted({r.get("worker") for r in hit if r.get("worker")})
        tasks = [ev.task(p, c) for p, c in sorted({(r["file"].split(".a")[0], r["ccd"]) for r in hit})]
        # resource failures (the scratch) are retried without using up an attempt: the attempt number still
        # counts up, ``resource_retries`` says how many of them were not counted
        worst = max(((t["attempt"] or 0) - (t.get("resource_retries") or 0) for t in tasks if t), default=0)
        spared = sum(t.get("resource_retries") or 0 for t in tasks if t)
        row["recovered"] += (f"; at most {worst} of {a.max_attempts} attempts used ({spared} resource retries not "
                             "counted as attempts)" if hit else "")
        row["recovered"] += ("; workers not killed: " + (", ".join(w for w in rec["workers_before"] if w not in died)
                                                        or "none was live")
                             + (f" (failed CCDs reported by {', '.join(by)}: they went on claiming)" if by else "")
                             + (f"; DIED meanwhile: {', '.join(died)}" if died else ""))
        row["ok"] = row["ok"] and not died and worst <= a.max_attempts
        return affected
