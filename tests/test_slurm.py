"""The runner's --slurm path on a real single-node Slurm cluster. .ci/run starts one (benchmark/slurm/local_cluster.sh)
and sets LIGHTWORLD_SLURM=1; without it this test is skipped, and with it a missing cluster is a failure."""

import csv
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_EXTRA

sys.path.insert(0, str(ROOT / "benchmark"))
import runner  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("LIGHTWORLD_SLURM") != "1", reason="needs a Slurm cluster: run by .ci/run"
)


def test_slurm_job_array_runs_every_run_and_aggregates(tmp_path, capsys):
    assert shutil.which("sbatch"), "sbatch not found: start the cluster with benchmark/slurm/local_cluster.sh"
    common = [
        "--experiment",
        "E1",
        "--env-ids",
        "Hopper-v4",
        "--seeds",
        "1",
        "2",
        "--total-timesteps",
        "256",
        "--extra",
        TINY_EXTRA,
        "--runs-root",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
    ]
    assert runner.main([*common, "--slurm", "--slurm-max-running", "2"]) == 0
    out = capsys.readouterr().out
    job = re.search(r"submitted job array (\d+) with 6 runs", out).group(1)
    deadline = time.time() + 600
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the job array did not finish in 10 minutes"
        time.sleep(2)

    logs = sorted((tmp_path / "runs" / "slurm-E1" / "logs").glob(f"{job}_*.out"))
    assert len(logs) == 6  # one log per array task
    runs = sorted((tmp_path / "runs").glob("*/Hopper-v4__*/progress.csv"))
    assert len(runs) == 6, [log.read_text()[-500:] for log in logs]
    for p in runs:
        assert [int(r["global_step"]) for r in csv.DictReader(open(p))] == [128, 256]
        assert (p.parent / "checkpoint.pt").exists()

    # the outputs aggregate like local runs, and a second submission finds nothing left to do
    assert runner.main([*common, "--report-only"]) == 0
    # other seeds, tasks, steps and flags than E1's: the report's folder says so; variants are named as given
    folder = runner.report_folder("E1", [], [1, 2], ["Hopper-v4"], 256, TINY_EXTRA.split())
    summary = (tmp_path / "results" / folder / "summary.md").read_text()
    for variant in ("ppo", "ppo_wm", "ppo_wm_aux"):
        assert f"| Hopper-v4 | {variant} | 2 |" in summary
    assert runner.main([*common, "--slurm"]) == 0
    assert "all runs already finished" in capsys.readouterr().out
