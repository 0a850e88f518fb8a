"""The state vocabulary lives in :mod:`dwfhpc.states`: no bare state string anywhere else in dwfhpc.

Walks ``dwfhpc/**/*.py`` with :mod:`ast` and fails on a string literal that is a state word

* of a :mod:`dwfhpc.states` enum (task, part, exposure, push journal, stream, scheduler, display), or
* of a batch scheduler (Slurm's squeue/sacct states and pending reasons, PBS's one-letter states),
  anywhere but the scheduler's own translator (``dwfhpc/scheduler/slurm.py``, ``pbs.py``),

used where a state is meant: a comparison or ``in`` test, a key or value of a state map (a dict
literal whose keys are all states), an argument of a state setter or query (``mark_*``,
``set_part``, ``tasks``, ``exposures``, ...) or a ``state=`` keyword, an assignment to a
``state`` (``x.state = ...``, ``fields["state"] = ...``), or a constant that is a collection of
states only (``_RUNNING = ("RUNNING", "COMPLETING")``). Log messages, CLI choices, event names and
count labels are none of these, so they are not looked at.

Run as a script with a folder (``python tests/test_states_vocabulary.py /tmp/old/dwfhpc``) to list
what it finds in another copy of the package (e.g. an older commit's, from ``git archive``).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import dwfhpc
from dwfhpc import states

PACKAGE = Path(dwfhpc.__file__).parent

STATE_ENUMS = (states.PartState, states.TaskState, states.ExposureState, states.FileState,
               states.PushExposureState, states.SentPartState, states.StreamState, states.SchedulerState,
               states.DisplayState)
#: every value of the states enums
STATE_WORDS = frozenset(m.value for enum in STATE_ENUMS for m in enum)
#: the schedulers' own words: Slurm's job states (squeue %T, sacct State), its pending reasons (%r) beyond
#: the generic "None", and PBS's one-letter job states (qstat's S column)
SLURM_STATES = frozenset({
    "PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT",
    "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "REVOKED", "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "HELD"})
SLURM_REASONS = frozenset({
    "Priority", "Resources", "JobArrayTaskLimit", "QOSMaxJobsPerUserLimit", "AssocMaxJobsLimit", "AssocGrpJobsLimit",
    "Dependency", "BeginTime", "launch failed requeued held", "JobHeldAdmin", "JobHeldUser", "ReqNodeNotAvail",
    "NodeDown", "PartitionDown", "PartitionInactive", "BadConstraints"})
PBS_STATES = frozenset("BEFHMQRSTUWXC")
SCHEDULER_WORDS = SLURM_STATES | SLURM_REASONS | PBS_STATES

#: where the schedulers' own words belong: each scheduler's translator into dwfhpc.states
TRANSLATORS = {"scheduler/slurm.py": SLURM_STATES | SLURM_REASONS, "scheduler/pbs.py": PBS_STATES | SLURM_STATES}

#: calls whose (positional or keyword) arguments are states: the state DB's and the journal's setters and queries
STATE_CALLS = frozenset({"tasks", "count_tasks", "parts", "exposures", "set_exposure", "set_part", "update",
                         "_set_task", "QueueEntry", "QueuedTask", "queued_task"})
STATE_CALL_PREFIXES = ("mark_",)

#: justified exceptions: (file under dwfhpc/, word) -> why that literal there is not a state
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("config_load.py", "missing"): "`kind == \"missing\"`: pydantic's error type of a required value, not a display state",
    ("sip_tpv.py", "B"): "`key.split(\"_\")[0] in (\"A\", \"B\", ...)`: the SIP polynomial's name, not a PBS state",
    ("fitscards.py", "T"): "`_LOGICAL = {\"T\": True, \"F\": False}`: a FITS logical card value, not a PBS state",
    ("fitscards.py", "F"): "`_LOGICAL = {\"T\": True, \"F\": False}`: a FITS logical card value, not a PBS state",
    ("night.py", "T"): "`\"T\" not in date_obs`: the ISO date/time separator of DATE-OBS, not a PBS state",
}

#: TODO (files others are changing; to be cleared, with these entries, when they move to dwfhpc.states)
TODO: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Finding:
    path: str  # under the package folder
    line: int
    word: str
    context: str

    def __str__(self) -> str:
        return f"dwfhpc/{self.path}:{self.line}: {self.word!r} ({self.context})"


def _word(node: ast.AST | None, words: frozenset[str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words:
        return node.value
    return None


def _members(node: ast.AST) -> list[ast.AST]:
    """The elements of a tuple/list/set literal (or of ``frozenset({...})``/``set(...)`` of one); else the node."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("frozenset", "set", "tuple") \
            and len(node.args) == 1:
        node = node.args[0]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return list(node.elts)
    return [node]


def _is_state_ref(node: ast.AST) -> bool:
    """``TaskState.DONE`` and the like: a member of a states enum."""
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in {e.__name__ for e in STATE_ENUMS})


def _is_state_target(node: ast.AST) -> bool:
    """``state``, ``x.state``, ``fields["state"]``, ``states[key]`` (a map of states)."""
    if isinstance(node, ast.Name):
        return node.id.lower().endswith("state")
    if isinstance(node, ast.Attribute):
        return node.attr.lower().endswith("state")
    if isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Constant) and node.slice.value == "state":
            return True
        base = node.value
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        return name.lower().endswith(("state", "states"))
    return False


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def scan_source(text: str, path: str, words: frozenset[str]) -> list[Finding]:
    """Bare state words of ``words`` in the state contexts of one module's source."""
    found: list[Finding] = []

    def hit(node: ast.AST | None, context: str) -> None:
        if (w := _word(node, words)) is not None:
            found.append(Finding(path, node.lineno, w, context))

    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                for m in _members(side):
                    hit(m, "comparison")
        elif isinstance(node, ast.Dict):
            keys = [k for k in node.keys if k is not None]
            if keys and all(_word(k, words) is not None or _is_state_ref(k) for k in keys):
                for k, v in zip(node.keys, node.values):
                    hit(k, "key of a state map")
                    hit(v, "value of a state map")
        elif isinstance(node, ast.DictComp):
            if _word(node.key, words) is not None or _word(node.value, words) is not None:
                hit(node.key, "key of a state map")
                hit(node.value, "value of a state map")
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in STATE_CALLS or name.startswith(STATE_CALL_PREFIXES):
                for a in node.args:
                    for m in _members(a):
                        hit(m, f"argument of {name}()")
            for kw in node.keywords:
                if kw.arg is not None and kw.arg.lower().endswith("state"):
                    hit(kw.value, f"{kw.arg}= of {name}()")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if value is None:
                continue
            for target in targets:
                if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
                        and len(target.elts) == len(value.elts):
                    pairs = list(zip(target.elts, value.elts))
                else:
                    pairs = [(target, value)]
                for t, v in pairs:
                    if _is_state_target(t):
                        hit(v, "assigned to a state")
            members = _members(value)
            if members is not None and members != [value] and members \
                    and all(_word(m, words) is not None for m in members):
                for m in members:
                    hit(m, "a constant of states")
    return found


def scan(package: Path) -> list[Finding]:
    """Every bare state word in a state context under ``package`` (a copy of dwfhpc/), states.py excepted."""
    out: list[Finding] = []
    for file in sorted(package.rglob("*.py")):
        rel = file.relative_to(package).as_posix()
        if rel == "states.py":
            continue
        words = STATE_WORDS | (SCHEDULER_WORDS - TRANSLATORS.get(rel, frozenset()))
        out += scan_source(file.read_text(), rel, words)
    return out


def test_no_bare_state_strings_outside_states_py():
    found = scan(PACKAGE)
    bad = [f for f in found if (f.path, f.word) not in EXCEPTIONS and (f.path, f.word) not in TODO]
    assert not bad, "bare state strings (use the dwfhpc.states enums):\n" + "\n".join(map(str, bad))


def test_every_exception_and_todo_is_still_needed():
    found = {(f.path, f.word) for f in scan(PACKAGE)}
    stale = sorted(k for k in (*EXCEPTIONS, *TODO) if k not in found)
    assert not stale, f"exceptions or TODO entries that no longer match anything (remove them): {stale}"


def test_the_scan_catches_each_context_and_leaves_other_strings_alone():
    bad = '''
if t.state == "done": pass
if s in ("failed", "lost"): pass
_MAP = {"queued": "queued", "submitted": "queued"}
db.tasks("queued", night=n)
journal.set_exposure(e, state="packing")
stats.state, stats.part = "sending", ""
fields["state"] = "failed"
_RUNNING = ("RUNNING", "COMPLETING")
ok = entry == "PENDING"
states[t.name] = "RUNNING"
pending = {t.name: "PENDING" for t in waiting}
'''
    found = scan_source(bad, "x.py", STATE_WORDS | SCHEDULER_WORDS)
    assert sorted({f.line for f in found}) == list(range(2, 13)), [str(f) for f in found]
    fine = '''
log.info("%s CCD %d: done", part, ccd)
p.add_argument("--state", choices=["done", "failed"])
view.event("info", "packed", expid=e)
counts = {"accepted": 1, "quarantined": 2, "submitted": 3}
print(c["failed"], CCDCounts(c["calibrated"], c["failed"]))
if t.state == TaskState.DONE: pass
STATE_COLOURS = {DisplayState.DONE: "#2e7d32"}
selection = "failed" if failed else "night"
'''
    assert scan_source(fine, "y.py", STATE_WORDS | SCHEDULER_WORDS) == []


if __name__ == "__main__":  # list what a copy of the package holds: python tests/test_states_vocabulary.py DIR
    results = scan(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE)
    for f in results:
        tag = " [exception]" if (f.path, f.word) in EXCEPTIONS else " [TODO]" if (f.path, f.word) in TODO else ""
        print(f"{f}{tag}")
    print(f"{len(results)} found, {sum((f.path, f.word) not in EXCEPTIONS and (f.path, f.word) not in TODO for f in results)} not excused")
    sys.exit(1 if any((f.path, f.word) not in EXCEPTIONS and (f.path, f.word) not in TODO for f in results) else 0)
