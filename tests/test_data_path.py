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
    runs = tmp_path / "my runs"  # the printed command quotes the path
    proc = subprocess.Popen([*cmd, "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"run ")
    proc.stdout.close()  # the reader goes away
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 128 + signal.SIGPIPE
    (run_dir,) = runs.iterdir()
    one_error_line(err, f"stopped by signal {int(signal.SIGPIPE)}; resume: python ppo_wm.py --resume '{run_dir}'")
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


# --- the runner and the report ---

sys.path.insert(0, str(ROOT / "benchmark"))
import report  # noqa: E402
import runner  # noqa: E402

from conftest import TINY_EXTRA, make_run  # noqa: E402

POOL = runner.pool_name("ppo", TINY_EXTRA.split(), 256)


def experiment(runs_root, *more):
    """The runner's arguments for two tiny PPO runs on Hopper (seeds 1 and 2)."""
    argv = ["--experiment", "tiny", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1", "2"]
    return [*argv, "--total-timesteps", "256", "--extra", TINY_EXTRA, "--runs-root", str(runs_root), *more]


@pytest.fixture(scope="module")
def finished_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    assert runner.main(experiment(root / "runs", "--no-report")) == 0
    return root / "runs"


def copy_pool(finished_pool, tmp_path):
    return Path(shutil.copytree(finished_pool, tmp_path / "runs"))


def test_a_finished_run_whose_last_row_was_cut_is_one_line_for_the_runner_and_listed_by_the_report(
    finished_pool, tmp_path, capsys
):
    runs = copy_pool(finished_pool, tmp_path)
    run_dir = sorted((runs / POOL).glob("Hopper-v4__*__1__*"))[0]
    text = (run_dir / "progress.csv").read_text()
    (run_dir / "progress.csv").write_text(text[: text.rindex("\n", 0, -1) + 1] + text.rsplit("\n", 2)[-2][:12])
    capsys.readouterr()
    assert runner.main(experiment(runs, "--dry-run")) == 2
    line = one_error_line(capsys.readouterr().err, f"runner.py: error: {run_dir}/progress.csv line 3 is damaged")
    assert line.endswith(f"before its checkpoint (step 256): move {run_dir} aside")
    scores, left_out = report.write_report([str(runs / POOL)], str(tmp_path / "out"), 256, ["ppo"])
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"- {POOL}/{run_dir.name}: progress.csv line 3 is damaged (cut short or fields missing)" in summary
    assert len(scores[("Hopper-v4", POOL)]) == 1 and [r["name"] for r in left_out] == [f"{POOL}/{run_dir.name}"]


@pytest.mark.parametrize("config", ["deleted", "not JSON"])
def test_a_run_whose_config_cannot_be_read_is_named_in_one_line(config, finished_pool, tmp_path, capsys):
    runs = copy_pool(finished_pool, tmp_path)
    run_dir = sorted((runs / POOL).glob("Hopper-v4__*"))[0]
    if config == "deleted":
        (run_dir / "config.json").unlink()
    else:
        (run_dir / "config.json").write_text('{"exp_name": ')
    capsys.readouterr()
    assert runner.main(experiment(runs, "--report-only", "--results-dir", str(tmp_path / "out"))) == 2
    line = one_error_line(capsys.readouterr().err, f"runner.py: error: {run_dir}/config.json cannot be read (")
    assert line.endswith(f"restore it, or move {run_dir} aside") and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as e:
        report.main([str(tmp_path / "out"), str(runs / POOL)])
    assert e.value.code == 2 and not (tmp_path / "out").exists()
    one_error_line(capsys.readouterr().err, f"report.py: error: {run_dir}/config.json cannot be read (")


def test_a_finished_run_without_its_checkpoints_stays_finished_and_a_dead_one_is_named(finished_pool, tmp_path, capsys):
    runs = copy_pool(finished_pool, tmp_path)
    kept, dead = sorted((runs / POOL).glob("Hopper-v4__*"))
    for name in ("checkpoint.pt", "best.pt"):
        (kept / name).unlink(missing_ok=True)  # to save quota
    (dead / "checkpoint.pt").unlink()  # as a run that died before its first checkpoint
    lines = (dead / "progress.csv").read_text().splitlines(keepends=True)
    (dead / "progress.csv").write_text("".join(lines[:2]))
    capsys.readouterr()
    assert runner.main(experiment(runs, "--no-report")) == 0
    out = capsys.readouterr().out
    assert "1 already finished, 1 to run" in out and f"set aside {dead} as {runs / POOL / '.died' / dead.name}" in out
    assert kept.exists() and not (kept / "checkpoint.pt").exists()  # never moved aside or trained again


def test_relative_runs_root_means_the_callers_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert runner.main(experiment("rel", "--results-dir", "out")) == 0
    assert len(list((tmp_path / "rel" / POOL).glob("Hopper-v4__*"))) == 2 and (tmp_path / "rel" / "logs").is_dir()
    assert runner.main(experiment("rel", "--no-report")) == 0
    assert "2 already finished, 0 to run" in capsys.readouterr().out and not (ROOT / "rel").exists()


def test_reports_read_read_only_pools_and_an_unwritable_pool_is_one_line(finished_pool, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=50m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("mount is not permitted here")
    try:
        shutil.copytree(finished_pool, ro / "runs")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        capsys.readouterr()
        assert runner.main(experiment(ro / "runs", "--report-only", "--results-dir", str(tmp_path / "out"))) == 0
        assert "| Hopper-v4 | ppo | 2 |" in next((tmp_path / "out").glob("*/summary.md")).read_text()
        capsys.readouterr()
        assert runner.main(experiment(ro / "runs", "--seeds", "3", "--no-report")) == 4
        one_error_line(capsys.readouterr().err, f"runner.py: error: cannot write {ro / 'runs'}")
    finally:
        subprocess.run(["umount", str(ro)])


def test_runs_stop_with_their_runner_even_when_it_is_killed(tmp_path):
    # kill -9 of the runner alone: its runs checkpoint at the end of their iteration and exit, so a new runner never
    # trains beside them
    import speed

    argv = experiment(tmp_path / "runs", "--total-timesteps", str(400 * BATCH), "--workers", "2", "--no-report")
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmark" / "runner.py"), *argv])
    deadline = time.time() + 120
    while len([p for p in (tmp_path / "runs").glob("*/*/progress.csv") if len(p.read_text().splitlines()) > 2]) < 2:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    children = speed.process_tree(proc.pid)[1:]
    assert len(children) == 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while any(
        Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
        for pid in children
    ):
        assert time.time() < deadline, "a run outlived its runner"
        time.sleep(0.1)
    assert len(list((tmp_path / "runs").glob("*/*/checkpoint.pt"))) == 2  # each stopped with a checkpoint


def test_a_report_says_what_it_lacks_and_never_prints_an_empty_heading(tmp_path):
    for seed in range(1, 6):
        make_run(tmp_path, "ppo", "TaskA-v0", seed, 100.0 + seed)
        make_run(tmp_path, "ppo", "TaskB-v0", seed, 100.0 + seed)
        make_run(tmp_path, "ppo_wm", "TaskA-v0", seed, 100.0 + seed)  # nothing on TaskB: no average over tasks
    run = make_run(tmp_path, "ppo_wm", "TaskB-v0", 1, 0.0, steps=10240, batch=128)
    (run / "progress.csv").write_text(
        "global_step,return_last100,wall_time\n" + "".join(f"{s},,1\n" for s in range(128, 10241, 128))
    )
    report.write_report([str(tmp_path / v) for v in ("ppo", "ppo_wm")], str(tmp_path / "out"), 10240, ["ppo"], reps=100)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"- ppo_wm/{run.name}: no episode ended in its 10,240 steps" in summary and "0 of 10,240" not in summary
    assert "Average probability" not in summary  # its heading only with something under it
    headings = [i for i, line in enumerate(summary.splitlines()) if line.endswith(":")]
    assert all(summary.splitlines()[i + 2].strip() for i in headings if i + 2 < len(summary.splitlines()))
