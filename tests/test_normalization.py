import numpy as np
import pytest
import torch

from conftest import SCRIPTS, script

pytestmark = pytest.mark.quick  # the scripts' contract: python -m pytest -q -m quick


def test_observation_normalization_matches_running_statistics():
    mod = script("ppo_continuous")
    rng = np.random.default_rng(0)
    norm = mod.Normalizer((3,), num_envs=4, gamma=0.99)
    batches = [rng.normal(5.0, 2.0, size=(4, 3)) for _ in range(200)]
    for b in batches:
        out = norm.obs(b)
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.obs_rms.mean, data.mean(0), atol=1e-3)
    np.testing.assert_allclose(norm.obs_rms.var, data.var(0), rtol=1e-3)
    np.testing.assert_allclose(out, (batches[-1] - data.mean(0)) / data.std(0), atol=1e-2)
    assert np.abs(norm.obs(np.full((1, 3), 1e6), update=False)).max() == 10.0  # clipped at +-10


def test_reward_scaling_uses_discounted_returns_reset_at_episode_end():
    mod = script("ppo_continuous")
    norm = mod.Normalizer((1,), num_envs=2, gamma=0.5)
    seen = []
    for t in range(4):
        done = np.array([t == 1, False])
        scaled = norm.reward(np.array([1.0, 2.0]), done)
        seen.append(norm.returns.copy())
    # env 0's return restarts after its episode ends at t=1; env 1 keeps discounting
    np.testing.assert_allclose(seen[1], [0.0, 3.0])
    np.testing.assert_allclose(seen[3], [1.5, 2 + 0.5 * (2 + 0.5 * (2 + 0.5 * 2))])
    np.testing.assert_allclose(scaled, np.array([1.0, 2.0]) / np.sqrt(norm.return_rms.var + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("name", SCRIPTS)
def test_normalization_statistics_round_trip_through_checkpoint(name, finished_runs):
    mod = script(name)
    ckpt = mod.load_checkpoint(str(finished_runs[name] / "checkpoint.pt"))
    saved = ckpt["normalizer"]["obs_rms"]
    assert saved["count"] > 3 * 128  # updated with every training observation
    norm = mod.Normalizer(tuple(saved["mean"].shape), 1, 0.99)
    norm.load_state_dict(ckpt["normalizer"])
    np.testing.assert_array_equal(norm.obs_rms.mean, saved["mean"].numpy())
    np.testing.assert_array_equal(norm.obs_rms.var, saved["var"].numpy())
    assert norm.return_rms.var == pytest.approx(float(ckpt["normalizer"]["return_rms"]["var"]))
    again = norm.state_dict()
    torch.testing.assert_close(again["obs_rms"]["mean"], saved["mean"])
