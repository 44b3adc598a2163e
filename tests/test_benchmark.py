"""The multi-seed runner (fan-out, skip, resume, failure reporting), the report's statistics, the probes, and the speed
benchmark's turns."""

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY_EXTRA, make_run, read_progress

sys.path.insert(0, str(ROOT / "benchmark"))
import report  # noqa: E402
import runner  # noqa: E402


def test_runner_fans_out_skips_resumes_and_reports_failures(tmp_path, capsys):
    common = ["--experiment", "E3", "--env-ids", "Hopper-v4", "--seeds", "1", "2", "--workers", "2"]
    common += ["--extra", TINY_EXTRA, "--runs-root", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    common += ["--total-timesteps", "256"]
    assert runner.main(common) == 0
    runs = sorted((tmp_path / "runs").glob("*/*/progress.csv"))
    assert len(runs) == 6  # 3 alphas x 2 seeds
    # runs with extra flags or another length are another configuration: their own pools, never the default runs
    pools = {v: runner.pool_name(v, TINY_EXTRA.split(), 256) for v in ("ppo_wm", "ppo_wm_aux", "ppo_wm_aux_alpha0.05")}
    assert pools["ppo_wm"] == (
        "ppo_wm+num-envs+4+num-steps+32+num-minibatches+2+update-epochs+1+eval-interval+0+total-timesteps+256"
    )
    assert (
        runner.pool_name("ppo", ["--num-env-threads", "1"]) == runner.pool_name("ppo", ["--num-env-threads=2"]) == "ppo"
    )
    assert {p.parent.parent.name for p in runs} == set(pools.values())
    for p in runs:
        config = json.loads((p.parent / "config.json").read_text())
        assert config["exp_name"] == p.parent.parent.name
        alphas = {pools["ppo_wm"]: 0.0, pools["ppo_wm_aux"]: 0.01, pools["ppo_wm_aux_alpha0.05"]: 0.05}
        assert config.get("alpha", 0.0) == alphas[config["exp_name"]]
        assert len(list(csv.DictReader(open(p)))) == 2
    # seeds and tasks other than E3's: the report goes to a folder that says so, and names variants as given
    folder = runner.report_folder(
        "E3", ["ppo_wm", "ppo_wm_aux", "ppo_wm_aux_alpha0.05"], [1, 2], ["Hopper-v4"], 256, []
    )
    assert folder == "E3+seeds+1+2+tasks+Hopper-v4+total-timesteps+256"
    results = tmp_path / "results" / runner.report_folder("E3", [], [1, 2], ["Hopper-v4"], 256, TINY_EXTRA.split())
    summary = (results / "summary.md").read_text()
    assert summary.startswith("# E3: 256 steps per run") and "| Hopper-v4 | ppo_wm_aux_alpha0.05 | 2 |" in summary
    assert f"report: {results / 'summary.md'}" in capsys.readouterr().out
    assert (results / "learning_curves.png").exists()

    # everything finished: nothing runs again
    assert runner.main([*common, "--no-report"]) == 0
    assert "6 already finished, 0 to run" in capsys.readouterr().out

    # a subset of the variants reports to its own folder and leaves the full report as it was
    assert runner.main([*common, "--variants", "ppo_wm", "ppo_wm_aux_alpha0.05", "--report-only"]) == 0
    subset = (
        results.parent / results.name.replace("E3+", "E3+ppo_wm+ppo_wm_aux_alpha0.05+", 1) / "summary.md"
    ).read_text()
    assert "| Hopper-v4 | ppo_wm_aux_alpha0.05 | 2 |" in subset and "| ppo_wm_aux |" not in subset
    assert (results / "summary.md").read_text() == summary

    # a run that has not finished is resumed; its checkpoint is corrupt and it must fail loudly, the others not run
    lines = runs[0].read_text().splitlines(keepends=True)
    runs[0].write_text("".join(lines[:2]))
    (runs[0].parent / "checkpoint.pt").write_bytes(b"corrupt")
    capsys.readouterr()
    assert runner.main([*common, "--no-report"]) == 1
    out, err = capsys.readouterr()
    assert "done 5/6" in out and "failed 1" in out
    assert err.count("FAILED (exit 2)") == 1 and f"--resume {runs[0].parent}" in err and "log: " in err
    assert sorted((tmp_path / "runs").glob("*/*/progress.csv")) == runs  # no new dirs
    log = (tmp_path / "runs" / "logs" / f"{runs[0].parent.name.rsplit('__', 1)[0]}.log").read_text()
    assert "truncated or corrupt" in log


def alive(pid):  # a zombie is dead: its parent has exited or been killed, so init reaps it
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_runner_stops_its_runs_resumably_and_leaves_none_running(tmp_path, sig):
    runs_root = tmp_path / "runs"
    common = [
        "--experiment",
        "E1",
        "--variants",
        "ppo_wm",
        "--env-ids",
        "Hopper-v4",
        "--seeds",
        "1",
        "2",
        "3",
        "--workers",
        "2",
        "--total-timesteps",
        "1000000",
        "--extra",
        TINY_EXTRA,
        "--runs-root",
        str(runs_root),
    ]
    # started as `runner.py ... &` from a script is: SIGINT ignored, which the runs would inherit
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sig == signal.SIGINT else None
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmark" / "runner.py"), *common, "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ignore_sigint,
    )
    import speed

    try:
        deadline = time.time() + 120
        while (
            len([p for p in runs_root.glob("*/*/progress.csv") if len(p.read_text().splitlines()) > 1]) < 2
        ):  # both runs training
            assert time.time() < deadline and proc.poll() is None, "the runs did not start"
            time.sleep(0.2)
        processes = speed.process_tree(proc.pid)[1:]
        assert len(processes) == 2  # the two runs
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig
        assert "2 runs stopped, 1 not started; the same command resumes them" in err and "FAILED" not in err
        deadline = time.monotonic() + 5
        while (left := [pid for pid in processes if alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == []  # none left running
    finally:  # on a failure, nothing of the test is left running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    started = sorted(runs_root.glob("*/*/checkpoint.pt"))
    assert len(started) == 2
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmark" / "runner.py"), *common, "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sorted(line.split("--resume ")[1].split()[0] for line in out.splitlines() if "--resume" in line) == sorted(
        str(p.parent) for p in started
    )
    assert sum("--seed 3" in line and "--resume" not in line for line in out.splitlines()) == 1


def test_runs_killed_with_their_runner_resume_to_the_uninterrupted_results(tmp_path):
    # kill -9 of the runner's whole process group mid-run, then the same command: each run ends as the same run made
    # without a stop (progress.csv, checkpoint tensors)
    import torch
    from test_checkpoints import assert_same, comparable, untimed

    common = ["--variants", "ppo", "ppo_wm_aux", "--env-ids", "Hopper-v4", "--seeds", "1", "--workers", "2"]
    common += ["--total-timesteps", str(40 * 128), "--extra", TINY_EXTRA + " --checkpoint-interval 5", "--no-report"]
    command = [sys.executable, str(ROOT / "benchmark" / "runner.py"), "--experiment", "exact", *common]
    subprocess.run([*command, "--runs-root", str(tmp_path / "twin")], check=True, capture_output=True)
    proc = subprocess.Popen([*command, "--runs-root", str(tmp_path / "cut")], start_new_session=True)
    try:
        deadline = time.time() + 120
        while sum(len(p.read_text().splitlines()) > 6 for p in (tmp_path / "cut").glob("*/*/progress.csv")) < 2:
            assert time.time() < deadline and proc.poll() is None, "the runs did not start"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = [torch.load(p, weights_only=True)["counters"]["iteration"] for p in (tmp_path / "cut").glob("*/*/*.pt")]
    assert len(stopped) == 2 and min(stopped) < 40  # a run was cut short after a checkpoint
    subprocess.run([*command, "--runs-root", str(tmp_path / "cut")], check=True, capture_output=True)
    for twin in sorted((tmp_path / "twin").glob("*/*/progress.csv")):
        (cut,) = (tmp_path / "cut" / twin.parent.parent.name).glob("*/progress.csv")
        assert untimed(read_progress(cut.parent)) == untimed(read_progress(twin.parent))
        load = lambda p: comparable(torch.load(p.parent / "checkpoint.pt", weights_only=True))  # noqa: E731
        assert_same(load(cut), load(twin))


def test_dry_run_prints_commands_without_running(tmp_path, capsys):
    assert runner.main(["--experiment", "E1", "--dry-run", "--seeds", "1", "2", "--runs-root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 * 3 * 2
    assert sum("ppo_wm_aux.py" in line and "--alpha 0.01" in line for line in lines) == 6
    assert not any(tmp_path.iterdir())


def test_each_experiment_runs_its_own_seeds_by_default(tmp_path, capsys):
    def seeds(*argv):
        assert runner.main([*argv, "--dry-run", "--runs-root", str(tmp_path)]) == 0
        return sorted({int(line.split("--seed ")[1].split()[0]) for line in capsys.readouterr().out.splitlines()})

    assert seeds("--experiment", "E1") == seeds("--experiment", "E5") == list(range(1, 11))
    assert seeds("--experiment", "E5-screen") == list(range(11, 16))  # the screen never sees E5's seeds
    assert seeds("--experiment", "E3") == [1, 2, 3, 4, 5]
    assert seeds("--experiment", "mine", "--variants", "ppo") == list(range(1, 11))
    assert seeds("--experiment", "E5", "--seeds", "3") == [3]


def test_variants_and_a_single_extra_flag_select_the_runs(tmp_path, capsys):
    common = ["--experiment", "E1", "--dry-run", "--seeds", "6", "7", "--runs-root", str(tmp_path)]
    assert runner.main([*common, "--variants", "ppo", "--extra", "--no-clip-vloss"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 * 2
    assert all(
        "ppo_continuous.py" in line and "--no-clip-vloss" in line and "--exp-name ppo+no-clip-vloss " in line
        for line in lines
    )
    assert runner.main([*common, "--variants", "ppo_wm_z16"]) == 0  # any built-in variant, here E2's
    assert all("--z-dim 16" in line for line in capsys.readouterr().out.strip().splitlines())
    with pytest.raises(SystemExit):
        runner.main([*common, "--variants", "ppo_wm_z12"])
    assert "unknown variant 'ppo_wm_z12'" in capsys.readouterr().err


def test_finished_runs_of_another_config_stop_the_runner(tmp_path, capsys):
    # a finished run is reused only while the script would still run it the same way: a changed default must not mix in
    common = [
        "--experiment",
        "E1",
        "--env-ids",
        "Hopper-v4",
        "--seeds",
        "1",
        "--total-timesteps",
        "2048",
        "--runs-root",
        str(tmp_path),
        "--dry-run",
    ]
    run = next(
        r
        for r in runner.plan("E1", ["Hopper-v4"], [1], 2048, str(tmp_path), sys.executable, [])
        if r["script"].endswith("ppo_continuous.py")
    )
    run_dir = Path(run["runs_dir"]) / f"{run['name']}__1700000000"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    (run_dir / "progress.csv").write_text("global_step\n2048\n")
    config = dict(
        runner.expected_config(run), batch_size=2048, exp_name="renamed", eval_interval=0, num_env_threads=2
    )  # keys that do not change training
    (run_dir / "config.json").write_text(json.dumps(config))
    assert runner.main(common) == 0
    assert f"# {run['name']}: finished" in capsys.readouterr().out

    # a run made with a flag the scripts no longer have is reused only if it ran the value they now hard-code
    older = dict(config, critic_width=64, init_action_std=1.0, compile=False, torch_threads=1)
    (run_dir / "config.json").write_text(json.dumps(older))
    assert runner.main(common) == 0
    assert f"# {run['name']}: finished" in capsys.readouterr().out
    for retired in ({"critic_width": 128}, {"init_action_std": 0.5}, {"compile": True}):
        (run_dir / "config.json").write_text(json.dumps(older | retired))
        assert runner.main(common) == 2
        ((key, value),) = retired.items()
        assert f"was made with {key}={value!r}, a flag ppo_continuous.py no longer has" in capsys.readouterr().err

    (run_dir / "config.json").write_text(json.dumps(dict(config, learning_rate=config["learning_rate"] / 2)))
    assert runner.main(common) == 2
    out, err = capsys.readouterr()
    assert (
        out == "" and f"{run_dir} was made with learning_rate={config['learning_rate'] / 2!r}" in err and "move " in err
    )


def test_iqm_and_probability_of_improvement_known_answers():
    assert report.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)
    assert report.iqm([100, 1, 2, 3]) == pytest.approx(2.5)  # outliers do not move it
    assert report.probability_of_improvement([2, 3], [1, 1]) == 1.0
    assert report.probability_of_improvement([1, 2], [1, 2]) == 0.5
    assert report.probability_of_improvement([0, 3], [1, 2]) == 0.5


def test_bootstrap_ci_covers_the_truth_at_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(100):
        lo, hi = report.bootstrap_ci([rng.normal(10.0, 2.0, size=30)], np.mean, reps=300, seed=i)
        hits += lo <= 10.0 <= hi
    assert 85 <= hits <= 100


def test_report_on_synthetic_runs_with_a_known_shift(tmp_path):
    rng = np.random.default_rng(0)
    for task in ("TaskA-v0", "TaskB-v0"):
        base = rng.normal(1000, 50, size=8)
        for seed, b in enumerate(base):
            make_run(tmp_path, "ppo", task, seed, b)
            make_run(tmp_path, "ppo_shifted", task, seed, b + 500)  # a known improvement of 500
            make_run(tmp_path, "ppo_same", task, seed, b)
    make_run(tmp_path, "ppo", "TaskA-v0", 99, 5000, steps=400_000)  # stopped short: must be flagged, not mixed in
    nan = make_run(tmp_path, "ppo_same", "TaskB-v0", 99, 100, steps=8192)  # diverged: listed, never scored
    (nan / "diverged.json").write_text(json.dumps({"global_step": 10240, "iteration": 5, "nonfinite": "value_loss"}))
    dirs = [str(tmp_path / v) for v in ("ppo", "ppo_shifted", "ppo_same")]
    scores, incomplete = report.write_report(dirs, str(tmp_path / "out"), 1_000_000, baselines=["ppo"], reps=500)
    assert sorted(r["name"] for r in incomplete) == ["ppo/TaskA-v0__ppo__99__0", "ppo_same/TaskB-v0__ppo_same__99__0"]
    for task in ("TaskA-v0", "TaskB-v0"):
        assert len(scores[(task, "ppo")]) == 8
        assert scores[(task, "ppo_shifted")].mean() - scores[(task, "ppo")].mean() == pytest.approx(500, abs=1e-6)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "- ppo_shifted: 1.00 [1.00, 1.00]" in summary
    same = [line for line in summary.splitlines() if line.startswith("- ppo_same:")][0]
    lo, hi = map(float, same.split("[")[1].rstrip("]").split(", "))
    assert lo < 0.5 < hi  # identical variants: no significant difference
    assert "TaskA-v0__ppo__99__0: 399,360 of 999,424 steps" in summary
    row = [line for line in summary.splitlines() if line.startswith("| TaskA-v0 | ppo_shifted |")][0]
    assert row.split("|")[4].strip().startswith(f"{scores[('TaskA-v0', 'ppo_shifted')].mean():.0f} ±")
    per_seed = [line for line in summary.splitlines() if line.startswith("| TaskB-v0 | ppo_shifted | 0: ")][0]
    assert per_seed.split("|")[3].strip().split(", ") == [
        f"{seed}: {b:.0f}" for seed, b in enumerate(scores[("TaskB-v0", "ppo")] + 500)
    ]
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 10_000
    # time to score: every synthetic curve is linear in steps, so the seed mean passes 500 at 500 / mean(final) of the
    # run
    group = [
        r for r in report.load_runs(dirs) if r["env_id"] == "TaskA-v0" and r["variant"] == "ppo" and r["seed"] != 99
    ]
    step, wall = report.time_to_score(group, 500)
    expected = 500 / scores[("TaskA-v0", "ppo")].mean() * 999_424
    assert expected <= step < expected + 2048 and wall == pytest.approx(step / 5000)
    assert report.time_to_score(group, 5000) == (None, None)
    assert "- ppo_same/TaskB-v0__ppo_same__99__0: value_loss at step 10,240" in summary
    # made again from its run data alone, into another folder: the same bytes
    data = str(tmp_path / "out" / report.DATA)
    again = tmp_path / "again" / "out"  # the title is the folder's name
    report.write_report(["ppo", "ppo_shifted", "ppo_same"], str(again), 1_000_000, ["ppo"], 500, data=data)
    for name in ("summary.md", "learning_curves.png", report.DATA):
        assert (again / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name


def test_the_runner_reports_from_the_run_data_when_no_run_is_on_disk(tmp_path, capsys):
    common = ["--experiment", "mine", "--variants", "ppo", "ppo_wm", "--env-ids", "Hopper-v4", "--seeds", "1", "2"]
    common += ["--total-timesteps", "512", "--extra", TINY_EXTRA, "--results-dir", str(tmp_path / "results")]
    assert runner.main([*common, "--runs-root", str(tmp_path / "runs")]) == 0
    (report_dir,) = (tmp_path / "results").iterdir()
    made = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    assert set(made) == {"summary.md", "learning_curves.png", "z_drift.png", report.DATA}
    shutil.rmtree(tmp_path / "runs")
    capsys.readouterr()
    assert runner.main([*common, "--runs-root", str(tmp_path / "empty"), "--report-only"]) == 0
    assert f"reporting from its run data, {report_dir / report.DATA}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in report_dir.iterdir()} == made


def test_report_command_line_selects_seeds_and_tasks(tmp_path):
    # a pool holding more seeds than a comparison's: --seeds keeps the baseline on the compared seeds only
    for seed in range(1, 7):
        make_run(tmp_path, "ppo", "TaskA-v0", seed, 1000 * seed)
        make_run(tmp_path, "ppo", "TaskB-v0", seed, 1000 * seed)
    for seed in (1, 2, 3):
        make_run(tmp_path, "ppo_new", "TaskA-v0", seed, 1000 * seed + 10)
    report.main(
        [
            str(tmp_path / "out"),
            str(tmp_path / "ppo"),
            str(tmp_path / "ppo_new"),
            "--seeds",
            "1",
            "2",
            "3",
            "--env-ids",
            "TaskA-v0",
        ]
    )
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| TaskA-v0 | ppo | 3 | 2000 ± 1000 |" in summary and "TaskB-v0" not in summary
    assert "| TaskA-v0 | ppo | 1: 1000, 2: 2000, 3: 3000 |" in summary
    assert "| TaskA-v0 | ppo_new | 3 | 2010 ± 1000 |" in summary


def test_experiments_share_runs_of_identical_configurations(tmp_path, capsys):
    def commands(exp):
        assert runner.main(["--experiment", exp, "--dry-run", "--seeds", "1", "--runs-root", str(tmp_path)]) == 0
        return capsys.readouterr().out.strip().splitlines()

    e1, e2, e3 = commands("E1"), commands("E2"), commands("E3")
    assert [c for c in e2 if "--exp-name ppo_wm " in c] == [
        c for c in e1 if "HalfCheetah" in c and "--exp-name ppo_wm " in c
    ]
    for variant in ("ppo_wm", "ppo_wm_aux"):
        assert [c for c in e3 if f"--exp-name {variant} " in c] == [
            c for c in e1 if "Walker2d" in c and f"--exp-name {variant} " in c
        ]
    assert sum("--z-dim" in c for c in e2) == 2 and sum("--alpha 0.05" in c for c in e3) == 1


def test_latent_viz_gait_phase_and_decodability():
    import latent_viz

    t = np.arange(400)
    obs = np.zeros((400, 17))
    obs[:, 2] = np.sin(0.2 * t)  # first thigh angle
    obs[:, 8 + 3] = np.cos(0.2 * t)  # its velocity (Walker2d: 8 qpos in the observation)
    phase = latent_viz.gait_phase(obs)
    steps = np.diff(np.unwrap(phase))
    assert (
        abs(abs(steps.mean()) - 0.2) < 0.01 and steps.std() < 0.02
    )  # a pure oscillation: the phase turns at 0.2 rad/step
    assert latent_viz.linear_r2(np.stack([np.cos(phase), np.sin(phase)], 1), phase) > 0.99
    assert latent_viz.linear_r2(np.random.default_rng(0).normal(size=(400, 4)), phase) < 0.1


BUSY = (
    "import sys, time\n"
    "stamps, start = [], time.process_time()\n"
    "while time.process_time() - start < float(sys.argv[1]):  # fixed CPU work, however often it is stopped\n"
    "    stamps.append(time.monotonic())\n"
    "    sum(range(2000))\n"
    "open(sys.argv[2], 'w').write('\\n'.join(map(repr, stamps)))\n"
)


def test_take_turns_runs_one_process_at_a_time_and_times_only_its_turns(tmp_path):
    import speed

    start = time.monotonic()
    results = speed.take_turns(
        [
            [sys.executable, "-c", BUSY, "0.6", str(tmp_path / "a")],
            [sys.executable, "-c", BUSY, "1.2", str(tmp_path / "b")],
        ],
        [0.2, 0.2],
    )
    wall = time.monotonic() - start
    assert [r["code"] for r in results] == [0, 0]
    # run together they would interleave their time stamps thousands of times; in turns, once per turn
    stamps = sorted(
        [(float(t), "a") for t in (tmp_path / "a").read_text().split()]
        + [(float(t), "b") for t in (tmp_path / "b").read_text().split()]
    )
    switches = sum(1 for (_, x), (_, y) in zip(stamps, stamps[1:]) if x != y)
    assert len(stamps) > 1000 and 3 <= switches <= wall / 0.2 + 2
    # a turn's time is at least the CPU time spent in it, and stopped time is not counted: together they fit in the
    # wall time
    assert results[0]["active"] >= 0.6 and results[1]["active"] >= 1.2
    assert results[0]["active"] + results[1]["active"] <= wall


COUNTER = (
    "import mmap, signal, sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.5:  # start-up, as making envs: no turn that includes it counts\n"
    "    pass\n"
    "f = open(sys.argv[1], 'r+b')\n"
    "count = memoryview(mmap.mmap(f.fileno(), 8)).cast('q')\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCONT})  # still resumes it; stays pending to be seen\n"
    "last, owed = time.monotonic(), 0.0\n"
    "while True:  # 1000 counts per second of wall time while it runs, however busy the machine\n"
    "    now = time.monotonic()\n"
    "    if signal.SIGCONT in signal.sigpending():  # resumed: the gap was a stop (another's turn), not running\n"
    "        signal.sigwait({signal.SIGCONT})\n"
    "        last = time.monotonic()\n"
    "        continue\n"
    "    owed += (now - last) * 1000\n"
    "    last = now\n"
    "    if owed >= 1:\n"
    "        count[0] += int(owed)\n"
    "        owed -= int(owed)\n"
)


def test_take_turns_rates_the_counter_process_by_its_own_turns_and_ends_it(tmp_path):
    import speed

    counter_path = tmp_path / "count"
    counter_path.write_bytes(bytes(8))
    results = speed.take_turns(
        [[sys.executable, "-c", BUSY, "1.0", str(tmp_path / "a")], [sys.executable, "-c", COUNTER, str(counter_path)]],
        [0.2, 0.2],
        counter_index=1,
        counter_path=str(counter_path),
    )
    assert results[0]["code"] == 0 and results[1]["code"] is None  # killed once the other was done
    # counted over the turns it counted in: 1000 per second (about 500 if the other's turns were counted too, about
    # 600 with its start-up); the counter counts wall time while it runs, so a busy machine does not lower it
    assert 800 < results[1]["rate"] <= 1010
    with pytest.raises(ProcessLookupError):
        os.kill(results[1]["pid"], 0)


def test_take_turns_stops_at_a_failing_command_and_leaves_no_process(tmp_path):
    import speed

    results = speed.take_turns(
        [[sys.executable, "-c", BUSY, "30", str(tmp_path / "a")], [sys.executable, "-c", "import sys; sys.exit(3)"]],
        [0.2, 0.2],
    )
    assert results[1]["code"] == 3 and results[0]["code"] is None  # the 30 s of work was cut short
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
        os.kill(results[0]["pid"], 0)


def test_take_turns_counts_the_memory_of_child_processes():
    # a parent forks a child holding 200 MB for 2 s and then holds 100 MB itself: the tree's peak is their sum
    import speed

    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    block = bytearray(200 * 2**20)\n"
        "    time.sleep(2)\n"
        "    os._exit(0)\n"
        "held = bytearray(100 * 2**20)\n"
        "os.wait()\n"
        "print('done')\n"
    )
    (result,) = speed.take_turns([[sys.executable, "-c", script]], [0.3])  # read after every turn
    assert result["out"].strip() == "done" and result["active"] >= 2
    assert result["memory"] > 300  # both processes: the parent alone is ~110 MB, the larger one alone ~210


def test_undisturbed_iteration_time_ignores_iterations_slowed_by_other_work():
    # 20 iterations of 300 ms, 5 of them stretched by interference: the 10th percentile is the undisturbed 300 ms
    import speed

    rows = [{"rollout_time": "0.2", "update_time": "0.1"}] * 15 + [{"rollout_time": "0.6", "update_time": "0.3"}] * 5
    assert speed.undisturbed_iteration_ms(rows) == pytest.approx(300)
    slower_code = [{"rollout_time": "0.25", "update_time": "0.1"}] * 20
    assert speed.undisturbed_iteration_ms(slower_code) == pytest.approx(350)
    assert speed.undisturbed_iteration_ms(slower_code, ["rollout_time"]) == pytest.approx(250)


def speed_argv(steps, *scripts, extra=()):
    """speed.py's command line for a quick run of these scripts at a tiny configuration."""
    tiny = "--num-envs 4 --num-steps 64 --num-minibatches 2 --update-epochs 1 --eval-interval 0"
    return [
        "speed.py",
        "--steps",
        str(steps),
        "--scripts",
        *scripts,
        "--slice",
        "0.5",
        "--raw-slice",
        "0.3",
        "--extra",
        tiny,
        *extra,
    ]


def test_speed_refuses_too_few_steps_and_its_percentiles_stay_within_the_times(monkeypatch, capsys):
    import speed

    for steps, minimum in [(2048, "2,560 (10 iterations of 256 steps)"), (1, "2,560")]:
        monkeypatch.setattr(sys, "argv", speed_argv(steps, "ppo_continuous"))
        with pytest.raises(SystemExit) as e:
            speed.main()
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and f"at least {minimum}" in err
    monkeypatch.setattr(sys, "argv", [*speed_argv(4096, "ppo_continuous"), "--variant-extra", "--num-steps 1024"])
    with pytest.raises(SystemExit) as e:  # the variant's flags make a larger batch: 10 of those
        speed.main()
    assert e.value.code == 2 and "at least 40,960" in capsys.readouterr().err
    # two iterations, one with a long update: the 10th percentile is between them, never below the shortest
    rows = [{"rollout_time": "4.9", "update_time": "0.01"}, {"rollout_time": "0.02", "update_time": "2.5"}]
    assert 10 <= speed.undisturbed_iteration_ms(rows, ["update_time"]) <= 2500
    assert 2520 <= speed.undisturbed_iteration_ms(rows) <= 4910


def test_speed_compares_the_scripts_and_their_variants_with_raw_physics_side_by_side(tmp_path, monkeypatch, capsys):
    import speed

    commands = []
    real_take_turns = speed.take_turns
    monkeypatch.setattr(
        speed, "take_turns", lambda cmds, *a, **k: commands.extend(cmds) or real_take_turns(cmds, *a, **k)
    )
    out = tmp_path / "speed.md"
    argv = speed_argv(2560, "ppo_continuous", "ppo_wm", extra=["--variant-extra", "--clip-coef 0.3", "--out", str(out)])
    monkeypatch.setattr(sys, "argv", argv)
    speed.main()
    report = capsys.readouterr().out
    assert out.read_text().strip() == report.strip()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in report.splitlines()
        if line.startswith("| ppo")
    }
    variants = ["ppo_continuous --clip-coef 0.3", "ppo_wm --clip-coef 0.3"]
    assert list(rows) == ["ppo_continuous", "ppo_wm", *variants] and rows["ppo_continuous"][2] == "1.00"
    raw = float(re.search(r"per repeat: ([\d,]+) steps/s", report).group(1).replace(",", ""))
    for sps, x_raw, *_ in rows.values():  # the x-raw column is the script's rate over the raw rate of the same turns
        assert float(x_raw) == pytest.approx(float(sps.replace(",", "")) / raw, abs=0.006)
    assert "each script also with `--clip-coef 0.3`" in report
    sps = {name: float(cells[0].replace(",", "")) for name, cells in rows.items()}
    for script, variant in zip(["ppo_continuous", "ppo_wm"], variants):  # the flag's cost: variant over its own script
        (ratio,) = re.findall(rf"^{variant}: x {script} per repeat ([\d.]+)$", report, re.M)
        low = (sps[variant] - 0.5) / (sps[script] + 0.5) - 0.0005  # the table's rates are rounded to integers
        high = (sps[variant] + 0.5) / (sps[script] - 0.5) + 0.0005
        assert low <= float(ratio) <= high
    scripts = [c for c in commands if c[1] != "-c"]
    assert ["--clip-coef" in c for c in scripts] == [False, False, True, True]  # only the variants get the flags
    assert scripts[3].index("--clip-coef") > scripts[3].index("--update-epochs")  # after --extra's
    assert all("--update-epochs" in c for c in scripts)


def test_speed_stopped_by_sigterm_leaves_no_process(tmp_path):
    import speed

    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmark" / "speed.py"),
            "--steps",
            "100000",
            "--scripts",
            "ppo_continuous",
            "ppo_wm",
            "--slice",
            "0.3",
            "--raw-slice",
            "0.2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(tree := speed.process_tree(proc.pid)) < 4 and time.monotonic() < deadline:  # speed.py, 2 scripts, raw
        time.sleep(0.2)
    assert len(tree) >= 4
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM

    deadline = time.monotonic() + 10  # SIGKILL takes a moment to end a process
    while (left := [pid for pid in tree[1:] if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []  # none left behind, stopped or running


FAKE_CLEANRL = """import sys, types
import numpy as np
def TransformObservation(env, func, observation_space):  # gymnasium 1.x: the space has no default
    return env
gym = types.SimpleNamespace(wrappers=types.SimpleNamespace(TransformObservation=TransformObservation))
env = types.SimpleNamespace(observation_space=None)
env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10))
seed = int(sys.argv[sys.argv.index("--seed") + 1])
with open("calls.txt", "a") as f:
    f.write(f"{seed}\\n")
print("global_step=1, episodic_return=5.0")
if seed == 3:
    sys.exit(2)
for i in range(150):
    print(f"global_step={i}, episodic_return={(i if i >= 50 else -1000.0) + seed}")
    print(f"SPS: {1000 + i}")
"""


def test_cleanrl_reference_ports_the_script_scores_the_last_100_episodes_and_keeps_failed_runs_out(tmp_path, capsys):
    import cleanrl_reference

    script, out = tmp_path / "ppo_continuous_action.py", tmp_path / "out"
    script.write_text(FAKE_CLEANRL)
    argv = ["--script", str(script), "--out-dir", str(out), "--env-ids", "Hopper-v4", "--seeds", "1", "2", "3"]
    assert cleanrl_reference.main(argv) == 1
    captured = capsys.readouterr()
    # seeds 1 and 2: the last 100 returns are 50..149 + seed, the 51 earlier ones are left out
    assert "| Hopper-v4 | 1 2 | 100, 102 | 101 ± 1 | 1149, 1149 |" in captured.out
    assert "Hopper-v4 seed 3 failed (exit 2" in captured.err
    assert sorted(p.name for p in out.glob("Hopper-v4__*")) == [
        "Hopper-v4__1.log",
        "Hopper-v4__2.log",
        "Hopper-v4__3.log.partial",
    ]
    # the same command runs only what has not finished; --against puts our finished runs of those seeds beside them
    pool = tmp_path / "pool"
    for seed, last_step, score in [(1, 999424, 200.0), (2, 999424, 101.0), (3, 499712, 5000.0), (9, 999424, 5000.0)]:
        run_dir = pool / f"Hopper-v4__ppo_continuous__{seed}__0"
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(
            json.dumps({"exp_name": "ppo_continuous", "env_id": "Hopper-v4", "seed": seed, "batch_size": 2048})
        )
        (run_dir / "progress.csv").write_text(f"global_step,return_last100\n2048,1.0\n{last_step},{score}\n")
    assert cleanrl_reference.main([*argv, "--against", str(pool)]) == 1
    assert sorted((out / "calls.txt").read_text().split()) == ["1", "2", "3", "3"]
    # seed 3 of ours stopped short and seed 9 was not asked for; P(ours > CleanRL) over the 4 pairs: 200 beats both,
    # 101 one
    assert (
        "| Hopper-v4 | 1 2 | 100, 102 | 101 ± 1 | 1149, 1149 | 1 2 | 200, 101 | 150 ± 70 | 0.75 ["
        in capsys.readouterr().out
    )
    # a pool with two finished runs of one seed is refused before anything runs
    twin = pool / "Hopper-v4__ppo_continuous__1__1"
    twin.mkdir()
    for name in ("config.json", "progress.csv"):
        (twin / name).write_text((pool / "Hopper-v4__ppo_continuous__1__0" / name).read_text())
    with pytest.raises(SystemExit, match="two finished runs of one task and seed"):
        cleanrl_reference.main([*argv, "--against", str(pool)])
    assert sorted((out / "calls.txt").read_text().split()) == ["1", "2", "3", "3"]


def test_cleanrl_reference_refuses_a_missing_or_unknown_script(tmp_path):
    import cleanrl_reference

    with pytest.raises(SystemExit, match="not found; fetch CleanRL's script"):
        cleanrl_reference.main(["--script", str(tmp_path / "absent.py"), "--out-dir", str(tmp_path / "out")])
    other = tmp_path / "other.py"
    other.write_text("print('not CleanRL')\n")
    with pytest.raises(SystemExit, match="not the CleanRL version measured"):
        cleanrl_reference.main(["--script", str(other), "--out-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit):  # argparse's error: exit 2 before anything runs
        cleanrl_reference.main(
            ["--script", str(other), "--out-dir", str(tmp_path / "out"), "--against", str(tmp_path / "no-pool")]
        )
    assert not (tmp_path / "out").exists()


def test_a_stopped_cleanrl_reference_leaves_no_run_and_no_finished_log(tmp_path):
    script, out = tmp_path / "ppo_continuous_action.py", tmp_path / "out"
    script.write_text(
        FAKE_CLEANRL.replace('print("global_step=1', 'import time; time.sleep(600)  # a long run\nprint("global_step=1')
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmark" / "cleanrl_reference.py"),
            "--script",
            str(script),
            "--out-dir",
            str(out),
            "--seeds",
            "1",
            "2",
            "3",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # as when started with &
    import speed

    try:
        deadline = time.time() + 60
        while not (out / "calls.txt").exists() or len((out / "calls.txt").read_text().split()) < 2:  # two runs started
            assert time.time() < deadline and proc.poll() is None, "the runs did not start"
            time.sleep(0.1)
        runs = speed.process_tree(proc.pid)[1:]
        assert len(runs) == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + signal.SIGINT and "stopped by signal 2" in err
        deadline = time.monotonic() + 5
        while (left := [pid for pid in runs if alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert sorted((out / "calls.txt").read_text().split()) == ["1", "2"]  # seed 3 not started
    assert not list(out.glob("*.log"))


def test_runner_compares_a_researchers_copied_script_with_the_baseline(tmp_path, capsys, monkeypatch):
    # a copy of ppo_wm.py with one change (its own default z_dim) runs through the same pools, report and checks
    mine = tmp_path / "my_wm.py"
    mine.write_text((ROOT / "ppo_wm.py").read_text().replace("z_dim: int = 32", "z_dim: int = 8"))
    monkeypatch.chdir(tmp_path)  # the script path is read from where the runner is started
    common = ["--experiment", "mine", "--variants", "ppo_wm", "mine=my_wm.py --wm-epochs 1", "--env-ids", "Hopper-v4"]
    common += ["--seeds", "1", "--total-timesteps", "256", "--extra", TINY_EXTRA, "--runs-root", str(tmp_path / "runs")]
    assert runner.main([*common, "--results-dir", str(tmp_path / "results")]) == 0
    (mine_run,) = (tmp_path / "runs").glob("mine+*/Hopper-v4__mine+*__1__*")
    config = json.loads((mine_run / "config.json").read_text())
    assert config["z_dim"] == 8 and config["wm_epochs"] == 1  # the copy's default and the variant's flag
    assert len(list(csv.DictReader(open(mine_run / "progress.csv")))) == 2
    summary = (tmp_path / "results" / runner.pool_name("mine", TINY_EXTRA.split(), 256) / "summary.md").read_text()
    assert "| Hopper-v4 | mine | 1 |" in summary  # the variant as named
    capsys.readouterr()
    assert runner.main([*common, "--dry-run"]) == 0
    assert capsys.readouterr().out.count(": finished") == 2
    # a changed default in the copy makes its runs stale, as for the project's scripts
    mine.write_text((ROOT / "ppo_wm.py").read_text().replace("z_dim: int = 32", "z_dim: int = 4"))
    assert runner.main([*common, "--dry-run"]) == 2
    assert "was made with z_dim=8 but my_wm.py now runs z_dim=4" in capsys.readouterr().err
    # the same variant name for another script never reuses the pool
    other = tmp_path / "other.py"
    other.write_text(mine.read_text())
    assert runner.main([*common[:3], "ppo_wm", "mine=other.py --wm-epochs 1", *common[5:], "--dry-run"]) == 2
    assert "holds runs of another script than" in capsys.readouterr().err
    for bad in ("mine=missing.py", "ppo=my_wm.py", "no_such_variant"):
        with pytest.raises(SystemExit) as e:
            runner.main(["--experiment", "mine", "--variants", bad, "--dry-run"])
        assert e.value.code == 2
    with pytest.raises(SystemExit):  # a new experiment needs its variants
        runner.main(["--experiment", "mine", "--dry-run"])


def test_speed_pairs_and_reference_run_the_runners_mode_beside_another_checkout(tmp_path, monkeypatch, capsys):
    import speed

    commands, results = [], []
    real_take_turns = speed.take_turns

    def recording_take_turns(cmds, *a, **k):
        commands.extend(cmds)
        results.extend(real_take_turns(cmds, *a, **k))
        return results[-len(cmds) :]

    monkeypatch.setattr(speed, "take_turns", recording_take_turns)
    argv = speed_argv(2560, "ppo_wm")
    monkeypatch.setattr(sys, "argv", [*argv, "--pairs", "--reference", str(ROOT)])
    speed.main()
    report = capsys.readouterr().out
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in report.splitlines()
        if line.startswith("| ppo")
    }
    assert list(rows) == ["ppo_wm", "ppo_wm @reference"] and "two runs side by side" in report
    assert re.search(r"ppo_wm: x ppo_wm @reference per repeat \d\.\d{3}", report)
    pairs = [c for c in commands if c[0] == "sh"]
    assert len(pairs) == 2  # the script and its reference twin, each a pair
    # each pair: two runs of different seeds, one env thread each, in one process group; its rate counts both runs'
    # steps over its turns (one repeat: the commands run in the labels' order)
    for label, cmd in zip(["ppo_wm", "ppo_wm @reference"], pairs):
        assert cmd[2].count("--num-env-threads 1") == 2 and "--seed 1 " in cmd[2] and "--seed 2 " in cmd[2]
        active = results[commands.index(cmd)]["active"]
        assert rows[label] == f"{2 * 2560 / active:,.0f}"  # the table's rate is this, rounded
    monkeypatch.setattr(sys, "argv", [*argv, "--reference", str(tmp_path)])  # a checkout without the script
    with pytest.raises(SystemExit) as e:
        speed.main()
    assert e.value.code == 2


def test_world_model_runs_made_before_its_options_existed_are_still_the_default_configuration(tmp_path, capsys):
    # E1's ppo_wm runs have no wm_horizon / wm_reward_weight / wm_target_tau in config.json: they trained with 1, 0, 1
    common = ["--experiment", "E1", "--variants", "ppo_wm", "--env-ids", "Hopper-v4", "--seeds", "1"]
    common += ["--total-timesteps", "2048", "--runs-root", str(tmp_path), "--dry-run"]
    (run,) = runner.plan("E1", ["Hopper-v4"], [1], 2048, str(tmp_path), sys.executable, [], ["ppo_wm"])
    run_dir = Path(run["runs_dir"]) / f"{run['name']}__1700000000"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    (run_dir / "progress.csv").write_text("global_step\n2048\n")
    config = dict(runner.expected_config(run), batch_size=2048)
    older = {k: v for k, v in config.items() if k not in ("wm_horizon", "wm_reward_weight", "wm_target_tau")}
    (run_dir / "config.json").write_text(json.dumps(older))
    assert runner.main(common) == 0
    assert f"# {run['name']}: finished" in capsys.readouterr().out
    (run_dir / "config.json").write_text(json.dumps(dict(older, wm_horizon=5)))
    assert runner.main(common) == 2
    assert "was made with wm_horizon=5 but ppo_wm.py now runs wm_horizon=1" in capsys.readouterr().err


def test_a_comparison_pooled_over_seed_sets_gives_each_sets_p_and_their_stratified_mean(tmp_path):
    rng = np.random.default_rng(1)
    for seeds, gain in ((range(1, 7), 500.0), (range(21, 27), 0.0)):  # better on the first set only
        for seed in seeds:
            base = rng.normal(1000, 50)
            make_run(tmp_path, "ppo", "Hopper-v4", seed, base)
            make_run(tmp_path, "ppo_wm", "Hopper-v4", seed, base + gain)
    sets = {"A": list(range(1, 7)), "B": list(range(21, 27))}
    report.write_report(
        [str(tmp_path / "ppo"), str(tmp_path / "ppo_wm")],
        str(tmp_path / "out"),
        1_000_000,
        ["ppo"],
        reps=300,
        seed_sets=sets,
    )
    summary = (tmp_path / "out" / "summary.md").read_text()
    table = summary.split("pooled over the seed sets A, B")[1]
    (row,) = [line for line in table.splitlines() if line.startswith("| Hopper-v4 | ppo_wm |")]
    cell = row.split("|")[-2].strip()  # @1000k
    assert cell.startswith("0.75 [") and cell.endswith("(A 1.00, B 0.50)")
    lo, hi = map(float, cell.split("[")[1].split("]")[0].split(", "))
    assert lo < 0.75 < hi and lo > 0.5  # set A carries it: above 0.5, below 1


def test_the_report_sets_late_latent_drift_and_rank_beside_the_late_change_of_the_score(tmp_path):
    # synthetic world-model runs whose z keeps moving late exactly where their score falls (rho -1) and uses fewer
    # directions the more it moves (rank against change: rho +1)
    for seed in range(1, 7):
        drift = 0.01 * seed
        run_dir = make_run(tmp_path, "ppo_wm", "Hopper-v4", seed, 2000.0, steps=3_000_000, rise=1_000_000)
        with open(run_dir / "progress.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            step = int(row["global_step"])
            row["z_drift"] = drift if step > 1_000_000 else 0.5
            row["z_effective_rank"] = 16 - 100 * drift if step > 1_000_000 else 30
            row["return_last100"] = (
                float(row["return_last100"]) - (step > 1_000_000) * 1000 * drift * (step - 1e6) / 2e6
            )
        with open(run_dir / "progress.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    report.write_report([str(tmp_path / "ppo_wm")], str(tmp_path / "out"), 3_000_000, ["ppo_wm"], reps=100)
    summary = (tmp_path / "out" / "summary.md").read_text()
    (row,) = [line for line in summary.split("The latent after 1000k")[1].splitlines() if "| ppo_wm |" in line]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2:7] == ["0.035", "12.5", "-34", "-1.00", "+1.00"]  # rank 16 - 100 * drift: 15 down to 10
    assert cells[7].startswith("1: 0.010 / 15.0 / -9, 2: 0.020 / 14.0 / -19")  # from 998k: 1,999 to 1,990
    assert (tmp_path / "out" / "z_drift.png").stat().st_size > 10_000


SHIPPED = sorted(p.parent.name for p in (ROOT / "benchmark" / "results").glob("*/runs.csv.gz"))


def test_at_least_two_experiments_ship_their_run_data():
    # the regeneration test below is only as strong as what ships: an empty SHIPPED would skip it silently
    assert len(SHIPPED) >= 2, SHIPPED
    index = (ROOT / "benchmark" / "results" / "README.md").read_text().splitlines()
    for experiment in SHIPPED:  # the index's row for it says its data ships
        row = [line for line in index if line.startswith(f"| [{experiment}/]({experiment}/summary.md)")]
        sha = report.sha256(ROOT / "benchmark" / "results" / experiment / "runs.csv.gz")
        assert len(row) == 1 and row[0].endswith(f" KB, sha256 `{sha}`) |") and "| ships (" in row[0], experiment


@pytest.mark.parametrize("experiment", SHIPPED)
def test_a_committed_report_is_made_again_byte_for_byte_from_its_shipped_data(experiment, tmp_path):
    # as in a fresh clone: no run directories, only benchmark/results/<experiment>/ with its runs.csv.gz
    committed = ROOT / "benchmark" / "results" / experiment
    shutil.copytree(committed, tmp_path / experiment)
    for name in ("summary.md", "learning_curves.png", "z_drift.png"):
        (tmp_path / experiment / name).unlink(missing_ok=True)  # made again, not left over
    argv = ["--experiment", experiment, "--report-only", "--runs-root", str(tmp_path / "no-runs")]
    assert runner.main([*argv, "--results-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / experiment).iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in committed.iterdir():
        assert (tmp_path / experiment / path.name).read_bytes() == path.read_bytes(), path.name


def test_seed_sets_name_the_seeds_of_a_run_and_a_bad_one_is_one_line(tmp_path, capsys):
    argv = ["--experiment", "pool", "--variants", "ppo", "ppo_wm", "--env-ids", "Hopper-v4", "--dry-run"]
    assert runner.main([*argv, "--seed-sets", "A=1-2", "B=21-22", "--runs-root", str(tmp_path)]) == 0
    seeds = [line.split("--seed ")[1].split()[0] for line in capsys.readouterr().out.splitlines()]
    assert sorted(set(seeds), key=int) == ["1", "2", "21", "22"]
    assert runner.main(["--experiment", "E9", "--dry-run", "--runs-root", str(tmp_path)]) == 0  # its own seed sets
    commands = capsys.readouterr().out.splitlines()
    seeds = sorted({int(line.split("--seed ")[1].split()[0]) for line in commands})
    assert (
        len(commands) == 60 and seeds == [*range(1, 11), *range(21, 31)] and runner.SEED_SETS["E9"]["E6"] == seeds[10:]
    )
    with pytest.raises(SystemExit) as e:
        runner.main([*argv, "--seed-sets", "A:1-10"])
    assert e.value.code == 2 and "--seed-sets A:1-10: give NAME=FIRST-LAST" in capsys.readouterr().err


def test_e10_plans_the_four_scripts_on_four_tasks_and_ten_seeds(tmp_path, capsys):
    assert runner.main(["--experiment", "E10", "--dry-run", "--runs-root", str(tmp_path)]) == 0
    commands = capsys.readouterr().out.splitlines()
    runs = {
        tuple(line.split(f" {flag} ")[1].split()[0] for flag in ("--env-id", "--exp-name", "--seed"))
        for line in commands
    }
    tasks = {"Walker2d-v4", "Hopper-v4", "HalfCheetah-v4", "Ant-v4"}
    variants = {"ppo", "ppo_wm", "ppo_wm_aux", "ppo_wm_mrq_ema"}
    assert len(commands) == 160 and runs == {(t, v, str(s)) for t in tasks for v in variants for s in range(1, 11)}
    assert runner.BASELINES["E10"] == ["ppo", "ppo_wm"]
    assert runner.main(["--dry-run", "--runs-root", str(tmp_path)]) == 0  # the default: benchmark/run.sh is E10
    assert capsys.readouterr().out.splitlines() == commands
