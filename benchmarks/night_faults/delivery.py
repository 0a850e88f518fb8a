"""Faults on the sender's side and on the way: the link, push, the parts in staging and the inbox, the raw files."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from common.tables import rel, short
from common.wan import wanlink
from common.procs import say
from dwfhpc.states import FileState, PartState, SentPartState, TaskState

from .base import Fault


class LinkCut(Fault):
    """The link cut for ``--cut-seconds`` while a part is on the wire; push's stream retries recover."""

    name = "link-cut"
    title = "(1) link cut {cut:g} s"
    at = 10

    def inject(self, c) -> dict:
        sending = c.wait_for(lambda: c.q(c.journal, "SELECT expid, k FROM parts WHERE state=?", (SentPartState.SENDING,)), 60)
        time.sleep(0.5)
        if not wanlink.intact(c.wan):  # never cut a link that is not ours
            raise RuntimeError("the WAN is not ours any more")
        t_down, t_up = c.wan.cut(c.args.cut_seconds)
        return {"t0": t_down, "t1": t_up, "sending": [f"{r['expid']}.p{r['k']}" for r in sending or []]}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref = camp.t_ref
        t0, t1 = rec["t0"], rec["t1"]
        row["when"] += f" (while {', '.join(rec['sending']) or 'nothing'} on the wire)"
        parts = [p for p in ev.jparts if (p["t_packed"] or 0) <= t1 and (p["t_confirmed"] is None or p["t_confirmed"] >= t0)]
        affected = {p["expid"] for p in parts}
        retries = ev.jev(t0, min(t1 + 120, t_next), "retry")
        if retries:
            row["detected"] = (f"push journal: {len(retries)} `retry` warnings from {rel(retries[0]['t'], t_ref)} "
                               f"(first: \"{short(retries[0]['message'], 130)}\")")
        else:
            row["detected"] = "nothing: no retry in the push journal (the transfers stalled and resumed: TCP held)"
        conf = [p["t_confirmed"] for p in parts if p["t_confirmed"]]
        row["recovered"] = (f"push's stream retries (backoff): the {len(parts)} parts caught in the cut all confirmed, "
                            f"up to {max((p['attempts'] for p in parts), default=0)} attempts"
                            if len(conf) == len(parts) else f"{len(parts) - len(conf)} of {len(parts)} parts never confirmed")
        row["ttr"] = (f"{max(conf) - t1:.0f} s after the link came back ({max(conf) - t0:.0f} s after the cut)"
                      if conf else "never")
        row["ok"] = len(conf) == len(parts)
        return affected


class PushKill(Fault):
    """``kill -9`` of push while a part is being sent, restarted by the harness (a supervisor)."""

    name = "push-kill"
    title = "(2) `kill -9` push mid-transfer, restart"
    at = 60

    def inject(self, c) -> dict:
        sending = c.wait_for(lambda: c.q(c.journal, "SELECT expid, k, t_send_start FROM parts WHERE "
                                               "state=? AND t_send_start < ?", (SentPartState.SENDING, time.time() - 0.3)), 60)
        undelivered = c.undelivered()
        t = time.time()
        pid = c.kill9("push")
        time.sleep(c.args.restart_after)
        t1 = time.time()
        c.start("push")
        return {"t0": t, "t1": t1, "pid": pid, "run_after": c.runs["push"], "undelivered": undelivered,
                "sending": [{"expid": r["expid"], "k": r["k"]} for r in sending or []]}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        a = camp.args
        t0, t1 = rec["t0"], rec["t1"]
        sending = {(s["expid"], s["k"]) for s in rec["sending"]}
        row["when"] += f" (mid-transfer: {', '.join(f'{e}.p{k}' for e, k in sorted(sending)) or 'nothing sending'})"
        parts = [p for p in ev.jparts if (p["expid"], p["k"]) in sending]
        affected = {e for e, _ in sending} | {r["expid"] for r in rec["undelivered"]}
        resume = ev.push_log(rec["run_after"], "resume")
        dups = ev.sev(t0, min(t1 + 180, t_next), "delivered again")
        row["detected"] = (f"the restarted push's recovery from the journal (parts left `sending`): "
                           f"{len(resume)} `event=resume` lines (" + short("; ".join(l.split('event=resume', 1)[1].strip()
                                                                                    for l in resume), 120) + ")")
        conf = [p["t_confirmed"] for p in parts if p["t_confirmed"]]
        row["recovered"] = (f"restart by the supervisor (the harness, after {a.restart_after:g} s); the interrupted parts "
                            f"sent again and confirmed (attempts {', '.join(str(p['attempts']) for p in parts)}); "
                            f"ingest: {len(dups)} duplicate deliveries dropped (same sha256)")
        row["ttr"] = f"{max(conf) - t0:.0f} s (kill to the interrupted parts confirmed)" if conf and len(conf) == len(parts) else "never"
        row["ok"] = bool(parts) and len(conf) == len(parts)
        return affected


class ByteFlip(Fault):
    """One byte flipped in a science part in the receiver's staging, before its move into the inbox."""

    name = "byte-flip"
    title = "(7) one byte flipped in a delivered part"
    at = 235

    def inject(self, c) -> dict:
        deadline = time.time() + 120
        while time.time() < deadline and not c.stop.is_set():
            try:
                entries = list(os.scandir(c.staging))
            except FileNotFoundError:
                entries = []
            for e in entries:
                if e.name.startswith(".") or not e.name.endswith(".tar") or e.name.split(".")[0] not in c.sci_expids:
                    continue
                try:
                    with open(e.path, "r+b") as f:
                        size = os.fstat(f.fileno()).st_size
                        off = size // 2
                        f.seek(off)
                        b = f.read(1)
                        f.seek(off)
                        f.write(bytes([b[0] ^ 0xFF]))
                        f.flush()
                        os.fsync(f.fileno())
                except (FileNotFoundError, IndexError):
                    continue
                t = time.time()
                moved = not Path(e.path).exists()
                say(f"fault: flipped byte {off} of {e.name} in staging" + (" (already moved to the inbox)" if moved else ""))
                return {"t0": t, "t1": t, "stem": e.name[:-4], "offset": off, "size": size, "moved_meanwhile": moved}
            time.sleep(0.003)
        return {"t0": time.time(), "t1": time.time(), "error": "no science part seen in staging within 120 s"}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref = camp.t_ref
        t0 = rec["t0"]
        stem = rec["stem"]
        expid = stem.split(".")[0]
        affected = {expid}
        row["when"] += f" (byte {rec['offset']} of {stem}.tar, in staging before the move to the inbox)"
        sp = ev.sparts.get(stem)
        qdirs = sorted((camp.work / "cluster" / "quarantine").glob(f"{stem}*"))
        reason = (qdirs[0] / "reason.txt").read_text().strip() if qdirs and (qdirs[0] / "reason.txt").exists() else None
        damaged = ev.jev(t0, t0 + 600, f"moving {stem} into the inbox failed")
        if damaged:  # push's remote check (tarball vs manifest sha256) before the move into the inbox
            row["detected"] = (f"push's check in staging before the move into the inbox: {len(damaged)} journal "
                               f"`retry` warning(s), first {rel(damaged[0]['t'], t_ref)}: \"{short(damaged[0]['message'], 140)}\"")
        else:
            row["detected"] = (f"ingest's verification: state DB part `{sp['state']}`, reason \"{short(sp['reason'], 120)}\""
                               + (f"; `{qdirs[0].relative_to(camp.work)}/reason.txt`" if qdirs else "")
                               if sp else "the state DB has no row for the part")
        jp = next((p for p in ev.jparts if f"{p['expid']}.p{p['k']}of{p['n']}" == stem), None)
        resent = jp and (jp["t_confirmed"] or 0) > t0 + 5
        tasks = [t for t in ev.tasks if t["part"] == stem]
        row["recovered"] = ("nothing: push had confirmed the part (journal `confirmed`, attempts "
                            f"{jp['attempts'] if jp else '?'}) and never sends it again; no task exists for its CCDs"
                            if not resent and not tasks else
                            f"push sent it again (confirmed {rel(jp['t_confirmed'], t_ref)}); tasks: "
                            + ", ".join(t["state"] for t in tasks))
        done = [t for t in tasks if t["state"] == TaskState.DONE]
        row["ttr"] = f"{max(t['t_finished'] for t in done) - t0:.0f} s" if tasks and len(done) == len(tasks) else "never"
        row["ok"] = bool(tasks) and len(done) == len(tasks)
        qev = ev.sev(t0, t0 + 600, "quarantined", part=stem)
        if qev:
            row["detected"] += f"; state DB event {rel(qev[0]['t'], t_ref)}: \"{short(qev[0]['message'], 110)}\""
        if reason:
            row["notes"].append(f"quarantine reason.txt: {short(reason, 200)}")
        if getattr(camp, "reconciled", None):
            now = camp.q(camp.state, "SELECT state FROM parts WHERE stem=?", (stem,))
            row["notes"].append(f"after the operator's end-of-night reconcile the part is `{now[0]['state'] if now else 'absent'}` "
                                "in the state DB (see below)")
        return affected


class TruncatedRaw(Fault):
    """A raw file the telescope writes cut to half its size (chosen before the night): an expected, named loss."""

    name = "truncated-raw"
    title = "(8) truncated raw file at the telescope"
    at = 265
    passive = True  # only waits for the telescope to write the file chosen before the night

    def inject(self, c) -> dict:
        expid = c.truncate.split(".")[0]
        w = c.wait_for(lambda: c.tel.written.get(expid), 600, every=0.5)
        return {"t0": w or time.time(), "t1": w or time.time(), "name": c.truncate, "expid": expid}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref, a = camp.t_ref, camp.args
        t0 = rec["t0"]
        affected = {rec["expid"]}
        row["when"] += f" ({rec['name']} written cut to half its size)"
        jf = next((f for f in ev.jfiles if f["path"].endswith("/" + rec["name"])), None)
        je = ev.jev(t0, t0 + 3600, rec["name"])
        row["detected"] = (f"push journal: files row `{jf['state']}`, reason \"{short(jf['reason'], 120)}\""
                           + (f"; error event {rel(je[0]['t'], t_ref)}" if je else "") if jf else "not in the push journal")
        row["recovered"] = "nothing to recover: the expected, named loss (never packed or sent)"
        row["ttr"] = f"named {je[0]['t'] - t0:.0f} s after it was written (push.incomplete_timeout {a.incomplete_timeout:g} s)" if je else "never named"
        row["ok"] = bool(jf and jf["state"] == FileState.FAILED and jf["reason"])
        row["expected_loss"] = rec["expid"]
        return affected


class DuplicatePart(Fault):
    """A part already done copied from the parts store into the inbox again (tarball, then manifest)."""

    name = "duplicate-part"
    title = "(9) the same part delivered twice"
    at = 290

    def inject(self, c) -> dict:
        rows = c.wait_for(lambda: c.q(c.state, "SELECT stem, tar, manifest FROM parts WHERE kind='science' "
                                                        "AND state=? ORDER BY t_done DESC LIMIT 1", (PartState.DONE,)),
                          120, every=1)
        if not rows:
            return {"t0": time.time(), "t1": time.time(), "error": "no science part was done"}
        r = rows[0]
        t = time.time()
        for src in (Path(r["tar"]), Path(r["manifest"])):  # tarball first, manifest last, as push delivers
            tmp = c.inbox / f".{src.name}.copy"
            shutil.copyfile(src, tmp)
            os.replace(tmp, c.inbox / src.name)
        say(f"fault: {r['stem']} copied into the inbox again")
        return {"t0": t, "t1": time.time(), "stem": r["stem"]}

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        t_ref = camp.t_ref
        t0 = rec["t0"]
        stem = rec["stem"]
        affected = {stem.split(".")[0]}
        row["when"] += f" ({stem}: tarball + manifest copied from the parts store into the inbox)"
        evs = ev.sev(t0, t0 + 120, part=stem)
        subs = [s for s in ev.subs if s["part"] == stem]
        row["detected"] = (f"ingest's inbox scan, state DB event {rel(evs[0]['t'], t_ref)}: \"{short(evs[0]['message'], 100)}\""
                           if evs else "no state DB event about the copy")
        left = [p.name for p in camp.inbox.glob(f"{stem}*")]
        # a retried CCD is submitted again at its next attempt: what must not happen is a CCD submitted twice at
        # the same attempt (the copy queued as a new delivery), so submissions are counted per (CCD, attempt)
        per = {(ccd, att): len(v) for (part, ccd, att), v in ev.submitted.items() if part == stem}
        dup = sorted(k for k, n in per.items() if n > 1)
        first = [s for s in subs if s["t_submitted"] and s["t_submitted"] < t0]
        row["recovered"] = (f"dropped from the inbox (files left: {left or 'none'}); the part has {len(subs)} "
                            f"submission(s) ({len(first)} before the copy), "
                            + (f"CCD attempts submitted twice: {', '.join(f'CCD {c} a{a}' for c, a in dup)}" if dup else
                               "each (CCD, attempt) once")
                            + f"; task attempts {sorted(t['attempt'] for t in ev.tasks if t['part'] == stem)}")
        row["ttr"] = f"{evs[0]['t'] - t0:.1f} s (copy to dropped)" if evs else "never"
        row["ok"] = bool(evs) and bool(subs) and not dup and not left
        return affected
