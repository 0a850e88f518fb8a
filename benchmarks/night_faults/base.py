"""One fault of the campaign: its schedule, its injection and its analysis (one row of the results table)."""

from __future__ import annotations

from common.tables import rel


class Fault:
    """A fault: subclasses set :attr:`name`, :attr:`title`, :attr:`at` and implement :meth:`inject` and
    :meth:`examine`; :meth:`analyse` wraps :meth:`examine` with what every row shares.

    ``inject(campaign)`` runs in the campaign's fault thread at :attr:`at` (seconds after the first science
    exposure is written, times ``--fault-scale``; at the earliest the previous fault's end plus ``FAULT_GAP``
    unless :attr:`passive`) and returns the fault's record (``t0``, ``t1`` and what the analysis needs; an
    exception is recorded as ``error``). ``analyse(rec, evidence, campaign, t_next)`` reads the night's
    evidence; event windows end where the next fault begins (``t_next``).
    """

    name: str = ""
    #: the table's first column, formatted with ``cut``, ``slurmd``, ``scratch``, ``node_down``, ``node_scratch``
    #: (the durations' options)
    title: str = ""
    #: seconds after the first science exposure is written (before ``--fault-scale``)
    at: float = 0
    #: True: the fault does nothing when injected but wait for its own trigger (it is neither spaced by
    #: ``FAULT_GAP`` from the previous fault nor the end of another fault's event window)
    passive: bool = False
    #: True: only with ``--workers N`` (the campaign's ingest runs warm workers)
    workers_only: bool = False
    #: True: only with ``--nodes 3`` (the campaign runs on the three-node cluster, :mod:`.nodes`)
    nodes_only: bool = False

    def prepare(self, args, work, files: list) -> list:
        """Before the night (after the stash is made): the night's files, in the order the telescope writes them
        (a fault may add its own); default unchanged."""
        return files

    def inject(self, c) -> dict:
        raise NotImplementedError

    def examine(self, row: dict, rec: dict, ev, camp, t_next: float) -> set[str]:
        """Fill ``row``'s ``when`` (appended), ``detected``, ``recovered``, ``ttr``, ``ok`` and ``notes``; return the
        exposures the fault touched."""
        raise NotImplementedError

    def analyse(self, rec: dict, ev, camp, t_next: float = float("inf")) -> dict:
        """One row of the table."""
        a = camp.args
        row = {"fault": self.title.format(cut=a.cut_seconds, slurmd=a.slurmd_seconds, scratch=a.scratch_seconds,
                                          node_down=getattr(a, "node_down_seconds", 0),
                                          node_scratch=getattr(a, "node_scratch_seconds", 0)),
               "name": self.name, "when": rel(rec.get("t0"), camp.t_ref), "detected": "", "recovered": "", "lost": [],
               "twice": [], "ttr": "", "ok": False, "notes": []}
        if rec.get("error"):
            row.update(detected="(not injected)", recovered=rec["error"], ttr="n/a")
            return row
        affected = self.examine(row, rec, ev, camp, t_next)
        row["lost"] = [e for e in ev.lost_of(affected) if e != row.get("expected_loss")]
        row["twice"] = ev.twice_of(affected)
        row["ok"] = row["ok"] and not row["lost"] and not row["twice"]
        row["affected"] = sorted(x for x in affected if x)
        return row
