"""Checkpoints: exact restore, resume in place, atomic writes, SIGTERM, no pickled objects."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import BATCH, ROOT, SCRIPTS, TINY, read_progress, script, tb_scalars, train


def assert_same(a, b, path="ckpt"):
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    else:
        assert a == b, path


def build_parts(name, ckpt):
    """Fresh objects of a script, as train() builds them, for the checkpoint's args."""
    mod = script(name)
    args = ckpt["args"]
    obs_dim, act_dim = ckpt["normalizer"]["obs_rms"]["mean"].shape[0], ckpt["agent"]["actor_logstd"].shape[1]
    z = args.get("z_dim", 0)
    agent = mod.Agent(obs_dim + z, act_dim)
    parts = {
        "agent": agent,
        "optimizer": torch.optim.Adam(agent.parameters(), lr=args["learning_rate"], eps=1e-5, fused=True),
    }
    if name != "ppo_continuous":
        parts["encoder"], parts["dynamics"] = mod.Encoder(obs_dim, z), mod.Dynamics(z, act_dim, obs_dim)
        wm_params = list(parts["encoder"].parameters()) + list(parts["dynamics"].parameters())
        parts["wm_optimizer"] = torch.optim.Adam(wm_params, lr=args["wm_learning_rate"], fused=True)
    parts["normalizer"] = mod.Normalizer((obs_dim,), args["num_envs"], args["gamma"])
    if name == "ppo_wm_aux":
        parts["intrinsic_return_rms"] = mod.RunningMeanStd(())
    return parts


@pytest.mark.quick
@pytest.mark.parametrize("name", SCRIPTS)
def test_restore_state_is_exact_tensor_by_tensor(name, finished_runs, tmp_path):
    mod = script(name)
    ckpt = mod.load_checkpoint(str(finished_runs[name] / "checkpoint.pt"))
    assert ckpt["optimizer"]["state"]  # Adam moments are in the checkpoint
    torch.manual_seed(12345)  # a different RNG state, which restore must overwrite
    parts = build_parts(name, ckpt)
    counters = mod.restore_state(ckpt, parts)
    env_groups = mod.make_envs(ckpt["args"]["env_id"], ckpt["args"]["num_envs"], 2)
    mod.reset_envs(env_groups, seed=777)  # other states, which restoring must overwrite
    mod.set_env_states(env_groups, ckpt["rollout"]["envs"])
    rollout = ckpt["rollout"] | {"envs": mod.get_env_states(env_groups)}
    mod.save_checkpoint(str(tmp_path / "again.pt"), mod.Args(**ckpt["args"]), parts, counters, rollout)
    # networks, optimizer moments, normalizer, world model, counters, RNG, args, and each env's state
    assert_same(torch.load(tmp_path / "again.pt", weights_only=True), ckpt)


@pytest.mark.quick
@pytest.mark.parametrize("name", SCRIPTS)
def test_resume_continues_in_place_and_extends(name, tmp_path, finished_runs, monkeypatch):
    mod = script(name)
    full = read_progress(finished_runs[name])
    real_save = mod.save_checkpoint

    def die_before_last_checkpoint(path, args, parts, counters, rollout=None):
        if path.endswith("checkpoint.pt") and counters["iteration"] == 3:
            raise KeyboardInterrupt("killed after logging iteration 3, before checkpointing it")
        real_save(path, args, parts, counters, rollout)

    monkeypatch.setattr(mod, "save_checkpoint", die_before_last_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(name, tmp_path, "--total-timesteps", 3 * BATCH, "--checkpoint-interval", 2)
    monkeypatch.undo()
    (run_dir,) = tmp_path.iterdir()
    assert len(read_progress(run_dir)) == 3  # iteration 3 was logged but is not in checkpoint.pt
    first_ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert first_ckpt["counters"]["iteration"] == 2

    # TensorBoard orders event files by name (creation second, pid, counter); a real resume is a new process at a later
    # second, while here the same process could name its new file "...9" < "...10" within one second
    time.sleep(1.1)
    assert mod.main(["--resume", str(run_dir)]) == 0
    rows = read_progress(run_dir)
    assert [int(r["global_step"]) for r in rows] == [BATCH, 2 * BATCH, 3 * BATCH]  # no duplicated or missing step
    assert untimed(rows) == untimed(full)  # identical to an unbroken run, the iteration after the checkpoint too
    assert [s for s, _ in tb_scalars(run_dir)["charts/sps"]] == [BATCH, 2 * BATCH, 3 * BATCH]  # TensorBoard too
    final = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert final["counters"]["iteration"] == 3 and final["counters"]["eval_seed"] == first_ckpt["counters"]["eval_seed"]
    # the optimizer continued from its saved moments: Adam's step count went on from the checkpoint's
    assert final["optimizer"]["state"][0]["step"].item() == first_ckpt["optimizer"]["state"][0]["step"].item() + 4 * 2

    # a finished run is left as it is, unless --total-timesteps grows
    assert mod.main(["--resume", str(run_dir)]) == 0
    assert len(read_progress(run_dir)) == 3
    assert mod.main(["--resume", str(run_dir), "--total-timesteps", str(4 * BATCH)]) == 0
    assert [int(r["global_step"]) for r in read_progress(run_dir)] == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["args"]["total_timesteps"] == 4 * BATCH


def test_atomic_checkpoint_write_survives_a_crash(tmp_path, monkeypatch):
    mod = script("ppo_continuous")
    path = tmp_path / "checkpoint.pt"
    mod.save_checkpoint(str(path), mod.Args(), {}, {"iteration": 3})

    def crashing_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        mod.save_checkpoint(str(path), mod.Args(), {}, {"iteration": 4})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["counters"] == {"iteration": 3}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


@pytest.mark.quick
def test_checkpoints_hold_no_pickled_objects(finished_runs):
    # weights_only=True would reject any pickled class; also check there is no side file such as obs_rms.pkl
    for run_dir in finished_runs.values():
        torch.load(run_dir / "checkpoint.pt", weights_only=True)
        assert not list(run_dir.glob("*.pkl"))


def long_run(name, runs):
    """A run of the script that lasts long enough to be stopped, checkpointing only when stopped."""
    steps, every = str(400 * BATCH), "1000"
    return [
        sys.executable,
        str(ROOT / f"{name}.py"),
        *TINY,
        "--runs-dir",
        str(runs),
        "--total-timesteps",
        steps,
        "--checkpoint-interval",
        every,
        "--eval-interval",
        "0",
    ]


def test_sigterm_saves_a_checkpoint_and_exits_nonzero(tmp_path):
    runs = tmp_path / "runs"
    cmd = long_run("ppo_continuous", runs)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_progress_rows(runs, 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err
    (run_dir,) = runs.iterdir()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    rows = read_progress(run_dir)
    assert 2 <= ckpt["counters"]["iteration"] < 400 and int(rows[-1]["iteration"]) == ckpt["counters"]["iteration"]


def test_ctrl_c_to_the_process_group_checkpoints_the_world_model_and_leaves_no_process(tmp_path):
    # Ctrl-C (and Slurm's SIGTERM) reach every process of the group: the run finishes its iteration, checkpoints the
    # world model with the rest, and exits without leaving any process behind
    runs = tmp_path / "runs"
    cmd = long_run("ppo_wm_aux", runs)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_progress_rows(runs, 2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert live_processes_of_group(proc.pid) == []
    (run_dir,) = runs.iterdir()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    iterations = ckpt["counters"]["iteration"]
    assert 2 <= iterations < 400 and int(read_progress(run_dir)[-1]["iteration"]) == iterations
    # the world model's optimizer state is current to the last iteration: 2 epochs x 4 minibatches of Adam steps each
    steps = {float(state["step"]) for state in ckpt["wm_optimizer"]["state"].values()}
    assert steps == {8.0 * iterations}


def live_processes_of_group(pgid, wait=10.0):
    """PIDs of the group's processes that have not exited (zombies excluded), after waiting up to `wait` s for them."""
    deadline = time.time() + wait
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(int(stat.parent.name))
        if not live or time.time() > deadline:
            return live
        time.sleep(0.2)


def wait_for_progress_rows(runs, rows, timeout=120):
    """Waits until the single run under runs has logged `rows` iterations to progress.csv (or the timeout passes)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = list(runs.glob("*/progress.csv"))
        if progress and len(progress[0].read_text().splitlines()) >= rows + 1:  # + the header
            return
        time.sleep(0.2)


@pytest.mark.parametrize(
    "flag", [["--learning-rate", "1e-3"], ["--no-anneal-lr"], ["--env-id=Hopper-v4"], ["--seed", "1"]]
)
def test_resume_refuses_flags_it_would_ignore(flag, tmp_path, capsys, finished_runs):
    # a resumed run trains with the flags it was started with: any other flag is an error, not silently dropped
    run_dir = finished_runs["ppo_wm"]
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert script("ppo_wm").main(["--resume", str(run_dir), "--total-timesteps", str(4 * BATCH), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only --total-timesteps may change, not " + flag[0].split("=")[0] in err[0], err
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before  # nothing written


def comparable(ckpt):
    """A checkpoint without what differs between a resumed run and its uninterrupted twin by design: the wall time,
    the list of starts (config.json's trained_with) and the paths."""
    counters = {k: v for k, v in ckpt["counters"].items() if k not in ("wall_time", "trained_with")}
    return ckpt | {"counters": counters, "args": ckpt["args"] | {"resume": None, "runs_dir": None}}


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in ("sps", "wall_time", "rollout_time", "update_time")} for r in rows]


def wait_for_rows(run_dir, rows, proc, timeout=120):
    deadline = time.time() + timeout
    while not (run_dir / "progress.csv").exists() or len(read_progress(run_dir)) < rows:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)


@pytest.mark.parametrize("name", [*SCRIPTS, "a copy made by docs/extending.md"])
def test_a_run_stopped_at_two_checkpoints_ends_as_the_uninterrupted_run(name, tmp_path):
    # SIGTERM (a scheduler's stop: checkpoint at the end of the iteration), resume, kill -9 (back to the last periodic
    # checkpoint, the rows after it logged again), resume: progress.csv and the final checkpoint are the twin's
    if name.startswith("a copy"):
        from test_extending import make_my_wm

        make_my_wm(path := tmp_path / "my_wm.py")
    else:
        path = ROOT / f"{name}.py"
    flags = [*TINY, "--total-timesteps", str(24 * BATCH), "--checkpoint-interval", "3", "--eval-interval", "4"]

    def start(*argv, stderr=subprocess.PIPE):
        return subprocess.Popen([sys.executable, str(path), *argv], stderr=stderr)

    with open(tmp_path / "twin.log", "w") as log:  # the twin beside the cut run: the suite's time
        twin_proc = start(*flags, "--runs-dir", str(tmp_path / "twin"), stderr=log)
    proc = start(*flags, "--runs-dir", str(tmp_path / "cut"))
    while not (tmp_path / "cut").exists() or not list((tmp_path / "cut").iterdir()):
        time.sleep(0.05)
    (run_dir,) = (tmp_path / "cut").iterdir()
    wait_for_rows(run_dir, 5, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["iteration"]
    proc = start("--resume", str(run_dir))
    wait_for_rows(run_dir, stopped_at + 7, proc)  # past at least one periodic checkpoint
    proc.kill()
    proc.wait()
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["iteration"]
    assert 5 <= stopped_at < killed_at < 24 and killed_at % 3 == 0  # two different checkpoints
    assert start("--resume", str(run_dir)).wait(timeout=120) == 0
    assert twin_proc.wait(timeout=120) == 0, (tmp_path / "twin.log").read_text()[-2000:]
    (twin,) = (tmp_path / "twin").iterdir()

    assert untimed(read_progress(run_dir)) == untimed(read_progress(twin))
    assert_same(
        comparable(torch.load(run_dir / "checkpoint.pt", weights_only=True)),
        comparable(torch.load(twin / "checkpoint.pt", weights_only=True)),
    )


def test_a_checkpoint_from_before_exact_resume_resumes_and_says_its_episodes_restart(tmp_path, capsys):
    run_dir = train("ppo_wm", tmp_path, "--total-timesteps", 2 * BATCH)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del ckpt["rollout"]  # as every checkpoint was written before: no environment states, no episode accumulators
    torch.save(ckpt, run_dir / "checkpoint.pt")
    capsys.readouterr()
    assert script("ppo_wm").main(["--resume", str(run_dir), "--total-timesteps", str(3 * BATCH)]) == 0
    assert "the checkpoint does not hold its episodes in flight; they restart from a reset" in capsys.readouterr().out
    assert [int(r["global_step"]) for r in read_progress(run_dir)] == [BATCH, 2 * BATCH, 3 * BATCH]
