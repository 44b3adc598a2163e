"""Nothing lost, nothing misleading: a crash while writing progress.csv, a closed stdout, two runs in one second,
unwritable places, and damaged or missing files of finished runs each end in one line and a documented exit code, and
never in a silently wrong log, count or report."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BATCH, ROOT, TINY, read_progress, script, train


def one_error_line(err, prefix):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in ("sps", "wall_time", "rollout_time", "update_time")} for r in rows]


# --- the scripts ---


def test_a_row_cut_by_a_crash_is_never_kept_and_the_resumed_log_is_the_uninterrupted_one(tmp_path, finished_runs):
    # a crash while iteration 3's row was written, after iteration 2's checkpoint: the row is cut (no newline)
    mod = script("ppo_wm")
    real_save = mod.save_checkpoint

    def crash_at_iteration_3(path, args, parts, counters, rollout=None):
        if path.endswith("checkpoint.pt") and counters["iteration"] == 3:
            raise KeyboardInterrupt("the crash")
        real_save(path, args, parts, counters, rollout)

    mod.save_checkpoint = crash_at_iteration_3
    try:
        with pytest.raises(KeyboardInterrupt):
            train("ppo_wm", tmp_path, "--total-timesteps", 3 * BATCH, "--checkpoint-interval", 2)
    finally:
        mod.save_checkpoint = real_save
    (run_dir,) = tmp_path.iterdir()
    lines = (run_dir / "progress.csv").read_text().splitlines(keepends=True)
    (run_dir / "progress.csv").write_text("".join(lines[:-1]) + lines[-1][:2])  # "38", as a crash leaves it
    time.sleep(1.1)  # TensorBoard names its files by the second
    assert mod.main(["--resume", str(run_dir)]) == 0
    assert untimed(read_progress(run_dir)) == untimed(read_progress(finished_runs["ppo_wm"]))


@pytest.mark.parametrize("damage", ["a row deleted", "progress.csv deleted"])
def test_rows_lost_before_the_checkpoint_are_one_line_and_nothing_is_written(damage, tmp_path, finished_runs, capsys):
    run_dir = Path(shutil.copytree(finished_runs["ppo_continuous"], tmp_path / "run"))
    progress = run_dir / "progress.csv"
    if damage == "progress.csv deleted":
        progress.unlink()
    else:
        lines = progress.read_text().splitlines(keepends=True)
        progress.write_text("".join(lines[:2] + lines[3:]))  # iteration 2's row
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    for steps in (3 * BATCH, 4 * BATCH):  # finished, and extended
        assert script("ppo_continuous").main(["--resume", str(run_dir), "--total-timesteps", str(steps)]) == 2
        line = one_error_line(capsys.readouterr().err, f"ppo_continuous.py: error: {progress} lacks rows up to its ")
        assert line.endswith(f"move {run_dir} aside and train the run again")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_a_closed_stdout_stops_the_run_as_a_signal_does(tmp_path):
    # `python ppo_wm.py | head -1`: the run checkpoints at the end of its iteration and exits 128 + SIGPIPE
    cmd = [sys.executable, str(ROOT / "ppo_wm.py"), *TINY, "--total-timesteps", str(400 * BATCH)]
    proc = subprocess.Popen([*cmd, "--runs-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"run ")
    proc.stdout.close()  # the reader goes away
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 128 + signal.SIGPIPE
    (run_dir,) = tmp_path.iterdir()
    one_error_line(err, f"stopped by signal {int(signal.SIGPIPE)}; resume: python ppo_wm.py --resume {run_dir}")
    iterations = len(read_progress(run_dir))
    assert 1 <= iterations < 400 and (run_dir / "checkpoint.pt").exists()


def test_two_runs_started_in_the_same_second_get_two_directories(tmp_path):
    now = int(time.time())
    taken = {
        tmp_path / f"Hopper-v4__ppo_continuous__1__{t}" for t in range(now, now + 60)
    }  # another run's, this minute
    for d in taken:
        d.mkdir()
    run_dir = train("ppo_continuous", tmp_path, "--total-timesteps", BATCH)
    assert run_dir.name.endswith("-2") and run_dir.with_name(run_dir.name[:-2]) in taken
    assert (run_dir / "checkpoint.pt").exists() and all(not any(d.iterdir()) for d in taken)


@pytest.mark.parametrize("runs_dir", ["/dev/null/x", "a file"])
def test_an_unwritable_runs_dir_is_one_line_exit_4(runs_dir, tmp_path, capsys):
    if runs_dir == "a file":
        (runs_dir := tmp_path / "a file").write_text("not a folder")
    rc = script("ppo_wm_aux").main([*TINY, "--total-timesteps", str(BATCH), "--runs-dir", str(runs_dir)])
    assert rc == 4
    line = one_error_line(capsys.readouterr().err, f"ppo_wm_aux.py: error: cannot write {runs_dir}")
    assert line.endswith("no checkpoint yet")


def test_a_run_that_diverges_at_once_says_no_checkpoint_was_written(tmp_path):
    cmd = [sys.executable, str(ROOT / "ppo_continuous.py"), *TINY, "--learning-rate", "1e6"]
    out = subprocess.run([*cmd, "--total-timesteps", str(4 * BATCH), "--runs-dir", str(tmp_path)], capture_output=True)
    assert out.returncode == 3
    assert one_error_line(out.stderr.decode(), "ppo_continuous.py: error: diverged at step 128: ").endswith(
        "not logged, no checkpoint was written"
    )
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "diverged.json").read_text())["iteration"] == 1
