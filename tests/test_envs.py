"""Vector env stepping on gymnasium 1.x: no dummy transitions and the true final observation of ended episodes."""

from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np

from conftest import script


def test_step_envs_returns_true_final_observation_and_no_dummy_steps():
    mod = script("ppo_continuous")
    limit = 3
    make = lambda: gym.make("Hopper-v4", max_episode_steps=limit)  # noqa: E731
    groups = [gym.vector.SyncVectorEnv([make] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP) for n in (2, 1)]
    reference = [make() for _ in range(3)]  # the same envs stepped one by one
    obs = mod.reset_envs(groups, seed=7)
    for i, env in enumerate(reference):
        ref_obs, _ = env.reset(seed=7 + i)
        np.testing.assert_array_equal(obs[i], ref_obs)
    actions = np.full((3, 3), 0.1, dtype=np.float32)
    with ThreadPoolExecutor(1) as pool:
        for t in range(limit):
            obs, rewards, term, trunc, next_obs = mod.step_envs(groups, actions, pool)
            for i, env in enumerate(reference):
                ref_next, ref_r, ref_term, ref_trunc, _ = env.step(actions[i])
                np.testing.assert_array_equal(next_obs[i], ref_next)  # true next state, also at the time limit
                assert rewards[i] == ref_r and term[i] == ref_term and trunc[i] == ref_trunc
        assert trunc.all() and not term.any()
        # same-step autoreset: obs is already the next episode's first observation, not the final one
        assert not np.allclose(obs, next_obs)
        # and the very next step is a real transition of the new episode (reward from physics, not a dummy 0)
        obs2, rewards2, term2, trunc2, _ = mod.step_envs(groups, actions, pool)
        assert not (term2 | trunc2).any() and np.all(rewards2 != 0.0)


def test_env_threads_do_not_change_results():
    mod = script("ppo_continuous")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(50, 4, 6)).astype(np.float32)
    results = []
    for threads in (1, 2, 4):
        groups = mod.make_envs("Walker2d-v4", 4, threads)
        obs = [mod.reset_envs(groups, seed=3)]
        with ThreadPoolExecutor(3) as pool:
            for a in actions:
                obs.append(mod.step_envs(groups, a, pool)[4])
        results.append(np.stack(obs))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
