"""Rollout variants tried and not kept, side by side: time per vector step of acting + stepping 16 envs + normalizing.

    python benchmark/rollout_probe.py                 # Walker2d-v4, 1,500 vector steps per variant, 4 rounds
    python benchmark/rollout_probe.py --steps 3000 --rounds 6

Uses ppo_continuous.py's Agent, Normalizer, make_env and step_envs with an untrained policy. Variants: the scripts'
8/8 split of the envs between the main thread and the pool thread; 10/6, 9/7, 7/9 and 6/10 splits; the scripts'
split with Python's GIL switch interval at 0.2 ms instead of 5 ms; and acting on each half separately, so the pool
thread steps one half while the main thread acts for the other (a pipeline; its numbers differ by design). The
rounds run the variants in alternating order; the table gives medians. The checksum (sum of the values of all
actions taken) shows which variants are the same computation.
"""
import argparse
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ppo_continuous import Agent, Normalizer, make_env, reset_envs, step_envs  # noqa: E402

NUM_ENVS = 16


def env_groups(env_id, sizes):
    return [gym.vector.SyncVectorEnv([make_env(env_id)] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP) for n in sizes]


def batched(env_id, steps, sizes, pool, agent, normalizer_state=None):
    """The scripts' rollout: one forward pass for all envs, then the groups step in parallel threads. normalizer_state:
    a trained agent's normalization statistics (a checkpoint's "normalizer"), fresh ones if None."""
    groups = env_groups(env_id, sizes)
    low, high = groups[0].single_action_space.low, groups[0].single_action_space.high
    normalizer = Normalizer(groups[0].single_observation_space.shape, NUM_ENVS, 0.99)
    if normalizer_state is not None:
        normalizer.load_state_dict(normalizer_state)
    obs = torch.from_numpy(normalizer.obs(reset_envs(groups, seed=0)))
    torch.manual_seed(0)
    checksum, start = 0.0, time.perf_counter()
    for _ in range(steps):
        with torch.no_grad():
            action, _ = agent.act(obs)
        raw_obs, reward, term, trunc, _ = step_envs(groups, np.clip(action.numpy(), low, high), pool)
        normalizer.reward(reward, term | trunc)
        obs = torch.from_numpy(normalizer.obs(raw_obs))
        checksum += float(action.sum())
    elapsed = time.perf_counter() - start
    for g in groups:
        g.close()
    return 1e6 * elapsed / steps, checksum


def pipelined(env_id, steps, pool, agent):
    """Each half acts on its own observations; half B steps in the pool thread while the main thread steps half A
    and acts for both halves. Normalization statistics per half."""
    half = NUM_ENVS // 2
    a_envs, b_envs = env_groups(env_id, [half, half])
    low, high = a_envs.single_action_space.low, a_envs.single_action_space.high
    norm_a, norm_b = (Normalizer(a_envs.single_observation_space.shape, half, 0.99) for _ in range(2))
    obs_a, obs_b = torch.from_numpy(norm_a.obs(a_envs.reset(seed=0)[0])), torch.from_numpy(norm_b.obs(b_envs.reset(seed=half)[0]))
    torch.manual_seed(0)
    with torch.no_grad():
        action_b, _ = agent.act(obs_b)
    checksum, start = 0.0, time.perf_counter()
    future = pool.submit(b_envs.step, np.clip(action_b.numpy(), low, high))
    for _ in range(steps):
        with torch.no_grad():
            action_a, _ = agent.act(obs_a)
        raw_obs, reward, term, trunc, _ = a_envs.step(np.clip(action_a.numpy(), low, high))
        norm_a.reward(reward, term | trunc)
        obs_a = torch.from_numpy(norm_a.obs(raw_obs))
        raw_obs, reward, term, trunc, _ = future.result()
        norm_b.reward(reward, term | trunc)
        obs_b = torch.from_numpy(norm_b.obs(raw_obs))
        with torch.no_grad():
            action_b, _ = agent.act(obs_b)
        future = pool.submit(b_envs.step, np.clip(action_b.numpy(), low, high))
        checksum += float(action_a.sum() + action_b.sum())
    future.result()
    elapsed = time.perf_counter() - start
    a_envs.close()
    b_envs.close()
    return 1e6 * elapsed / steps, checksum


def alternating_rounds(variants, rounds):
    """Runs each variant (a function returning (us per vector step, checksum)) once per round, in alternating order,
    so slow drift of the machine affects each alike. Returns {name: [us, ...]} and {name: checksum}."""
    times, checksums = {name: [] for name in variants}, {}
    for r in range(rounds):
        for name in list(variants) if r % 2 == 0 else reversed(list(variants)):
            us, checksums[name] = variants[name]()
            times[name].append(us)
    return times, checksums


def print_table(times, checksums, first_column):
    print(f"| {first_column} | us per vector step (median) | range | checksum |\n|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):,.0f} | {min(t):,.0f}-{max(t):,.0f} | {checksums[name]:.4f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="Walker2d-v4")
    parser.add_argument("--steps", type=int, default=1500, help="vector steps per variant and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
    env = gym.make(args.env_id)
    torch.manual_seed(0)
    agent = Agent(env.observation_space.shape[0], env.action_space.shape[0])
    env.close()
    default_interval = sys.getswitchinterval()

    def with_switch_interval(seconds):
        def run():
            sys.setswitchinterval(seconds)
            try:
                return batched(args.env_id, args.steps, [8, 8], pool, agent)
            finally:
                sys.setswitchinterval(default_interval)
        return run

    variants = {f"split {a}/{16 - a} (main/pool thread)" + (" (the scripts)" if a == 8 else ""):
                (lambda a=a: batched(args.env_id, args.steps, [a, 16 - a], pool, agent)) for a in (8, 10, 9, 7, 6)}
    variants["split 8/8, GIL switch interval 0.2 ms"] = with_switch_interval(0.0002)
    variants["acting per half, pipelined"] = lambda: pipelined(args.env_id, args.steps, pool, agent)
    times, checksums = alternating_rounds(variants, args.rounds)
    print(f"{args.env_id}, {NUM_ENVS} envs, {args.steps:,} vector steps per variant, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print_table(times, checksums, "variant")


if __name__ == "__main__":
    main()
