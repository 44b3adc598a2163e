"""Short end-to-end runs: outputs, PPO invariants, reproducibility, --alpha 0, evaluation, video and snapshots."""

import json
import math

import imageio.v2 as imageio
import pytest
import torch

from conftest import BATCH, SCRIPTS, read_progress, script, tb_scalars, train


@pytest.mark.quick
@pytest.mark.parametrize("name", SCRIPTS)
def test_end_to_end_outputs(name, finished_runs):
    run_dir = finished_runs[name]
    assert run_dir.name.startswith(f"Hopper-v4__{name}__1__")  # CleanRL run name: env__exp__seed__time
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_id"] == "Hopper-v4" and config["num_envs"] == 4 and config["batch_size"] == BATCH
    assert set(config) == {f.name for f in script(name).dataclasses.fields(script(name).Args)} | {"trained_with"}

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
    # one metrics dict feeds both: every progress.csv column but global_step is a TensorBoard tag ending in its name,
    # logged at the rows' steps wherever the row has a value
    for column in rows[0]:
        if column == "global_step":
            continue
        (tag,) = [t for t in scalars if t.split("/")[-1] == column]
        logged = [(int(r["global_step"]), float(r[column])) for r in rows if r[column] != ""]
        assert [s for s, _ in scalars[tag]] == [s for s, _ in logged], column
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in logged], rel=1e-6, nan_ok=True), column
    assert {"charts/episodic_return", "charts/sps", "losses/value_loss", "losses/approx_kl"} <= set(scalars)
    assert sum(int(r["episodes"]) for r in rows) > 0 and len(scalars["charts/episodic_return"]) > 0
    if name != "ppo_continuous":
        assert {"wm/wm_loss", "wm/z_effective_rank", "wm/z_std"} <= set(scalars)
    if name == "ppo_wm_aux":
        assert {"intrinsic/intrinsic_reward", "intrinsic/intrinsic_reward_scaled"} <= set(scalars)

    status = (run_dir / "training_status.log").read_text().splitlines()
    assert len(status) == 3 and "step 384/384" in status[-1] and "eval_return" in status[-1] and "sps" in status[-1]
    for f in ("checkpoint.pt", "best.pt"):
        ckpt = torch.load(run_dir / f, weights_only=True)
        assert ckpt["script"] == name
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["counters"]["global_step"] == 3 * BATCH and ckpt["counters"]["iteration"] == 3
    best = max(float(r["eval_return"]) for r in rows if r["eval_return"])
    assert torch.load(run_dir / "best.pt", weights_only=True)["counters"]["best_eval_return"] == pytest.approx(best)
    assert not list(run_dir.glob("*.tmp"))


@pytest.mark.quick
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
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [
        {k: v for k, v in r.items() if k not in timing} for r in first
    ]
    other = read_progress(train(name, tmp_path, "--total-timesteps", 3 * BATCH, "--seed", 2))
    assert [r["policy_loss"] for r in other] != [r["policy_loss"] for r in first]


@pytest.mark.parametrize("name", SCRIPTS)
def test_evaluations_do_not_change_training(name, tmp_path, finished_runs):
    # the runner reuses runs across --eval-interval values (benchmark/runner.py NON_TRAINING_KEYS)
    without = read_progress(train(name, tmp_path, "--total-timesteps", 3 * BATCH, "--eval-interval", 0))
    with_evals = read_progress(finished_runs[name])
    assert [r["eval_return"] for r in without] == ["", "", ""] and with_evals[1]["eval_return"] != ""
    ignored = set(script(name).TIMING_COLUMNS) | {"eval_return"}
    assert [{k: v for k, v in r.items() if k not in ignored} for r in without] == [
        {k: v for k, v in r.items() if k not in ignored} for r in with_evals
    ]


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


@pytest.mark.quick
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
    acting, policy = mod.make_agent(11, 3, mod.Args())
    norm = mod.Normalizer((11,), 1, 0.99)
    mod.restore_state(ckpt, acting | {"normalizer": norm}, rng=False)
    mean_before = norm.obs_rms.mean.copy()
    args = mod.Args(env_id="Hopper-v4", eval_episodes=2)
    frozen = mod.evaluate(policy, norm, args, 123, torch.device("cpu"))
    assert (norm.obs_rms.mean == mean_before).all() and norm.obs_rms.count == ckpt["normalizer"]["obs_rms"]["count"]
    fresh = mod.evaluate(policy, mod.Normalizer((11,), 1, 0.99), args, 123, torch.device("cpu"))
    assert (frozen == mod.evaluate(policy, norm, args, 123, torch.device("cpu"))).all()
    assert not (frozen == fresh).all()  # without the saved statistics the agent acts differently


def test_video_and_snapshots_headless(tmp_path, capsys):
    run_dir = train(
        "ppo_wm_aux",
        tmp_path,
        "--total-timesteps",
        2 * BATCH,
        "--capture-video",
        "--save-snapshot",
        "--snapshot-interval",
        5,
        "--eval-episodes",
        1,
    )
    videos = list((run_dir / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    # a frame every 4 steps of Hopper's 125 Hz: real time at 31.25 frames/s, from the first step to the last
    reader = imageio.get_reader(videos[0])
    frames = sum(1 for _ in reader)
    assert reader.get_meta_data()["fps"] == pytest.approx(31.25, abs=0.01)
    pngs = sorted((run_dir / "snapshots").rglob("*.png"))
    assert pngs and pngs[0].read_bytes()[:4] == b"\x89PNG"
    steps = [int(p.stem[len("step") :]) for p in pngs]  # every 5th step of the episode, not only the video's
    assert steps == list(range(0, steps[-1] + 1, 5)) and len(steps) > 1
    # the episode's length T: its last snapshot step is within 5 of its end, its last frame within 4
    assert max(4 * (frames - 1) + 1, steps[-1] + 1) <= min(4 * frames, steps[-1] + 5)
    meta = json.loads(pngs[0].with_suffix(".json").read_text())
    assert (
        meta["step"] == 0
        and len(meta["action"]) == 3
        and math.isfinite(meta["reward"])
        and "x_position" in meta["info_keys"]
    )
    assert (
        script("ppo_wm_aux").main(
            ["--eval-checkpoint", str(run_dir / "best.pt"), "--eval-episodes", "2", "--capture-video"]
        )
        == 0
    )
    assert (run_dir / "videos" / "eval-best.mp4").stat().st_size > 1000
    assert f"video: {run_dir / 'videos' / 'eval-best.mp4'}" in capsys.readouterr().out.splitlines()  # said where
