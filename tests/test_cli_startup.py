"""Start-up of the ``dwfhpc`` command: the top-level parser imports no subcommand, a node task no more than it uses.

Behaviour, not time: what a fresh interpreter has imported after building a parser (or reaching the node
task's code), that ``dwfhpc --help`` lists every module in ``dwfhpc/commands/``, and that every
subcommand's ``--help`` works.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import dwfhpc.commands
from dwfhpc.cli import COMMANDS, build_parser, chosen_command, main

COMMAND_MODULES = sorted(p.stem for p in Path(dwfhpc.commands.__file__).parent.glob("*.py")
                         if not p.stem.startswith("_"))
NOT_FOR_HELP = {"astropy", "scipy", "matplotlib", "submitit", "numpy", "pydantic", "yaml", "rich", "jinja2",
                "fitsio", "glymur", "sep"}
NOT_FOR_NODE = {"matplotlib", "submitit", "scipy", "rich", "jinja2"}


def _fresh(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; it prints one JSON value on its last line."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _imported(roots: set[str]) -> str:
    return f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(roots)!r})))"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {a.dest: a.help for a in _subparsers(parser)._choices_actions}


def test_every_command_module_is_listed_and_nothing_else():
    assert sorted(COMMANDS) == COMMAND_MODULES


def test_listed_help_is_the_help_each_module_registers():
    assert _help_lines(build_parser(full=True)) == COMMANDS
    assert _help_lines(build_parser()) == COMMANDS


def test_top_level_help_lists_every_command_and_imports_no_heavy_package():
    code = ("import contextlib, io, json, sys\nfrom dwfhpc.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try:\n        main(['--help'])\n"
            "    except SystemExit as exc:\n        assert exc.code == 0, exc.code\n"
            "listed = [line.split()[0] for line in out.getvalue().splitlines() if line[:5].strip() and line[:4] == '    ']\n"
            "print(json.dumps({'listed': listed, 'commands': sorted(m for m in sys.modules "
            "if m.startswith('dwfhpc.commands.')), 'heavy': sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {sorted(NOT_FOR_HELP)!r})}}))")
    got = _fresh(code)
    assert got["heavy"] == []
    assert got["commands"] == []  # no subcommand module for the top-level help
    assert sorted(got["listed"]) == COMMAND_MODULES


@pytest.mark.parametrize("argv", [["--help"], ["node", "run", "--help"], ["node", "--help"], ["status", "--help"]])
def test_help_paths_import_no_heavy_package(argv):
    code = ("import json, sys\nfrom dwfhpc.cli import main\ntry:\n"
            f"    main({argv!r})\nexcept SystemExit:\n    pass\n" + _imported(NOT_FOR_HELP))
    assert _fresh(code) == []


def test_node_task_imports_nothing_it_does_not_use():
    """What ``dwfhpc node run`` imports before its CCD: the parser, the node package, the task code."""
    code = ("import json, sys\nfrom dwfhpc.cli import build_parser\nbuild_parser('node')\n"
            "import dwfhpc.node, dwfhpc.node.run\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(NOT_FOR_NODE)!r} or m.startswith(('dwfhpc.report', 'dwfhpc.ingest', 'dwfhpc.push')))))")
    assert _fresh(code) == []


def _all_help_argvs() -> list[list[str]]:
    """``[CMD, --help]`` for every subcommand and ``[CMD, ACTION, --help]`` for every nested one."""
    argvs = []
    for name, parser in _subparsers(build_parser(full=True)).choices.items():
        argvs.append([name, "--help"])
        nested = _subparsers(parser)
        argvs += [[name, action, "--help"] for action in (nested.choices if nested else ())]
    return argvs


def test_every_subcommand_help_exits_0(capsys):
    argvs = _all_help_argvs()
    assert len(argvs) > len(COMMANDS)  # the nested ones (node run, cals build, ...) are there
    for argv in argvs:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0, argv
        assert capsys.readouterr().out.startswith(f"usage: dwfhpc {' '.join(argv[:-1])}"), argv


@pytest.mark.parametrize("argv, chosen", [
    ([], None), (["--help"], None), (["node", "run", "x"], "node"), (["--debug", "-q", "status"], "status"),
    (["--deb", "status", "--json"], "status"), (["nope", "status"], None),
])
def test_chosen_command(argv, chosen):
    assert chosen_command(argv) == chosen


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
