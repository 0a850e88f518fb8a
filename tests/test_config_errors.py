"""Config loading reports every problem in a file at once, one ``file: key.path: problem`` line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dwfhpc.config import TransportSettings, load_any, load_instrument, load_site
from dwfhpc.errors import ConfigError, ConfigProblems

REPO = Path(__file__).resolve().parents[1]

THREE = """\
name: demo
push:
  streems: 3          # unknown key
  codec: rice
transport:
  kind: local
  retries: lots       # wrong type
ingest:
  max_attempts: 0     # bad value
"""


def _expected(path: Path) -> list[str]:
    return [f"{path}: push.streems: unknown key (did you mean 'streams'?)",
            f"{path}: transport.retries: Input should be a valid integer, unable to parse string as an integer "
            f"(got 'lots')",
            f"{path}: ingest.max_attempts: Input should be greater than or equal to 1 (got 0)"]


@pytest.fixture
def three(tmp_path) -> Path:
    f = tmp_path / "three.yaml"
    f.write_text(THREE)
    return f


def test_loader_reports_all_three_problems_with_their_keys(three):
    with pytest.raises(ConfigError) as err:
        load_site(three)
    exc = err.value
    assert isinstance(exc, ConfigProblems)
    assert [p.key for p in exc.problems] == ["push.streems", "transport.retries", "ingest.max_attempts"]
    assert all(p.path == str(three) for p in exc.problems)
    assert [str(p) for p in exc.problems] == _expected(three)
    # str(): a count line, then one line per problem (what any command prints through the CLI)
    assert str(exc).splitlines() == [f"{three}: 3 problems", *_expected(three)]
    with pytest.raises(ConfigProblems):
        load_any(three)


def test_single_problem_stays_a_plain_config_error(tmp_path):
    f = tmp_path / "one.yaml"
    f.write_text("name: x\npush:\n  streems: 3\n")
    with pytest.raises(ConfigError) as err:
        load_site(f)
    assert not isinstance(err.value, ConfigProblems)
    assert err.value.problems == [err.value]
    assert str(err.value) == f"{f}: push.streems: unknown key (did you mean 'streams'?)"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dwfhpc", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_config_check_prints_every_problem_and_exits_2(three):
    proc = _cli("config", "check", str(three))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [*_expected(three), "dwfhpc config: error: 3 problems"]
    assert proc.stdout == ""


def test_cli_config_check_goes_on_to_the_next_file(three, tmp_path):
    good = REPO / "configs" / "local.yaml"
    missing = tmp_path / "missing.yaml"
    proc = _cli("config", "check", str(three), str(good), str(missing))
    assert proc.returncode == 2
    assert proc.stdout.strip() == f"{good}: ok (site config)"
    assert proc.stderr.strip().splitlines() == [*_expected(three), f"{missing}: no such configuration file",
                                                "dwfhpc config: error: 4 problems in 2 of 3 files"]


def test_other_commands_print_the_count_then_every_line(three, capsys):
    from dwfhpc.cli import main

    assert main(["config", "show", str(three)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dwfhpc config: error: {three}: 3 problems", *_expected(three)]


def test_checks_after_validation_join_the_list(tmp_path):
    f = tmp_path / "ssh.yaml"
    f.write_text("name: x\n"
                 "push:\n  streams: 3\n  streams: 5\n"
                 "transport:\n  kind: ssh\n  staging: /fred/staging\n"
                 "  ssh_options: [Compression=no, StrictHostKeyChecking=no, UserKnownHostsFile=/dev/null]\n"
                 "  backoff_seconds: 10\n  backoff_max: 5\n"
                 "scheduler:\n  partition: [a]\n")
    with pytest.raises(ConfigProblems) as err:
        load_site(f)
    got = {p.key: p.problem for p in err.value.problems}
    assert got == {
        "push.streams": "given twice (lines 3 and 4); only the last one counts",
        "transport.host": "required when kind is ssh",
        "transport.known_hosts": "required when kind is ssh: host keys are always checked",
        "transport.inbox": "must be an absolute path when staging is (got 'inbox')",
        "transport.ssh_options": "'StrictHostKeyChecking=no', 'UserKnownHostsFile=/dev/null' switch host-key "
                                 "checking off; record the host key in known_hosts instead",
        "transport.backoff_max": "must be at least backoff_seconds (10) (got 5)",
        "scheduler.partition": "Input should be a valid string (got ['a'])",
    }


def test_a_check_on_an_invalid_key_is_not_reported_twice(tmp_path):
    f = tmp_path / "ssh.yaml"
    f.write_text("name: x\ntransport:\n  kind: ssh\n  host: [1]\n  known_hosts: kh\n")
    with pytest.raises(ConfigError) as err:
        load_site(f)
    assert [(p.key, p.problem) for p in err.value.problems] == [
        ("transport.host", "Input should be a valid string (got [1])")]


def test_strict_host_key_checking_still_refused_on_assignment():
    t = TransportSettings()
    with pytest.raises(ValueError, match="host-key checking off"):
        t.ssh_options = ["StrictHostKeyChecking off"]


def test_instrument_config_problems_all_at_once(tmp_path):
    f = tmp_path / "cam.yaml"
    f.write_text("name: lsst\npixel_scale: -1\nlongitude: 500\nlatitude: 0\nfilterz: [g]\n")
    with pytest.raises(ConfigProblems) as err:
        load_instrument(f)
    assert [p.key for p in err.value.problems] == ["name", "pixel_scale", "longitude", "filterz"]
    assert err.value.problems[3].problem == "unknown key (did you mean 'filters'?)"


def test_missing_required_key_is_reported_last(tmp_path):
    f = tmp_path / "noname.yaml"
    f.write_text("push:\n  streams: x\n")
    with pytest.raises(ConfigProblems) as err:
        load_site(f)
    assert [(p.key, p.problem) for p in err.value.problems] == [
        ("push.streams", "must be a number of streams from 1 to 64, or auto (got 'x')"),
        ("name", "required value is missing")]


def test_shipped_configs_have_no_problems():
    for f in sorted((REPO / "configs").glob("*.yaml")):
        load_any(f)
