"""``dwfhpc jobs`` on a real Slurm: held, pending and foreign jobs told apart in one query."""

import json

import pytest

from dwfhpc.cli import main


@pytest.mark.slurm
def test_jobs_counts_our_tasks_by_state(slurm_cluster, capsys):
    held = slurm_cluster.run("sbatch", "--parsable", "--hold", "--array=0-2", "-J", "dwf-DECam_00000001-p1",
                             "-o", "/dev/null", "--wrap", "true").stdout.strip()
    other = slurm_cluster.run("sbatch", "--parsable", "--hold", "-J", "someone-else", "-o", "/dev/null",
                              "--wrap", "true").stdout.strip()
    try:
        assert main(["jobs", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        ours = [t for t in data["tasks"] if t["job_id"].startswith(held)]
        assert data["counts"].get("HELD", 0) >= 1 and ours and all(t["state"] == "HELD" for t in ours)
        assert not [t for t in data["tasks"] if t["name"] == "someone-else"]
    finally:
        slurm_cluster.run("scancel", held, other, check=False)
