"""The faults of the campaign, in the order they are injected: one class each (:mod:`.delivery`, :mod:`.cluster`;
with ``--workers N`` also :mod:`.warm` and :mod:`.reload`; with ``--nodes 3`` :mod:`.nodes`)."""

from __future__ import annotations

from .base import Fault
from .cluster import IngestKill, Scancel, ScratchFull, SlurmdStop
from .delivery import ByteFlip, DuplicatePart, LinkCut, PushKill, TruncatedRaw
from .nodes import NodeLost, NodeScratchFailing
from .reload import NewMasters, ScratchFullWorker
from .warm import WorkerKill, WorkerScancelAll, WorkerWalltime

#: name -> the fault, in the order of the schedule
FAULTS: dict[str, Fault] = {f.name: f for f in (LinkCut(), PushKill(), IngestKill(), SlurmdStop(), Scancel(),
                                                ScratchFull(), ByteFlip(), TruncatedRaw(), DuplicatePart(),
                                                WorkerKill(), WorkerWalltime(), WorkerScancelAll(), NewMasters(),
                                                ScratchFullWorker(), NodeLost(), NodeScratchFailing())}

#: seconds at least between the end of one fault and the start of the next (passive faults excepted)
FAULT_GAP = 10
#: the campaign's private Slurm's ports (``tests/infra/start-slurm.sh``): stopping its slurmd disturbs nobody
FAULT_PORTS = {"CTLD_PORT": "7837", "SLURMD_PORT": "7838", "DBD_PORT": "7839", "DB_PORT": "3437"}


def fault_list(only: str | None, workers: int, nodes: int = 0) -> list[str]:
    """The faults to inject, in schedule order: ``--only``'s (by default all, or with ``nodes`` the node faults);
    worker faults only with workers, node faults only on the three-node cluster."""
    wanted = only.split(",") if only else [x for x in FAULTS if bool(nodes) == FAULTS[x].nodes_only]
    return [x for x in FAULTS if x in wanted and (workers or not FAULTS[x].workers_only)
            and (nodes or not FAULTS[x].nodes_only)]
