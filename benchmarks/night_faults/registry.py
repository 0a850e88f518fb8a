"""The faults of the campaign, in the order they are injected: one class each (:mod:`.delivery`, :mod:`.cluster`)."""

from __future__ import annotations

from .base import Fault
from .cluster import IngestKill, Scancel, ScratchFull, SlurmdStop
from .delivery import ByteFlip, DuplicatePart, LinkCut, PushKill, TruncatedRaw

#: name -> the fault, in the order of the schedule
FAULTS: dict[str, Fault] = {f.name: f for f in (LinkCut(), PushKill(), IngestKill(), SlurmdStop(), Scancel(),
                                                ScratchFull(), ByteFlip(), TruncatedRaw(), DuplicatePart())}
#: seconds at least between the end of one fault and the start of the next (passive faults excepted)
FAULT_GAP = 10
#: the campaign's private Slurm's ports (``tests/infra/start-slurm.sh``): stopping its slurmd disturbs nobody
FAULT_PORTS = {"CTLD_PORT": "7837", "SLURMD_PORT": "7838", "DBD_PORT": "7839", "DB_PORT": "3437"}
