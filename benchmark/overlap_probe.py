"""Would overlapping the PPO update with the next rollout (one iteration of policy lag) make the loop faster here?

    python benchmark/overlap_probe.py --iterations 60 --repeats 2

A throughput probe, not a training script: the PPO loop of ppo_continuous.py (its agent, normalizer, env groups and
GAE, on Walker2d by default; its default envs, steps, minibatches, epochs and learning rate), run two ways in alternating order. "serial" is what the
script does: rollout, then update. "overlap" collects rollout k+1 with the policy from before update k while update k
runs in a second thread (the behaviour policy lags one update). Prints steps/s of each; no logging, evaluations or
checkpoints, so the serial rate is the script's loop without them.
"""
import argparse
import copy
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ppo_continuous import Agent, Args, Normalizer, compute_gae, make_envs, ppo_loss, reset_envs, step_envs  # noqa: E402

# the scripts' defaults, so the probes measure the update the scripts run
DEFAULTS = Args()
NUM_ENVS, NUM_STEPS, EPOCHS, LEARNING_RATE = DEFAULTS.num_envs, DEFAULTS.num_steps, DEFAULTS.update_epochs, DEFAULTS.learning_rate
MINIBATCH = NUM_ENVS * NUM_STEPS // DEFAULTS.num_minibatches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="Walker2d-v4")
    parser.add_argument("--iterations", type=int, default=60, help="PPO iterations per measurement (2048 steps each)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.iterations < 2 or args.repeats < 1:
        parser.error("--iterations must be at least 2 and --repeats at least 1")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    for _ in range(args.repeats):
        for mode in ("serial", "overlap"):
            print(f"{mode}: {measure(args.env_id, args.iterations, mode):,.0f} steps/s", flush=True)


def ppo_epochs(agent, optimizer, b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values, epochs=EPOCHS, minibatch=MINIBATCH):
    """The scripts' PPO update on one flattened batch: their minibatch loss (ppo_loss), without logging; their default
    epochs and minibatch size unless told otherwise."""
    batch_size = b_obs.shape[0]
    for _ in range(epochs):
        b_inds = torch.randperm(batch_size)
        for start in range(0, batch_size, minibatch):
            mb = b_inds[start:start + minibatch]
            loss = ppo_loss(agent, DEFAULTS, b_obs[mb], b_actions[mb], b_logprobs[mb], b_advantages[mb], b_returns[mb], b_values[mb])[0]
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), DEFAULTS.max_grad_norm)
            optimizer.step()


def measure(env_id, iterations, mode):
    torch.manual_seed(0)
    env_groups = make_envs(env_id, NUM_ENVS, 2)
    obs_dim, act_dim = env_groups[0].single_observation_space.shape[0], env_groups[0].single_action_space.shape[0]
    agent = Agent(obs_dim, act_dim)
    behaviour = copy.deepcopy(agent)  # the acting copy in overlap mode
    optimizer = torch.optim.Adam(agent.parameters(), lr=LEARNING_RATE, eps=1e-5, fused=True)
    normalizer = Normalizer((obs_dim,), NUM_ENVS, 0.99)
    env_pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
    update_pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
    next_obs = [torch.from_numpy(normalizer.obs(reset_envs(env_groups, 0)))]

    def rollout(policy):
        obs, next_obs_buf = torch.zeros(NUM_STEPS, NUM_ENVS, obs_dim), torch.zeros(NUM_STEPS, NUM_ENVS, obs_dim)
        actions = torch.zeros(NUM_STEPS, NUM_ENVS, act_dim)
        logprobs, rewards, terminations, dones = (torch.zeros(NUM_STEPS, NUM_ENVS) for _ in range(4))
        for step in range(NUM_STEPS):
            obs[step] = next_obs[0]
            with torch.no_grad():
                actions[step], logprobs[step] = policy.act(next_obs[0])
            raw_obs, raw_reward, term, trunc, raw_next_obs = step_envs(env_groups, np.clip(actions[step].numpy(), -1, 1), env_pool)
            done = term | trunc
            rewards[step] = torch.from_numpy(normalizer.reward(raw_reward, done))
            next_obs[0] = next_obs_buf[step] = torch.from_numpy(normalizer.obs(raw_obs))
            if done.any():
                next_obs_buf[step, done] = torch.from_numpy(normalizer.obs(raw_next_obs[done], update=False))
            terminations[step], dones[step] = torch.from_numpy(term), torch.from_numpy(done)
        with torch.no_grad():
            values = policy.get_value(obs)
        return obs, actions, logprobs, values, rewards, next_obs_buf, terminations, dones

    def update(batch):
        obs, actions, logprobs, values, rewards, next_obs_buf, terminations, dones = batch
        with torch.no_grad():
            next_values = agent.get_value(next_obs_buf)
        advantages, returns = compute_gae(rewards, values, next_values, terminations, dones, 0.99, 0.95)
        b_obs, b_actions = obs.reshape(-1, obs_dim), actions.reshape(-1, act_dim)
        b_logprobs, b_advantages, b_returns, b_values = (x.reshape(-1) for x in (logprobs, advantages, returns, values))
        ppo_epochs(agent, optimizer, b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)

    start = time.perf_counter()
    if mode == "serial":
        for _ in range(iterations):
            update(rollout(agent))
    else:
        pending = None
        for _ in range(iterations):
            batch = rollout(behaviour)
            if pending is not None:
                pending.result()
                behaviour.load_state_dict(agent.state_dict())
            pending = update_pool.submit(update, batch)
        pending.result()
    rate = iterations * NUM_STEPS * NUM_ENVS / (time.perf_counter() - start)
    env_pool.shutdown()
    update_pool.shutdown()
    for g in env_groups:
        g.close()
    return rate


if __name__ == "__main__":
    main()
