"""Every state file a script reads back is checked before anything is written, and every file it writes is whole: a
checkpoint from another run, a config.json of the wrong shape, an older checkpoint without a counter, a checkpoint
with flags this version does not know, a closed terminal (SIGHUP) and too little memory for the envs each end in one
line and a documented exit code, with no file of the run changed."""

import json
import os
import signal
import subprocess

import mujoco
import pytest
import torch

from conftest import BATCH, ROOT, TINY, script, train
from test_checkpoints import long_run, wait_for_progress_rows


def snapshot(run_dir):
    """Every file of a run directory and its bytes."""
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def unfinished(tmp_path, name="ppo_continuous", env_id="Hopper-v4", runs="runs"):
    """A run of 4 iterations stopped after its checkpoint at 2, as an interrupted run is left."""
    run_dir = train(
        name, tmp_path / runs, "--env-id", env_id, "--total-timesteps", 4 * BATCH, "--checkpoint-interval", 2
    )
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["counters"]["iteration"], ckpt["counters"]["global_step"] = 2, 2 * BATCH  # as at the checkpoint of iteration 2
    torch.save(ckpt, run_dir / "checkpoint.pt")
    return run_dir


def refused(name, argv, capsys, says):
    assert script(name).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{name}.py: error: ") and says in err[0], err
    return err[0]


def test_a_checkpoint_copied_from_another_run_is_refused_before_anything_is_written(tmp_path, capsys):
    hopper = unfinished(tmp_path)
    walker = unfinished(tmp_path, env_id="Walker2d-v4", runs="other")  # the same flags but the task
    (hopper / "checkpoint.pt").write_bytes((walker / "checkpoint.pt").read_bytes())
    before = snapshot(hopper)
    line = refused("ppo_continuous", ["--resume", str(hopper)], capsys, "checkpoint.pt and config.json disagree")
    assert "env_id is 'Walker2d-v4' there, 'Hopper-v4' in config.json" in line
    assert snapshot(hopper) == before


@pytest.mark.parametrize(
    "config, says",
    [("[]", "anneal_lr is True there, 'missing' in config.json"), ("{}", "'missing' in config.json"), ("{", "")],
)
def test_a_config_json_of_the_wrong_shape_or_without_a_key_is_one_line(config, says, tmp_path, capsys):
    run_dir = unfinished(tmp_path)
    saved = json.loads((run_dir / "config.json").read_text())
    if config == "{}":
        config = json.dumps({k: v for k, v in saved.items() if k != "gamma"})  # one key lacking
        says = "gamma is 0.99 there, 'missing' in config.json"
    (run_dir / "config.json").write_text(config)
    before = snapshot(run_dir)
    refused("ppo_continuous", ["--resume", str(run_dir)], capsys, says or "'missing' in config.json")
    assert snapshot(run_dir) == before


def test_an_older_checkpoint_without_a_counter_is_refused_before_anything_is_written(tmp_path, capsys):
    run_dir = unfinished(tmp_path, "ppo_wm")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del ckpt["counters"]["recent_returns"]  # as the first commit's checkpoints
    torch.save(ckpt, run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    refused("ppo_wm", ["--resume", str(run_dir)], capsys, "lacks counters ['recent_returns']: cannot resume it")
    assert snapshot(run_dir) == before


def test_a_checkpoint_with_flags_this_version_does_not_know_is_refused_naming_them(tmp_path, capsys):
    run_dir = unfinished(tmp_path, "ppo_wm_aux")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["args"]["frame_stack"] = 4  # a copy's flag
    torch.save(ckpt, run_dir / "checkpoint.pt")
    config = json.loads((run_dir / "config.json").read_text()) | {"frame_stack": 4}
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    says = "has flags this ppo_wm_aux.py does not know: frame_stack"
    refused("ppo_wm_aux", ["--resume", str(run_dir)], capsys, says)
    refused("ppo_wm_aux", ["--eval-checkpoint", str(run_dir / "checkpoint.pt")], capsys, says)
    assert snapshot(run_dir) == before


def test_sighup_stops_a_run_as_sigterm_does_with_a_checkpoint_and_one_line(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(long_run("ppo_continuous", runs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_progress_rows(runs, 2)
    proc.send_signal(signal.SIGHUP)  # a closed terminal, an ssh connection dropped
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGHUP
    assert err.strip().splitlines()[-1].startswith("stopped by signal 1; resume: python ppo_continuous.py --resume ")
    (run_dir,) = runs.iterdir()
    iteration = torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["iteration"]
    assert iteration >= 2 and len((run_dir / "progress.csv").read_text().splitlines()) == iteration + 1


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        ValueError("Error: engine error: Could not allocate memory"),  # MuJoCo, loading the model
        mujoco.FatalError("Could not allocate memory"),  # MuJoCo, allocating MjData
    ],
    ids=["MemoryError", "ValueError", "FatalError"],
)
def test_too_little_memory_for_the_envs_is_one_line_naming_num_envs(error, tmp_path, monkeypatch, capsys):
    # where an allocation fails depends on the machine's memory layout (under a real limit torch or MuJoCo may also
    # abort in C, which no Python code can turn into a line), so the failure is raised where the envs are made
    mod = script("ppo_continuous")

    def make_envs(*args):
        raise error

    monkeypatch.setattr(mod, "make_envs", make_envs)
    argv = [*TINY, "--num-envs", "200000", "--total-timesteps", "6400000", "--runs-dir", str(tmp_path / "runs")]
    assert mod.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("ppo_continuous.py: error: out of memory (")
        and "fewer --num-envs" in err[0]
    )
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(mod, "make_envs", lambda *args: (_ for _ in ()).throw(ValueError("another error")))
    with pytest.raises(ValueError, match="another error"):  # any other ValueError is not called memory
        mod.main([*TINY, "--runs-dir", str(tmp_path / "runs")])


def test_a_file_written_whole_is_the_old_one_or_the_new_one_never_half(tmp_path):
    mod = script("ppo_wm")
    path = tmp_path / "config.json"
    mod.write_whole(str(path), str(tmp_path), lambda f: json.dump({"seed": 1}, f))

    def half(f):
        f.write('{"seed": ')
        raise KeyboardInterrupt("killed during the write")

    with pytest.raises(KeyboardInterrupt):
        mod.write_whole(str(path), str(tmp_path), half)
    assert json.loads(path.read_text()) == {"seed": 1} and os.listdir(tmp_path) == ["config.json"]
    # the scripts write their state files this way, and nothing with open(..., "w") of their own
    for name in ("ppo_continuous", "ppo_wm", "ppo_wm_aux"):
        source = (ROOT / f"{name}.py").read_text()
        assert 'open(marker, "w")' not in source and '.json"), "w")' not in source and "write_whole(" in source


def test_a_resume_of_a_run_made_by_tiny_flags_still_resumes(tmp_path, capsys):
    # the check of checkpoint against config.json passes for a run's own files (and --total-timesteps may change)
    run_dir = unfinished(tmp_path, "ppo_wm")
    assert script("ppo_wm").main(["--resume", str(run_dir), "--total-timesteps", str(5 * BATCH)]) == 0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["iteration"] == 5
    assert TINY[1] in json.loads((run_dir / "config.json").read_text())["env_id"]
