"""The simulated telescope of ``night.py``: the night's raw files made beforehand, then written at the cadence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from common.procs import dwfhpc, env, say
from dwfhpc.instruments import instrument_for


class Telescope(threading.Thread):
    """Writes the stash's files into the raw folder at the cadence (copy to a dot-name, then rename)."""

    def __init__(self, files: list[tuple[Path, str]], raw: Path, cal_cadence: float, cadence: float,
                 truncate: set[str] | frozenset[str] = frozenset(), science_gate=None, gate_seconds: float = 0.0):
        super().__init__(name="telescope", daemon=True)
        self.files, self.raw, self.cal_cadence, self.cadence = files, raw, cal_cadence, cadence
        self.truncate = truncate  # file names written cut to half their size (the --faults campaign)
        # afternoon calibrations: science begins once science_gate() is true (tonight's masters built), at most
        # gate_seconds after the last calibration frame; the wait is recorded in gate_waited
        self.science_gate, self.gate_seconds = science_gate, gate_seconds
        self.gate_waited: float | None = None
        self.written: dict[str, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            t_next = time.time()
            prev_kind = None
            for path, kind in self.files:
                if prev_kind is not None:
                    t_next += self.cadence if kind == "science" else self.cal_cadence
                if kind == "science" and prev_kind == "cal" and self.science_gate and self.gate_seconds > 0:
                    t_gate = time.time()
                    while not self.science_gate() and time.time() - t_gate < self.gate_seconds:
                        if self.stop.wait(1.0):
                            return
                    self.gate_waited = time.time() - t_gate
                    why = "tonight's masters built" if self.science_gate() else "gate timed out"
                    say(f"telescope: science begins {self.gate_waited:.0f} s after the last calibration frame ({why})")
                    t_next = max(t_next, time.time())
                prev_kind = kind
                if self.stop.wait(max(0.0, t_next - time.time())):
                    return
                tmp = self.raw / f".{path.name}.part"
                shutil.copyfile(path, tmp)
                if path.name in self.truncate:
                    os.truncate(tmp, path.stat().st_size // 2)
                os.replace(tmp, self.raw / path.name)
                self.written[path.name.split(".")[0]] = time.time()
                say(f"telescope: {path.name} ({kind}) written" + (" TRUNCATED" if path.name in self.truncate else ""))
        except BaseException as exc:  # noqa: BLE001 - reported by the driver
            self.error = exc


def stash_files(stash: Path) -> list[tuple[Path, str]]:
    """The stash's exposures in name order, each with its kind: ``science`` or ``cal``."""
    out = []
    for p in sorted(stash.glob("DECam_*.fits.fz")):
        info = json.loads(subprocess.run(dwfhpc("info", str(p), "--json"), env=env(), capture_output=True, text=True,
                                         check=True).stdout)
        out.append((p, "science" if info.get("kind") == "science" else "cal"))
    return out


def simulate_night(args, work: Path) -> tuple[list, list[Path], list[int]]:
    """Write the night's raw files into ``work/stash``: (files with kinds, science files, CCDs to calibrate).

    The CCDs are those of ``--ccds`` that push packs: the instrument's known-bad CCDs (DECam's 61) are left out."""
    t = time.time()
    if getattr(args, "stash", None):  # the same night's files from an earlier run (hard links: nothing copied)
        for src in sorted(Path(args.stash).iterdir()):
            os.link(src, work / "stash" / src.name)
        say(f"stash: {len(list((work / 'stash').iterdir()))} files linked from {args.stash}")
    else:
        subprocess.run(dwfhpc("simulate", "--biases", str(args.biases), "--flats", str(args.flats), "--exposures",
                              str(args.exposures), "--ccds", args.ccds, "--out", str(work / "stash")),
                       env=env(), check=True, stdout=subprocess.DEVNULL)
    files = stash_files(work / "stash")
    sci = [p for p, k in files if k == "science"]
    info = json.loads(subprocess.run(dwfhpc("info", str(sci[0]), "--json"), env=env(), capture_output=True, text=True,
                                     check=True).stdout)
    good = set(instrument_for(info["instrument"]).good_ccds)
    ccds = sorted(int(c) for c in info["ccds"] if int(c) in good)
    bad = sorted(int(c) for c in info["ccds"] if int(c) not in good)
    say(f"simulated {len(files)} exposures in {time.time() - t:.0f} s; {len(ccds)} CCDs each to calibrate"
        + (f" (known-bad left out: {bad})" if bad else ""))
    return files, sci, ccds
