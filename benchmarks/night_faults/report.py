"""The fault campaign's results: one row per fault, the required outcome, the raw evidence; the campaign saved for
``--faults --reanalyse`` and read back."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from common.procs import REPO
from common.slurm import PrivateSlurm
from common.tables import count, load_between, short

from .campaign import Campaign
from .evidence import Evidence, failures_named
from .registry import FAULT_PORTS, FAULTS


def write_fault_results(args, camp: Campaign, ev: Evidence, rows: list[dict], meta: dict) -> str:
    expected = {r["expected_loss"] for r in rows if r.get("expected_loss")}
    unexpected_lost = [e for e in ev.lost if e not in expected]
    named = failures_named(ev, camp)
    warm = meta.get("ingest_mode") == "workers"
    mode = (f"workers {meta['workers']} (`ingest --workers {meta['workers']}`: warm Slurm workers claiming CCD "
            f"tickets, walltime {meta['worker_minutes']} min, successor {meta['worker_replace_minutes']:g} min and no "
            f"new CCD {meta['worker_stop_minutes']:g} min before it ends)" if warm else
            "arrays (`ingest --array`: one Slurm array per part, one task per CCD)")
    ingest_cmd = (f"`ingest --workers {meta['workers']} --executor slurm`" if warm else "`ingest --array --executor slurm`")
    late = (f", plus {meta['n_late_cal']} calibration frames of the same night written among the science (fault "
            "new-masters)" if meta.get("n_late_cal") else "")
    lines = [
        f"# Fault campaign ({'workers ' + str(meta['workers']) if warm else 'arrays'}): a night over the emulated WAN "
        "with faults injected while exposures are in flight", "",
        f"**Mode: {mode}.**", "",
        f"Run {meta['date']} UTC: `{meta['command']}` (commit `{meta['commit']}`), on this shared 2-core VM "
        f"({meta['load']}; other engineers' runs share it). Link `{camp.wan.mode}`, 300 ms RTT, 200 Mbit/s "
        f"(tests/infra/wan). Slurm: "
        + (f"the three-node cluster of `SLURM_NODES=3 tests/infra/start-slurm.sh` (`{camp.slurm.prefix}`: one "
           "slurmctld, slurmd dwfn1..dwfn3 each in its own network, UTS and mount namespaces with a private "
           f"{args.scratch_mb} MB tmpfs scratch, `SLURM_TMPDIR`; SlurmdTimeout 20 s, ReturnToService 2). "
           if getattr(args, "nodes", 0) else
           f"a private instance of `tests/infra/start-slurm.sh` (`{camp.slurm.prefix}`, "
           "4 CPUs advertised) so that stopping its slurmd touches nobody else's jobs. ")
        + "The link stayed up, untouched by "
        f"other runs, from set-up to tear-down: {'yes' if meta.get('wan_intact') else 'NO (results suspect)'}."
        + (f" Tables re-derived from this run's databases and records with `--reanalyse` on {meta['reanalysed']}."
           if meta.get("reanalysed") else ""), "",
        f"**Night:** {meta['n_cal']} calibration frames, then {meta['n_sci']} science exposures every {args.cadence:g} s{late}, "
        f"{camp.nccd} CCDs each (K={args.streams} parts, `push --streams {args.streams}`, "
        f"{ingest_cmd}); push `incomplete_timeout` {args.incomplete_timeout:g} s, rsync "
        f"`timeout_seconds` {args.rsync_timeout:g} s; ingest `max_attempts` {args.max_attempts}, `lost_after_seconds` "
        f"{args.lost_after:g}; "
        + (f"`node_failures_exclude` {args.node_failures_exclude}, `node_failure_window_minutes` "
           f"{args.node_failure_window:g}; node scratch each node's own tmpfs (`node.scratch_vars: [SLURM_TMPDIR]`, "
           if getattr(args, "nodes", 0) else
           f"node scratch a {args.scratch_mb} MB tmpfs (`node.scratch_vars: [DWF_FAULTS_SCRATCH]` "
           "(unset), `scratch_fallback` = the tmpfs, ")
        + f"`min_free_gb` {args.scratch_min_free_gb:g}). Wall time "
        f"{meta['wall']:.0f} s; {'drained' if meta['drained'] else 'NOT drained (drain timeout)'}. Times are seconds after "
        "the first science exposure was written.", "",
        "Restarts after (2) and (3) and slurmd's restart after (4) are done by the harness, standing in for a "
        "supervisor (systemd `Restart=always`, cron); nothing else is done by hand until the night is over. "
        + ("In worker mode (5) cancels one warm worker busy with a CCD (the running Slurm tasks are workers). "
           if warm else "") +
        "\"Detected by\" and \"recovered by\" quote the journal, the state DB, the node result files and the logs.", "",
        "| fault | when | detected by | recovered by | exposures lost | CCDs calibrated twice | time to recover |",
        "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        lost = (", ".join(r["lost"]) if r["lost"] else "0") + (f" (+ {r['expected_loss']}: expected, named)"
                                                               if r.get("expected_loss") else "")
        twice = ", ".join(r["twice"]) if r["twice"] else "0"
        mark = "" if r["ok"] else " **FAIL**"
        lines.append(f"| {r['fault']}{mark} | {r['when']} | {r['detected']} | {r['recovered']} | {lost} | {twice} | {r['ttr']} |")
    checks = [
        ("0 exposures lost (except the truncated raw file)", not unexpected_lost,
         f"lost: {', '.join(f'{e} ({ev.done.get(e, 0)}/{camp.nccd} CCDs done)' for e in ev.lost) or 'none'}"),
        ("the truncated raw file named in the push journal", all(r["ok"] for r in rows if r["name"] == "truncated-raw"),
         next((r["detected"] for r in rows if r["name"] == "truncated-raw"), "not injected")),
        ("0 CCDs calibrated twice (node results with products, per CCD)", not ev.twice,
         ", ".join(f"{e}/{c} x{len(v)}" for (e, c), v in ev.twice.items()) or "none"),
        ("0 CCDs submitted twice at the same attempt (specs of the submissions)", not ev.sub_twice,
         ", ".join(f"{p} CCD {c} attempt {a} x{len(v)}" for (p, c, a), v in ev.sub_twice.items()) or "none"),
        ("product files: one set per CCD done, no stray temporaries",
         sum(ev.products.values()) == ev.sci_done and not ev.stray,
         f"{sum(ev.products.values())} `.cal.fits.fz` for {ev.sci_done} science CCDs done; strays: {ev.stray or 'none'}"),
        ("every failure named with its reason (state DB / journal)", not named["unnamed"],
         named["text"]),
        ("push and ingest never died on their own", not camp.unexpected,
         ", ".join(f"{u['name']} run {u['run']} exit {u['rc']}" for u in camp.unexpected) or "none"),
        ("every fault recovered without a person", all(r["ok"] for r in rows),
         ", ".join(r["name"] for r in rows if not r["ok"]) or "all")]
    lines += ["", "## Required outcome", "", "| check | result | evidence |", "|---|---|---|"]
    for what, ok, evd in checks:
        lines.append(f"| {what} | {'pass' if ok else '**FAIL**'} | {short(evd, 400)} |")
    counts = count(f"{t['kind']}/{t['state']}" for t in ev.tasks)
    lines += ["", f"Tasks by kind/state at the end: {counts}; parts in the state DB by state: "
              f"{count(p['state'] for p in ev.sparts.values())}; push journal exposures by state: "
              f"{count(e['state'] for e in ev.jexp.values())}; {len(ev.subs)} {'submissions (tickets for the workers)' if warm else 'array submissions'}; node results seen: "
              f"{len(ev.results)} ({count(r['status'] for r in ev.results)}).", ""]
    if warm:
        from .warm import workers_summary

        lines += [workers_summary(camp), ""]
    notes = [f"- {r['name']}: {n}" for r in rows for n in r["notes"]]
    if getattr(camp, "reconciled", None):
        rc = camp.reconciled
        lines += ["## After the night: an operator's end-of-night reconcile (by a person, not counted above)", "",
                  f"`dwfhpc push --once --mode end-of-night` (the continuous push stopped first) exited {rc['rc']} after "
                  f"{rc['t1'] - rc['t0']:.0f} s; exposures whole afterwards: {meta.get('whole_after')} of "
                  f"{len(ev.written)}; lost afterwards: {meta.get('lost_after') or 'none'}; CCDs calibrated twice "
                  f"afterwards: {meta.get('twice_after') or 'none'}; parts whose state changed: "
                  + (", ".join(f"{k} -> {v['state']}" for k, v in meta.get("reconcile_parts", {}).items()) or "none")
                  + ". Its log: "
                  + short(meta.get("reconcile_log", ""), 900), ""]
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    lines += ["Raw evidence (every fault's record, events, Slurm queue snapshots, node results): `night_faults.json`.", ""]
    return "\n".join(lines)


def save_campaign(camp: Campaign, meta: dict) -> None:
    """What the analysis needs besides the databases (``--faults --reanalyse`` reads it back)."""
    keep = {k: getattr(camp, k, None) for k in ("records", "squeue_log", "t_ref", "t_quiet", "unexpected", "reconciled",
                                                  "drained", "truncate", "nccd", "worker_log", "pool_log", "gen_log",
                                                  "night_beats", "night_caches")}
    keep.update(meta=meta, wan_mode=camp.wan.mode, slurm_prefix=str(camp.slurm.prefix), written=camp.tel.written,
                files=[(str(p), k) for p, k in camp.files], results=list(camp.results.values()),
                night_results=list(camp.ev_night_results.values()), scratch=str(camp.scratch),
                night_products=camp.ev_night.products, night_stray=camp.ev_night.stray)
    (camp.work / "campaign.json").write_text(json.dumps(keep, indent=1, default=str))


def load_campaign(args) -> tuple[Campaign, dict]:
    from types import SimpleNamespace

    work = args.work.resolve()
    d = json.loads((work / "campaign.json").read_text())
    m = d["meta"]
    args.workers = m.get("workers") or 0  # the campaign's mode, whatever the command line says
    args.nodes = m.get("nodes") or 0
    for k in ("worker_minutes", "worker_replace_minutes", "worker_stop_minutes"):
        if k in m:
            setattr(args, k, m[k])
    camp = Campaign(args, work, SimpleNamespace(mode=d["wan_mode"]), PrivateSlurm(Path(d["slurm_prefix"]), FAULT_PORTS),
                    [(Path(p), k) for p, k in d["files"]], d["nccd"], Path(d["scratch"]), d["truncate"])
    for k in ("records", "t_ref", "t_quiet", "unexpected", "reconciled", "drained"):
        setattr(camp, k, d[k])
    for k, empty in (("worker_log", []), ("pool_log", []), ("gen_log", []), ("night_beats", {}), ("night_caches", {})):
        setattr(camp, k, d.get(k) or empty)
    camp.squeue_log = [tuple(x) for x in d["squeue_log"]]
    camp.tel = SimpleNamespace(written=d["written"])
    camp.results = {(r["file"], r["started"], i): r for i, r in enumerate(d["results"])}
    night = {(r["file"], r["started"], i): r for i, r in enumerate(d["night_results"])}
    camp.ev_night = Evidence(camp, work / "night-state.sqlite", work / "night-journal.sqlite", night)
    camp.ev_night.products, camp.ev_night.stray = d["night_products"], d["night_stray"]
    return camp, d["meta"]


def analyse_campaign(args, camp: Campaign, meta: dict) -> int:
    work = camp.work
    if args.reanalyse:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        meta["reanalysed"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC (commit `{head}`)"
    ev = camp.ev_night
    order = sorted((r["t0"], n) for n, r in camp.records.items() if not FAULTS[n].passive)
    rows = []
    for n in args.fault_list:
        if n in camp.records:
            t_next = min((t for t, m in order if t > camp.records[n]["t0"] + 1), default=float("inf"))
            rows.append(FAULTS[n].analyse(camp.records[n], ev, camp, t_next))
    if getattr(camp, "reconciled", None):
        after = Evidence(camp, camp.state, camp.journal, camp.results)
        meta["whole_after"] = len(after.whole)
        meta["lost_after"] = ", ".join(after.lost)
        meta["twice_after"] = ", ".join(f"{e}/{c}" for e, c in after.twice)
        meta["reconcile_parts"] = {s: {"state": p["state"], "reason": p["reason"]} for s, p in after.sparts.items()
                                   if ev.sparts.get(s, {}).get("state") != p["state"]}
    meta["load"] = load_between(work / "load.txt", camp.t_ref - 60, camp.t_quiet)
    text = write_fault_results(args, camp, ev, rows, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.exists() else ""
    if args.reanalyse and "\n## Findings" in old:  # the hand-written findings of this run survive a re-analysis
        text = text.rstrip("\n") + "\n\n## Findings" + old.split("\n## Findings", 1)[1]
    args.out.write_text(text)
    raw = {"meta": meta, "t_ref": camp.t_ref, "rows": rows, "records": camp.records, "unexpected": camp.unexpected,
           "reconciled": getattr(camp, "reconciled", None),
           "state_events": ev.sevents, "journal_events": ev.jevents, "journal_files": ev.jfiles,
           "squeue": camp.squeue_log, "results": ev.results, "twice": {f"{e}/{c}": v for (e, c), v in ev.twice.items()},
           "lost": ev.lost, "products": ev.products}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)
    return 0

