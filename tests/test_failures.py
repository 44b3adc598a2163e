"""No silent wrong number: divergence, unsaved parameters, failed writes, re-stretched schedules, two runners on one
pool, duplicated seeds, unreached steps, too few seeds, fuller reports and changed scripts each end in one clear line
or an honest count."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import BATCH, ROOT, SCRIPTS, TINY, TINY_EXTRA, make_run, read_progress, script, tb_scalars, train

sys.path.insert(0, str(ROOT / "benchmark"))
import report  # noqa: E402
import runner  # noqa: E402


def one_error_line(err, prefix):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


def copy_run(run_dir, tmp_path):
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def finite_tensors(x):
    if isinstance(x, dict):
        return all(finite_tensors(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(finite_tensors(v) for v in x)
    return not isinstance(x, torch.Tensor) or not x.is_floating_point() or bool(torch.isfinite(x).all())


# --- the scripts ---


@pytest.mark.parametrize("name", SCRIPTS)
def test_divergence_stops_the_run_and_writes_nothing_nonfinite(name, tmp_path, monkeypatch, capsys):
    mod = script(name)
    real_step, calls = mod.step_envs, []

    def nan_in_iteration_3(*a):  # an observation becomes NaN during the third rollout
        out = real_step(*a)
        calls.append(1)
        if len(calls) == 2 * 32 + 5:
            out[0][0, 0] = math.nan
        return out

    monkeypatch.setattr(mod, "step_envs", nan_in_iteration_3)
    argv = ["--total-timesteps", 5 * BATCH, "--checkpoint-interval", 1, "--eval-interval", 1]
    run_dir = train(name, tmp_path, *argv, expect=3)
    line = one_error_line(capsys.readouterr().err, f"{name}.py: error: diverged at step {3 * BATCH}: observations")
    assert "learning rate" in line
    rows = read_progress(run_dir)  # ends with the last finite iteration
    assert [int(r["global_step"]) for r in rows] == [BATCH, 2 * BATCH]
    assert all(math.isfinite(float(v)) for r in rows for k, v in r.items() if v and k != "explained_variance")
    assert max(step for values in tb_scalars(run_dir).values() for step, _ in values) == 2 * BATCH
    for f in ("checkpoint.pt", "best.pt"):  # their last finite state
        ckpt = torch.load(run_dir / f, weights_only=True)
        assert ckpt["counters"]["iteration"] <= 2 and finite_tensors(ckpt)
    assert json.loads((run_dir / "diverged.json").read_text()) == {
        "global_step": 3 * BATCH,
        "iteration": 3,
        "nonfinite": "observations",
    }
    # resuming would repeat the divergence: refused, nothing written
    before = sorted(p.name for p in run_dir.iterdir())
    assert mod.main(["--resume", str(run_dir)]) == 2
    assert "the run diverged" in one_error_line(capsys.readouterr().err, f"{name}.py: error: ")
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_an_exploding_learning_rate_stops_at_the_first_iteration(tmp_path):
    # the command at a tiny size: the losses are NaN after the first update
    cmd = [sys.executable, str(ROOT / "ppo_continuous.py"), *TINY, "--learning-rate", "1e6"]
    out = subprocess.run([*cmd, "--total-timesteps", str(4 * BATCH), "--runs-dir", str(tmp_path)], capture_output=True)
    assert out.returncode == 3
    one_error_line(out.stderr.decode(), f"ppo_continuous.py: error: diverged at step {BATCH}: ")
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "progress.csv").exists() and not (run_dir / "checkpoint.pt").exists()
    assert json.loads((run_dir / "diverged.json").read_text())["iteration"] == 1


def test_a_trained_parameter_that_no_checkpoint_part_saves_is_refused(tmp_path):
    # a copier's new head as its own module, its parameters given to the world-model optimizer: resume would restart it
    source = (ROOT / "ppo_wm.py").read_text()
    anchor = "    wm_params = list(encoder.parameters()) + list(dynamics.parameters())\n"
    forgotten = tmp_path / "forgot.py"
    forgotten.write_text(
        source.replace(
            anchor, anchor + "    head = nn.Linear(args.z_dim, 3)\n    wm_params += list(head.parameters())\n"
        )
    )
    attached = tmp_path / "attached.py"  # the documented way: attached to a saved module before wm_params is built
    attached.write_text(source.replace(anchor, "    dynamics.head = nn.Linear(args.z_dim, 3)\n" + anchor))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [*TINY, "--total-timesteps", str(BATCH)]
    out = subprocess.run([sys.executable, forgotten, *argv, "--runs-dir", tmp_path / "a"], capture_output=True, env=env)
    assert out.returncode == 2 and not (tmp_path / "a").exists()
    assert "a parameter of shape (3, 32) is trained but saved by no checkpoint part" in one_error_line(
        out.stderr.decode(), "forgot.py: error: "
    )
    out = subprocess.run([sys.executable, attached, *argv, "--runs-dir", tmp_path / "b"], capture_output=True, env=env)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    (run_dir,) = (tmp_path / "b").iterdir()
    assert "head.weight" in torch.load(run_dir / "checkpoint.pt", weights_only=True)["dynamics"]


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, finished_runs, capsys):
    run_dir = copy_run(finished_runs["ppo_wm"], tmp_path)
    before = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt.tmp").symlink_to("/dev/full")  # every write to it fails: a full disk
    assert script("ppo_wm").main(["--resume", str(run_dir), "--total-timesteps", str(4 * BATCH)]) == 4
    line = one_error_line(capsys.readouterr().err, f"ppo_wm.py: error: cannot write {run_dir}/checkpoint.pt (")
    assert f"{run_dir}/checkpoint.pt is intact: python ppo_wm.py --resume {run_dir} continues the run" in line
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not (run_dir / "checkpoint.pt.tmp").exists()


def test_failed_writes_of_progress_and_video_are_one_line(tmp_path, finished_runs, capsys):
    run_dir = copy_run(finished_runs["ppo_continuous"], tmp_path)
    (run_dir / "progress.csv").unlink()
    (run_dir / "progress.csv").mkdir()  # cannot be read or written as a file
    assert script("ppo_continuous").main(["--resume", str(run_dir), "--total-timesteps", str(4 * BATCH)]) == 4
    line = one_error_line(capsys.readouterr().err, f"ppo_continuous.py: error: cannot write {run_dir}/progress.csv (")
    assert "is intact" in line
    (run_dir / "videos").write_text("a file where the videos folder goes")
    argv = ["--eval-checkpoint", str(run_dir / "best.pt"), "--eval-episodes", "2", "--capture-video"]
    assert script("ppo_continuous").main(argv) == 4
    one_error_line(capsys.readouterr().err, f"ppo_continuous.py: error: cannot write {run_dir}/videos (")  # the file


@pytest.mark.parametrize("name", ["ppo_continuous", "ppo_wm_aux"])
def test_config_records_the_code_and_each_start_and_an_extension_says_it_restretches(name, tmp_path, finished_runs):
    mod = script(name)
    run_dir = copy_run(finished_runs[name], tmp_path)
    started = json.loads((run_dir / "config.json").read_text())["trained_with"]
    files = [f"{name}.py"] + (["wm_common.py"] if name != "ppo_continuous" else [])  # what the hash covers
    assert started == [{"code_sha256": mod.code_sha256(), "code_files": files, "total_timesteps": 3 * BATCH}]
    cmd = [sys.executable, str(ROOT / f"{name}.py"), "--resume", str(run_dir), "--total-timesteps", str(4 * BATCH)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (said,) = [line for line in out.stdout.splitlines() if "re-stretches" in line]
    assert said.startswith(
        f"--total-timesteps {4 * BATCH} re-stretches the annealed learning rate of a run made for 384"
    )
    assert json.loads((run_dir / "config.json").read_text())["trained_with"] == started + [
        {"code_sha256": mod.code_sha256(), "code_files": files, "total_timesteps": 4 * BATCH}
    ]


def test_the_code_hash_covers_the_script_and_the_world_model(tmp_path, monkeypatch):
    mod = script("ppo_wm")
    assert mod.CODE_FILES == [mod.__file__, str(ROOT / "wm_common.py")]
    before = mod.code_sha256()
    changed = tmp_path / "wm_common.py"
    changed.write_text((ROOT / "wm_common.py").read_text() + "# changed\n")
    monkeypatch.setattr(mod, "CODE_FILES", [mod.__file__, str(changed)])
    assert mod.code_sha256() != before
    assert script("ppo_continuous").CODE_FILES == [script("ppo_continuous").__file__]


# --- the runner and the report ---


def runner_cmd(tmp_path, *argv):
    return [sys.executable, str(ROOT / "benchmark" / "runner.py"), "--runs-root", str(tmp_path / "runs"), *argv]


def test_two_runners_on_one_pool_train_every_run_exactly_once(tmp_path):
    argv = ["--experiment", "E1", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1", "2", "3", "4"]
    argv += ["--total-timesteps", str(8 * BATCH), "--workers", "1", "--extra", TINY_EXTRA, "--no-report"]
    procs = [
        subprocess.Popen(runner_cmd(tmp_path, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("Traceback" in out + err for out, err in outputs)
    run_dirs = sorted((tmp_path / "runs").glob("ppo+*/Hopper-v4__*"))
    assert sorted(d.name.rsplit("__", 1)[0].rsplit("__", 1)[1] for d in run_dirs) == ["1", "2", "3", "4"]
    for d in run_dirs:
        assert [int(r["global_step"]) for r in read_progress(d)] == [BATCH * i for i in range(1, 9)]
    logs = sorted((tmp_path / "runs" / "logs").glob("*.log"))
    assert len(logs) == 4  # one log per run, written by the one runner that trained it
    assert all([line.startswith("$ ") for line in log.read_text().splitlines()].count(True) == 1 for log in logs)


def test_a_held_run_is_skipped_then_waited_for(tmp_path):
    argv = ["--experiment", "E1", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1"]
    argv += ["--total-timesteps", str(2 * BATCH), "--workers", "1", "--extra", TINY_EXTRA, "--no-report"]
    runs_root = str(tmp_path / "runs")
    (run,) = runner.plan("E1", ["Hopper-v4"], [1], 2 * BATCH, runs_root, sys.executable, TINY_EXTRA.split(), ["ppo"])
    fd = runner.claim(run)  # another runner's claim, as its run's process holds it
    assert fd is not None and runner.claim(run) is None
    proc = subprocess.Popen(runner_cmd(tmp_path, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while "another runner holds it; waiting for it" not in proc.stdout.readline():
            assert time.time() < deadline and proc.poll() is None, "the runner did not see the claim"
        time.sleep(1)
        assert proc.poll() is None and not list((tmp_path / "runs").glob("ppo+*/Hopper-v4__*"))  # waiting, not training
    finally:
        os.close(fd)  # the other runner's run ended without finishing: this runner takes it
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    (run_dir,) = (tmp_path / "runs").glob("ppo+*/Hopper-v4__*")
    assert len(read_progress(run_dir)) == 2


def test_a_diverged_run_is_reported_as_diverged_never_finished_or_resumed(tmp_path):
    argv = ["--experiment", "mine", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1"]
    argv += ["--total-timesteps", str(4 * BATCH), "--extra", TINY_EXTRA + " --learning-rate 1e6"]
    out = subprocess.run(runner_cmd(tmp_path, *argv), capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    (run_dir,) = (tmp_path / "runs").glob("ppo+*/Hopper-v4__*")
    assert f"DIVERGED: {run_dir}: " in out.stderr and "not run again" in out.stderr
    # a new experiment's report goes beside its runs, and lists the run as diverged instead of scoring it
    (summary,) = (tmp_path / "runs" / "reports").glob("mine+*/summary.md")
    text = summary.read_text()
    assert f"- {run_dir.parent.name}/{run_dir.name}: " in text.split("Diverged runs")[1]
    assert "| Hopper-v4 | ppo" not in text
    again = subprocess.run(runner_cmd(tmp_path, *argv, "--no-report"), capture_output=True, text=True)
    assert again.returncode == 3 and "1 runs: 1 already finished, 0 to run" in again.stdout
    assert list((tmp_path / "runs").glob("ppo+*/Hopper-v4__*")) == [run_dir]  # not trained again


def test_the_report_refuses_two_runs_of_one_seed(tmp_path, capsys):
    first = make_run(tmp_path / "runs", "ppo", "Hopper-v4", 1, 100.0)
    second = make_run(tmp_path / "runs", "ppo", "Hopper-v4", 1, 100.0, name="Hopper-v4__ppo__1__1")
    make_run(tmp_path / "runs", "ppo", "Hopper-v4", 2, 100.0)
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        report.main([str(out_dir), str(tmp_path / "runs" / "ppo")])
    assert e.value.code == 2 and not out_dir.exists()
    line = one_error_line(capsys.readouterr().err, "report.py: error: two runs of ppo Hopper-v4 1: ")
    assert f"ppo/{first.name}" in line and f"ppo/{second.name}" in line


def test_the_report_shows_only_steps_reached_and_says_when_seeds_are_too_few(tmp_path):
    for seed in (1, 2):
        make_run(tmp_path, "ppo", "Hopper-v4", seed, 40.0 + seed, steps=40960)
        make_run(tmp_path, "ppo_wm", "Hopper-v4", seed, 50.0 + seed, steps=40960)
    report.write_report([str(tmp_path / v) for v in ("ppo", "ppo_wm")], str(tmp_path / "out"), 40960, baselines=["ppo"])
    summary = (tmp_path / "out" / "summary.md").read_text()
    header = [line for line in summary.splitlines() if line.startswith("| task |")][0]
    assert "@" not in header  # no score at 200k, 500k or 1M: no run reached them
    row = [line for line in summary.splitlines() if line.startswith("| Hopper-v4 | ppo_wm |")][0]
    assert "1.00, too few seeds" in row and "[" not in row
    assert "Too few seeds: Hopper-v4 has fewer than 5 seeds per variant" in summary
    # a 3M-step report shows the steps it reached
    make_run(tmp_path / "long", "ppo", "Hopper-v4", 1, 1.0, steps=3_000_000, batch=100_000)
    report.write_report([str(tmp_path / "long" / "ppo")], str(tmp_path / "out3"), 3_000_000)
    text = (tmp_path / "out3" / "summary.md").read_text()
    assert "@1000k | @2000k | @3000k |" in text and "@5000k" not in text


def test_a_long_report_says_whether_a_difference_lasts(tmp_path):
    # "fast" reaches the baseline's final score by 1M and stays there: ahead at 1M, equal at 3M
    for seed in range(1, 7):
        make_run(tmp_path, "ppo", "Hopper-v4", seed, 1000.0 + seed, steps=3_000_000, batch=100_000)
        make_run(tmp_path, "fast", "Hopper-v4", seed, 1000.0 + seed, steps=3_000_000, batch=100_000, rise=1_000_000)
    dirs = [str(tmp_path / v) for v in ("ppo", "fast")]
    report.write_report(dirs, str(tmp_path / "out"), 3_000_000, baselines=["ppo"], reps=200)
    lines = (tmp_path / "out" / "summary.md").read_text().splitlines()
    table = lines[lines.index("P(variant > ppo) [95% CI] at each step (the scores at that step, as in @ columns):") :]
    assert table[2] == "| task | variant | @200k | @500k | @1000k | @2000k | @3000k |"
    cells = [c.strip() for c in table[4].split("|")[1:-1]]
    assert cells[:2] == ["Hopper-v4", "fast"] and cells[4:6] == ["1.00 [1.00, 1.00]"] * 2
    lo, hi = map(float, cells[6].split("[")[1].rstrip("]").split(", "))
    assert cells[6].startswith("0.50 [") and lo < 0.5 < hi  # equal at the end
    at_1m = lines[lines.index("Per-seed scores at 1000k steps (seed: score):") + 4]  # ppo: a third of the way at 1M
    assert at_1m == "| Hopper-v4 | ppo | " + ", ".join(f"{s}: {(1000 + s) / 3:.0f}" for s in range(1, 7)) + " |"
    assert "Per-seed scores at 2000k steps" in "\n".join(lines) and "Per-seed scores at 3000k" not in "\n".join(lines)


def test_a_fuller_report_is_never_replaced_by_accident(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmark" / "results" / "E1", results / "E1")
    committed = (results / "E1" / "summary.md").read_bytes()
    argv = ["--experiment", "E1", "--report-only", "--runs-root", str(tmp_path / "runs"), "--results-dir", str(results)]
    assert runner.main(argv) == 2  # a fresh clone: no runs, and the committed report of 90 whose data does not ship
    line = one_error_line(
        capsys.readouterr().err, "runner.py: error: the runs of E1 are gone and its run data does not"
    )
    assert (results / "E1" / "summary.md").read_bytes() == committed
    for seed in range(1, 7):
        make_run(tmp_path / "runs", "ppo", "TaskA-v0", seed, 100.0 + seed)
    ppo = [str(tmp_path / "runs" / "ppo")]
    report.write_report(ppo, str(results / "mine"), 1_000_000)
    with pytest.raises(report.ReportError):
        report.write_report(ppo, str(results / "mine"), 1_000_000, seeds=[1, 2])
    for seed in range(11, 17):  # as many runs, but others: another seed set never replaces the report either
        make_run(tmp_path / "other", "ppo", "TaskA-v0", seed, 100.0)
    with pytest.raises(report.ReportError, match="scores 6 runs this report does not have"):
        report.write_report([str(tmp_path / "other" / "ppo")], str(results / "mine"), 1_000_000)
    assert "| TaskA-v0 | ppo | 6 |" in (results / "mine" / "summary.md").read_text()
    report.write_report(ppo, str(results / "mine"), 1_000_000, seeds=[1, 2], force=True)
    assert "| TaskA-v0 | ppo | 2 |" in (results / "mine" / "summary.md").read_text()


def test_slurm_without_sbatch_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    argv = ["--experiment", "E1", "--env-ids", "Hopper-v4", "--seeds", "1", "--runs-root", str(tmp_path), "--slurm"]
    assert runner.main(argv) == 2
    one_error_line(capsys.readouterr().err, "runner.py: error: sbatch not found")


def test_runs_of_another_length_are_another_pool_whatever_the_learning_rate(tmp_path, capsys):
    plan = runner.plan("E1", ["Hopper-v4"], [1], 4096, str(tmp_path), sys.executable, [], ["ppo"])
    assert plan[0]["variant"] == "ppo+total-timesteps+4096"
    (run,) = runner.plan("E1", ["Hopper-v4"], [1], 1_000_000, str(tmp_path), sys.executable, [], ["ppo"])
    assert run["variant"] == "ppo"
    run_dir = tmp_path / "ppo" / f"{run['name']}__1700000000"  # a run made before pools had lengths
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    (run_dir / "progress.csv").write_text("global_step\n40960\n")
    config = dict(runner.expected_config(run), batch_size=2048, total_timesteps=40960)
    (run_dir / "config.json").write_text(json.dumps(config))
    common = ["--experiment", "E1", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1"]
    common += ["--runs-root", str(tmp_path), "--dry-run"]
    assert runner.main(common) == 2
    assert "was trained for 40,960 steps, not 1,000,000: a run of other steps is another run" in capsys.readouterr().err
    # extended by its script to 1M: still another run
    extended = dict(config, total_timesteps=1_000_000, trained_with=[{"code_sha256": "x", "total_timesteps": 40960}])
    (run_dir / "config.json").write_text(json.dumps(extended))
    assert runner.main(common) == 2
    assert "was trained for 40,960 then 1,000,000 steps" in capsys.readouterr().err
    # one rule whatever the learning rate: a constant one makes no exception (its evaluations and best.pt differ too)
    (run,) = runner.plan("E1", ["Hopper-v4"], [1], 40960, str(tmp_path), sys.executable, ["--no-anneal-lr"], ["ppo"])
    assert run["variant"] == "ppo+no-anneal-lr+total-timesteps+40960"
    constant = Path(run["runs_dir"]) / f"{run['name']}__1700000000"
    shutil.copytree(run_dir, constant)
    (constant / "config.json").write_text(
        json.dumps(dict(runner.expected_config(run), batch_size=2048, total_timesteps=40960))
    )
    assert (
        runner.main(
            [
                *common[:-3],
                "--runs-root",
                str(tmp_path),
                "--total-timesteps",
                "81920",
                "--extra",
                "--no-anneal-lr",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ppo+no-anneal-lr+total-timesteps+81920" in out and "--resume" not in out  # a fresh run of its own pool


def test_a_changed_copied_script_is_not_reused_silently_and_the_report_names_the_code(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "my_wm.py"
    mine.write_text((ROOT / "ppo_wm.py").read_text())
    monkeypatch.chdir(tmp_path)
    common = ["--experiment", "mine", "--variants", "ppo_wm", "mine=my_wm.py", "--env-ids", "Hopper-v4", "--seeds"]
    common += ["1", "--total-timesteps", str(2 * BATCH), "--extra", TINY_EXTRA, "--runs-root", str(tmp_path / "runs")]
    assert runner.main(common) == 0
    (summary,) = (tmp_path / "runs" / "reports").glob("mine+*/summary.md")
    code = script("ppo_wm").code_sha256()
    assert f"- ppo_wm: {code} (ppo_wm.py, wm_common.py) (1 runs)" in summary.read_text()  # the files hashed
    capsys.readouterr()
    mine.write_text(mine.read_text() + "\n# an edit that keeps every flag\n")
    assert runner.main([*common, "--dry-run"]) == 2
    assert "was trained by another version of my_wm.py" in one_error_line(capsys.readouterr().err, "runner.py: error: ")
    assert runner.main([*common, "--dry-run", "--reuse-changed-scripts"]) == 0
    assert capsys.readouterr().out.count(": finished") == 2
    # a built-in script's runs made by another version are reused, and the runner says so
    (run_dir,) = (tmp_path / "runs").glob("ppo_wm+*/Hopper-v4__*")
    config = json.loads((run_dir / "config.json").read_text())
    config["trained_with"][0]["code_sha256"] = "0123456789abcdef"
    (run_dir / "config.json").write_text(json.dumps(config))
    assert runner.main([*common, "--dry-run", "--reuse-changed-scripts"]) == 0
    assert "1 runs in " in capsys.readouterr().out


def test_latent_viz_never_writes_over_a_report(tmp_path, finished_runs):
    out_dir = tmp_path / "E4"
    out_dir.mkdir()
    (out_dir / "summary.md").write_text("committed\n")
    checkpoint = finished_runs["ppo_wm"] / "best.pt"
    cmd = [sys.executable, str(ROOT / "benchmark" / "latent_viz.py"), str(checkpoint), "--out-dir", str(out_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2 and sorted(p.name for p in out_dir.iterdir()) == ["summary.md"]
    assert "holds a report" in one_error_line(out.stderr, "latent_viz.py: error: ")


def test_a_slurm_task_claims_its_run_and_a_requeued_task_resumes_it(tmp_path):
    # what each array task runs (runner.py --slurm-task), without Slurm: skip a held run, resume a preempted one
    extra = TINY_EXTRA.split() + ["--checkpoint-interval", "1"]
    (run,) = runner.plan("E1", ["Hopper-v4"], [1], 100 * BATCH, str(tmp_path), sys.executable, extra, ["ppo"])
    runs_file = tmp_path / "runs.jsonl"
    runs_file.write_text(json.dumps(run | {"reuse_changed_scripts": False}) + "\n")
    task = [sys.executable, str(ROOT / "benchmark" / "runner.py"), "--slurm-task", str(runs_file), "1"]
    fd = runner.claim(run)
    out = subprocess.run(task, capture_output=True, text=True)
    os.close(fd)
    assert out.returncode == 0 and "another runner holds it; skipped" in out.stdout
    assert not list(Path(run["runs_dir"]).glob("Hopper-v4__*"))
    proc = subprocess.Popen(task, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(Path(run["runs_dir"]).glob("*/checkpoint.pt")):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(15)  # preempted: the run checkpoints and exits
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + 15
    (run_dir,) = Path(run["runs_dir"]).glob("Hopper-v4__*")
    assert len(read_progress(run_dir)) < 100
    out = subprocess.run(task, capture_output=True, text=True)  # requeued
    assert out.returncode == 0 and f"--resume {run_dir} --total-timesteps {100 * BATCH}" in out.stdout
    assert list(Path(run["runs_dir"]).glob("Hopper-v4__*")) == [run_dir]
    assert [int(r["global_step"]) for r in read_progress(run_dir)] == [BATCH * i for i in range(1, 101)]
    again = subprocess.run(task, capture_output=True, text=True)
    assert again.returncode == 0 and "finished already" in again.stdout


def test_speed_takes_a_copied_script_as_the_runner_does(tmp_path, monkeypatch, capsys):
    import speed

    mine = tmp_path / "my_wm.py"
    mine.write_text((ROOT / "ppo_wm.py").read_text().replace("z_dim: int = 32", "z_dim: int = 16"))
    commands, real_take_turns = [], speed.take_turns
    monkeypatch.setattr(
        speed, "take_turns", lambda cmds, *a, **k: commands.extend(cmds) or real_take_turns(cmds, *a, **k)
    )
    tiny = "--num-envs 4 --num-steps 64 --num-minibatches 2 --update-epochs 1 --eval-interval 0"
    argv = ["speed.py", "--steps", "2560", "--slice", "0.5", "--raw-slice", "0.3", "--extra", tiny, "--scripts"]
    monkeypatch.setattr(sys, "argv", [*argv, "ppo_wm", f"mine={mine}"])
    speed.main()
    out = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert "ppo_wm" in rows and "mine" in rows
    assert [c[1] for c in commands if c[1] != "-c"] == [str(ROOT / "ppo_wm.py"), str(mine)]
    assert "mine: x ppo_wm per repeat " in out  # the copy's rate over its original's
    monkeypatch.setattr(sys, "argv", [*argv, "mine=no_such_script.py"])
    with pytest.raises(SystemExit) as e:
        speed.main()
    assert e.value.code == 2
