"""Short end-to-end runs: outputs, PPO invariants, reproducibility, --alpha 0, evaluation, video and snapshots."""
import json
import math
import multiprocessing

import pytest
import torch

from conftest import BATCH, SCRIPTS, read_progress, script, tb_scalars, train


@pytest.mark.parametrize("name", SCRIPTS)
def test_end_to_end_outputs(name, finished_runs):
    run_dir = finished_runs[name]
    assert run_dir.name.startswith(f"Hopper-v4__{name}__1__")  # CleanRL run name: env__exp__seed__time
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_id"] == "Hopper-v4" and config["num_envs"] == 4 and config["batch_size"] == BATCH
    assert set(config) == {f.name for f in script(name).dataclasses.fields(script(name).Args)}

    rows = read_progress(run_dir)
    assert [int(r["global_step"]) for r in rows] == [BATCH, 2 * BATCH, 3 * BATCH]
    assert [r["eval_return"] != "" for r in rows] == [False, True, True]
    for r in rows:
        assert float(r["sps"]) > 0 and float(r["wall_time"]) > 0
        if int(r["episodes"]):
            assert float(r["episodic_return"]) == float(r["episodic_return"])  # a number, not NaN
    # the phase times split the loop: positive, and together no more than the training time (which adds evaluations)
    assert all(float(r["rollout_time"]) > 0 and float(r["update_time"]) > 0 for r in rows)
    assert sum(float(r["rollout_time"]) + float(r["update_time"]) for r in rows) <= float(rows[-1]["wall_time"])
    wm_columns = {"wm_loss", "z_effective_rank", "z_std"}
    assert wm_columns <= set(rows[0]) if name != "ppo_continuous" else not wm_columns & set(rows[0])
    assert ("intrinsic_reward" in rows[0]) == (name == "ppo_wm_aux")

    scalars = tb_scalars(run_dir)
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate", "charts/eval_return",
                "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac"]:
        assert tag in scalars, tag
    # every finished episode is logged once, also when several envs end on the same step
    assert len(scalars["charts/episodic_return"]) == sum(int(r["episodes"]) for r in rows) > 0
    if name != "ppo_continuous":
        assert {"wm/loss", "wm/z_effective_rank", "wm/z_std"} <= set(scalars)
    if name == "ppo_wm_aux":
        assert {"intrinsic/reward_raw", "intrinsic/reward_scaled"} <= set(scalars)
    assert [s for s, _ in scalars["charts/SPS"]] == [BATCH, 2 * BATCH, 3 * BATCH]

    status = (run_dir / "training_status.log").read_text().splitlines()
    assert status and "step 384/384" in status[-1] and "sps" in status[-1]
    for f in ("checkpoint.pt", "best.pt"):
        ckpt = torch.load(run_dir / f, weights_only=True)
        assert ckpt["script"] == name
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["counters"]["global_step"] == 3 * BATCH and ckpt["counters"]["iteration"] == 3
    best = max(float(r["eval_return"]) for r in rows if r["eval_return"])
    assert torch.load(run_dir / "best.pt", weights_only=True)["counters"]["best_eval_return"] == pytest.approx(best)
    assert not list(run_dir.glob("*.tmp"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_first_minibatch_ratio_is_exactly_one(name, finished_runs):
    # the update sees exactly the inputs (for the WM scripts: [obs, z]) and log-probs the actions were taken with
    for r in read_progress(finished_runs[name]):
        assert float(r["first_ratio_dev"]) < 1e-5


@pytest.mark.parametrize("name", SCRIPTS)
def test_same_seed_reproduces_progress(name, tmp_path, finished_runs):
    again = read_progress(train(name, tmp_path, "--total-timesteps", 3 * BATCH))
    first = read_progress(finished_runs[name])
    timing = script(name).TIMING_COLUMNS
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [{k: v for k, v in r.items() if k not in timing} for r in first]
    other = read_progress(train(name, tmp_path, "--total-timesteps", 3 * BATCH, "--seed", 2))
    assert [r["policy_loss"] for r in other] != [r["policy_loss"] for r in first]


@pytest.mark.parametrize("name", SCRIPTS)
def test_evaluations_do_not_change_training(name, tmp_path, finished_runs):
    # the runner reuses runs across --eval-interval values (benchmark/runner.py NON_TRAINING_KEYS)
    without = read_progress(train(name, tmp_path, "--total-timesteps", 3 * BATCH, "--eval-interval", 0))
    with_evals = read_progress(finished_runs[name])
    assert [r["eval_return"] for r in without] == ["", "", ""] and with_evals[1]["eval_return"] != ""
    ignored = set(script(name).TIMING_COLUMNS) | {"eval_return"}
    assert [{k: v for k, v in r.items() if k not in ignored} for r in without] == [{k: v for k, v in r.items() if k not in ignored} for r in with_evals]


class WaitingConnection:
    """The trainer's end of the pipe to the world-model process, waiting after each request until the reply has come:
    the world model then trains strictly before the PPO update instead of during it. The serial reference."""

    def __init__(self, conn):
        self.conn = conn

    def send(self, message):
        self.conn.send(message)
        if message is not None:
            self.conn.poll(None)

    def recv(self):
        return self.conn.recv()

    def close(self):
        self.conn.close()


@pytest.mark.parametrize("name", ["ppo_wm", "ppo_wm_aux"])
def test_world_model_process_concurrent_with_ppo_update_equals_serial_update(name, tmp_path, finished_runs, monkeypatch):
    # the WM trains in a child process while PPO updates: nothing the trainer reads or writes meanwhile may race with it
    def serial_pipe():
        trainer_end, child_end = multiprocessing.Pipe()
        return WaitingConnection(trainer_end), child_end

    monkeypatch.setattr(script(name).mp, "Pipe", serial_pipe)
    serial = read_progress(train(name, tmp_path, "--total-timesteps", 3 * BATCH))
    concurrent = read_progress(finished_runs[name])
    timing = script(name).TIMING_COLUMNS
    assert [{k: v for k, v in r.items() if k not in timing} for r in serial] == [{k: v for k, v in r.items() if k not in timing} for r in concurrent]
    assert float(serial[-1]["wm_loss"]) > 0


def test_a_dead_world_model_process_is_an_error_not_a_hang():
    trainer_end, child_end = multiprocessing.Pipe()
    child_end.close()
    with pytest.raises(RuntimeError, match="world-model process died"):
        script("ppo_wm").receive(trainer_end)


def test_alpha_zero_reproduces_ppo_wm(tmp_path, finished_runs):
    aux = read_progress(train("ppo_wm_aux", tmp_path, "--total-timesteps", 3 * BATCH, "--alpha", 0))
    wm = read_progress(finished_runs["ppo_wm"])
    for a, w in zip(aux, wm, strict=True):
        for k in w:
            if k not in script("ppo_wm").TIMING_COLUMNS:
                assert a[k] == w[k], k
    assert float(aux[-1]["intrinsic_reward"]) > 0 and float(aux[-1]["intrinsic_reward_scaled"]) == 0.0


def test_alpha_changes_learning_but_not_logged_return_definition(tmp_path, finished_runs):
    aux = read_progress(train("ppo_wm_aux", tmp_path, "--total-timesteps", 3 * BATCH, "--alpha", 1.0))
    wm = read_progress(finished_runs["ppo_wm"])
    assert float(aux[0]["intrinsic_reward_scaled"]) > 0
    # the first rollout is collected before any update, so its raw returns are the same; learning then differs
    assert aux[0]["episodic_return"] == wm[0]["episodic_return"]
    assert aux[-1]["policy_loss"] != wm[-1]["policy_loss"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_eval_checkpoint_matches_training_evaluation_with_frozen_statistics(name, finished_runs, capsys):
    run_dir = finished_runs[name]
    mod = script(name)
    assert mod.main(["--eval-checkpoint", str(run_dir / "best.pt"), "--eval-episodes", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    mean, std = (float(part.split("=")[1]) for part in last.split())
    assert last.startswith("eval_return_mean=") and std >= 0
    best = torch.load(run_dir / "best.pt", weights_only=True)["counters"]["best_eval_return"]
    assert mean == pytest.approx(best, rel=1e-6)


def test_evaluation_does_not_update_statistics_and_depends_on_them(finished_runs):
    mod = script("ppo_continuous")
    ckpt = mod.load_checkpoint(str(finished_runs["ppo_continuous"] / "checkpoint.pt"))
    agent = mod.Agent(11, 3)
    norm = mod.Normalizer((11,), 1, 0.99)
    mod.restore_state(ckpt, {"agent": agent, "normalizer": norm}, rng=False)
    mean_before = norm.obs_rms.mean.copy()
    frozen = mod.evaluate(agent.actor_mean, norm, "Hopper-v4", 2, 123, torch.device("cpu"))
    assert (norm.obs_rms.mean == mean_before).all() and norm.obs_rms.count == ckpt["normalizer"]["obs_rms"]["count"]
    fresh = mod.evaluate(agent.actor_mean, mod.Normalizer((11,), 1, 0.99), "Hopper-v4", 2, 123, torch.device("cpu"))
    assert (frozen == mod.evaluate(agent.actor_mean, norm, "Hopper-v4", 2, 123, torch.device("cpu"))).all()
    assert not (frozen == fresh).all()  # without the saved statistics the agent acts differently


def test_video_and_snapshots_headless(tmp_path):
    run_dir = train("ppo_wm_aux", tmp_path, "--total-timesteps", 2 * BATCH, "--capture-video", "--save-snapshot",
                    "--snapshot-interval", 5, "--eval-episodes", 1)
    videos = list((run_dir / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    pngs = sorted((run_dir / "snapshots").rglob("*.png"))
    assert pngs and pngs[0].read_bytes()[:4] == b"\x89PNG"
    meta = json.loads(pngs[0].with_suffix(".json").read_text())
    assert meta["step"] == 0 and len(meta["action"]) == 3 and math.isfinite(meta["reward"]) and "x_position" in meta["info_keys"]
    assert script("ppo_wm_aux").main(["--eval-checkpoint", str(run_dir / "best.pt"), "--eval-episodes", "1", "--capture-video"]) == 0
    assert (run_dir / "videos" / "eval-best.mp4").stat().st_size > 1000


@pytest.mark.parametrize("name", SCRIPTS)
def test_init_action_std_sets_the_policys_initial_std(name, tmp_path):
    # at learning rate 0 the policy never moves, so the checkpoint holds the initial log-std the flag asked for
    run_dir = train(name, tmp_path, "--total-timesteps", BATCH, "--init-action-std", 0.4, "--learning-rate", 0, "--eval-interval", 0)
    logstd = torch.load(run_dir / "checkpoint.pt", weights_only=True)["agent"]["actor_logstd"]
    assert logstd.shape == (1, 3) and torch.allclose(logstd, torch.full((1, 3), math.log(0.4)))
    torch.manual_seed(0)  # the spread of 20,000 draws is 0.4 within 0.002 (1 sd); fixed, so the check never flakes
    agent = script(name).Agent(11, 3, init_action_std=0.4)
    x = torch.randn(20_000, 11)
    with torch.no_grad():
        action, logprob = agent.act(x)
        mean = agent.actor_mean(x)
    assert (action - mean).std(0).sub(0.4).abs().max() < 0.01  # the actions' spread is the initial std
    assert torch.allclose(logprob, agent.log_prob(action, mean), atol=1e-4)
    assert (script(name).Agent(11, 3).actor_logstd == 0).all()  # the constructor's default is CleanRL's std 1


@pytest.mark.parametrize("name", SCRIPTS)
def test_critic_width_widens_the_critic_only_and_checkpoints_load_at_their_width(name, tmp_path, capsys):
    run_dir = train(name, tmp_path, "--total-timesteps", BATCH, "--critic-width", 96, "--eval-interval", 0)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    in_dim = 11 + ckpt["args"].get("z_dim", 0)  # Hopper's obs (and the world model's z)
    widths = {k: tuple(v.shape) for k, v in ckpt["agent"].items() if k.endswith("weight")}
    assert widths == {"critic.0.weight": (96, in_dim), "critic.2.weight": (96, 96), "critic.4.weight": (1, 96),
                      "actor_mean.0.weight": (64, in_dim), "actor_mean.2.weight": (64, 64), "actor_mean.4.weight": (3, 64)}
    # evaluation and resume build the agent at the checkpoint's width
    assert script(name).main(["--eval-checkpoint", str(run_dir / "checkpoint.pt"), "--eval-episodes", "1"]) == 0
    assert script(name).main(["--resume", str(run_dir), "--total-timesteps", str(2 * BATCH)]) == 0
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["agent"]["critic.2.weight"].shape == (96, 96)
    # a checkpoint written before the flag existed (no critic_width in its args) has CleanRL's 64-wide critic
    default_dir = train(name, tmp_path / "default", "--total-timesteps", BATCH, "--eval-interval", 0)
    old = torch.load(default_dir / "checkpoint.pt", weights_only=True)
    del old["args"]["critic_width"]
    torch.save(old, default_dir / "old.pt")
    capsys.readouterr()
    assert script(name).main(["--eval-checkpoint", str(default_dir / "old.pt"), "--eval-episodes", "1"]) == 0
    assert "eval_return_mean=" in capsys.readouterr().out

