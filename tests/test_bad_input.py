"""Bad input: one line on stderr naming the problem, exit code 2, no run directory and no partial files."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, script

pytestmark = pytest.mark.quick  # the scripts' contract: python -m pytest -q -m quick

CASES = [
    ("ppo_continuous", ["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    ("ppo_continuous", ["--env-id", "CartPole-v1"], "Discrete action space"),
    ("ppo_continuous", ["--num-envs", "0"], "--num-envs"),
    ("ppo_continuous", ["--num-minibatches", "3"], "not divisible by --num-minibatches"),
    ("ppo_wm", ["--total-timesteps", "100"], "smaller than one batch"),
    ("ppo_wm_aux", ["--alpha", "-0.1"], "--alpha -0.1: must be a number at least 0"),
    ("ppo_wm_aux", ["--alpha", "inf"], "--alpha inf: must be a number at least 0"),
    ("ppo_wm", ["--z-dim", "0"], "--z-dim, --wm-epochs and --wm-num-minibatches must be at least 1"),
    ("ppo_wm_aux", ["--wm-horizon", "0"], "--wm-horizon 1 to --num-steps"),
    ("ppo_wm", ["--wm-target-tau", "0"], "--wm-target-tau 0.0: must be in (0, 1]"),
    ("ppo_wm", ["--wm-learning-rate", "nan"], "--wm-learning-rate nan: must be a positive number"),
    ("ppo_wm_aux", ["--wm-reward-weight", "inf"], "--wm-reward-weight inf: must be a number at least 0"),
    ("ppo_continuous", ["--resume", "runs/no-such-run"], "no run with a checkpoint.pt"),
    # values that cannot train: refused before anything is written, never a traceback or a "diverged" run
    ("ppo_continuous", ["--learning-rate", "nan"], "--learning-rate nan: must be a positive number"),
    ("ppo_wm", ["--learning-rate", "-1"], "--learning-rate -1.0: must be a positive number"),
    ("ppo_wm_aux", ["--learning-rate", "inf"], "--learning-rate inf: must be a positive number"),
    ("ppo_continuous", ["--gamma", "1.5"], "--gamma 1.5: must be in (0, 1]"),
    ("ppo_continuous", ["--gamma", "0"], "--gamma 0.0: must be in (0, 1]"),
    ("ppo_wm", ["--gae-lambda", "2"], "--gae-lambda 2.0: must be in [0, 1]"),
    ("ppo_continuous", ["--clip-coef", "-1"], "--clip-coef -1.0: must be a positive number"),
    ("ppo_continuous", ["--ent-coef", "-0.01"], "--ent-coef -0.01: must be a number at least 0"),
    ("ppo_continuous", ["--vf-coef", "nan"], "--vf-coef nan: must be a number at least 0"),
    ("ppo_continuous", ["--max-grad-norm", "0"], "--max-grad-norm 0.0: must be a positive number"),
    ("ppo_continuous", ["--target-kl", "0"], "--target-kl 0.0: must be a positive number"),
    ("ppo_wm_aux", ["--seed", "-1"], "--seed -1: must be at least 0"),
]


def check_rejected(name, argv, expected, tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = script(name).main([*TINY, "--runs-dir", str(runs), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"{name}.py: error: ") and expected in err[0], err
    assert not runs.exists()


@pytest.mark.parametrize("name,argv,expected", CASES)
def test_bad_arguments(name, argv, expected, tmp_path, capsys):
    check_rejected(name, argv, expected, tmp_path, capsys)


@pytest.mark.parametrize("mode", ["--eval-checkpoint", "--resume"])
def test_truncated_or_corrupt_checkpoint(mode, tmp_path, capsys, finished_runs):
    good = (finished_runs["ppo_wm"] / "checkpoint.pt").read_bytes()
    for i, data in enumerate([good[: len(good) // 2], b"not a checkpoint at all"]):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        (run_dir / "checkpoint.pt").write_bytes(data)
        target = run_dir / "checkpoint.pt" if mode == "--eval-checkpoint" else run_dir
        check_rejected("ppo_wm", [mode, str(target)], "truncated or corrupt", tmp_path, capsys)
        assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]  # nothing written beside it


@pytest.mark.parametrize("mode", ["--eval-checkpoint", "--resume"])
def test_checkpoint_from_another_script(mode, tmp_path, capsys, finished_runs):
    run_dir = finished_runs["ppo_wm"]
    target = run_dir / "checkpoint.pt" if mode == "--eval-checkpoint" else run_dir
    before = sorted(p.name for p in run_dir.iterdir())
    check_rejected("ppo_wm_aux", [mode, str(target)], "written by ppo_wm.py, not ppo_wm_aux.py", tmp_path, capsys)
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_checkpoint_from_another_task(tmp_path, capsys, finished_runs):
    ckpt = finished_runs["ppo_continuous"] / "checkpoint.pt"
    check_rejected(
        "ppo_continuous",
        ["--eval-checkpoint", str(ckpt), "--env-id", "Walker2d-v4"],
        "is for Hopper-v4, not --env-id Walker2d-v4",
        tmp_path,
        capsys,
    )


def test_checkpoint_with_arbitrary_pickled_object_is_refused(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"script": "ppo_continuous", "payload": subprocess.Popen}, evil)  # a class: needs unpickling to load
    check_rejected("ppo_continuous", ["--eval-checkpoint", str(evil)], "truncated or corrupt", tmp_path, capsys)


def test_exit_code_of_the_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "ppo_wm_aux.py"), "--alpha", "-1", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ppo_wm_aux.py: error: --alpha -1.0: must be a number at least 0"
    assert not (tmp_path / "runs").exists()


def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine; a GPU machine gets the same
    check_rejected("ppo_wm", ["--cuda"], "--cuda: torch finds no CUDA device here; leave --cuda off", tmp_path, capsys)


def test_track_without_a_wandb_login_says_how_to_log_in(tmp_path, capsys, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    check_rejected("ppo_continuous", ["--track"], "run `wandb login`, or set WANDB_MODE=offline", tmp_path, capsys)
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # where `wandb login` writes the key
    assert script("ppo_continuous").wandb_login_found()
