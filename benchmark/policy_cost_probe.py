"""What a trained policy costs the rollout: acting + stepping 16 envs with a trained PPO and a trained ppo_wm agent.

    python benchmark/policy_cost_probe.py runs/benchmark/ppo/Walker2d-v4__ppo__4__<time>/checkpoint.pt \
        runs/benchmark/ppo_wm/Walker2d-v4__ppo_wm__4__<time>/checkpoint.pt --rounds 4

Three rollouts per round, in alternating order, each with its checkpoint's normalization statistics (rollout_probe.py's
batched, the scripts' rollout): the PPO agent; the PPO agent while also computing z with the ppo_wm checkpoint's encoder
at every step and discarding it (the same actions, so the same physics, plus the encoder); and the ppo_wm agent on
[obs, z] (its own actions). The first two differ by the encoder's compute only, the last two by the physics of what
the two policies do (episode lengths, contacts). Equal checksums (sum of all actions taken) mean the same actions.

The physics of the two policies is then measured without their compute and without the second thread: each agent's
actions, recorded in one rollout before the rounds, are replayed in the same 16 envs from the same reset, stepped in
one thread (the same trajectories: the checksums equal the rollouts'). Those two rows differ only by what the policies
do, and a one-thread loop of physics alone is steadier than the rollouts; under the table, the mean number of MuJoCo
contacts after each env step and the episodes ended in each replay.
"""
import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_continuous  # noqa: E402
import ppo_wm  # noqa: E402
from rollout_probe import NUM_ENVS, alternating_rounds, batched, env_groups, print_table  # noqa: E402  (the benchmark folder is on the path when run as a script)
from wm_common import Encoder  # noqa: E402


class Recording:
    """An agent that records the actions it takes (as batched receives them, before clipping)."""

    def __init__(self, agent):
        self.agent, self.actions = agent, []

    def act(self, obs):
        action, logprob = self.agent.act(obs)
        self.actions.append(action.numpy().copy())
        return action, logprob


SPLIT = [NUM_ENVS // 2, NUM_ENVS // 2]  # the scripts' split of the envs between the main and the pool thread


def physics_replay(env_id, actions, stats):
    """Steps batched's 16 envs (same groups, same reset) through recorded actions in one thread, no policy: the physics
    of what a policy did. Returns (us per vector step, checksum as batched's); fills stats with contacts and episodes
    (counted inside the timed loop, at the same small cost for every replay)."""
    groups = env_groups(env_id, SPLIT)
    low, high = groups[0].single_action_space.low, groups[0].single_action_space.high
    ppo_continuous.reset_envs(groups, seed=0)
    contacts, episodes, checksum, start = 0, 0, 0.0, time.perf_counter()
    for action in actions:
        for group, part in zip(groups, np.split(np.clip(action, low, high), len(groups))):
            _, _, term, trunc, _ = group.step(part)
            episodes += int((term | trunc).sum())
            contacts += sum(env.unwrapped.data.ncon for env in group.envs)
        checksum += float(torch.from_numpy(action).sum())
    elapsed = time.perf_counter() - start
    for group in groups:
        group.close()
    stats.update(contacts=contacts / (len(actions) * NUM_ENVS), episodes=episodes)
    return 1e6 * elapsed / len(actions), checksum


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ppo_checkpoint", help="a checkpoint.pt or best.pt of ppo_continuous.py")
    parser.add_argument("wm_checkpoint", help="a checkpoint.pt or best.pt of ppo_wm.py on the same task")
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per rollout")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    try:
        ppo_ckpt = ppo_continuous.load_checkpoint(args.ppo_checkpoint)
        wm_ckpt = ppo_wm.load_checkpoint(args.wm_checkpoint, env_id=ppo_ckpt["args"]["env_id"])
    except (ppo_continuous.UsageError, ppo_wm.UsageError) as e:
        sys.exit(f"policy_cost_probe.py: error: {e}")
    env_id = ppo_ckpt["args"]["env_id"]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    obs_dim, act_dim = ppo_ckpt["normalizer"]["obs_rms"]["mean"].shape[0], ppo_ckpt["agent"]["actor_logstd"].shape[-1]
    ppo_agent = ppo_continuous.Agent(obs_dim, act_dim)
    ppo_agent.load_state_dict(ppo_ckpt["agent"])
    wm_agent, encoder = ppo_wm.Agent(obs_dim + wm_ckpt["args"]["z_dim"], act_dim), Encoder(obs_dim, wm_ckpt["args"]["z_dim"])
    wm_agent.load_state_dict(wm_ckpt["agent"])
    encoder.load_state_dict(wm_ckpt["encoder"])

    class PPOPlusEncoder:
        def act(self, obs):
            ppo_wm.policy_input(obs, encoder)
            return ppo_agent.act(obs)

    class WorldModelAgent:
        def act(self, obs):
            return wm_agent.act(ppo_wm.policy_input(obs, encoder))

    pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))

    def rollout(agent, normalizer_state):
        return lambda: batched(env_id, args.steps, SPLIT, pool, agent, normalizer_state)

    recorded = {"ppo agent": Recording(ppo_agent), "ppo_wm agent": Recording(WorldModelAgent())}
    rollout(recorded["ppo agent"], ppo_ckpt["normalizer"])()
    rollout(recorded["ppo_wm agent"], wm_ckpt["normalizer"])()
    replay_stats = {name: {} for name in recorded}

    def replay(name):
        return lambda: physics_replay(env_id, recorded[name].actions, replay_stats[name])

    variants = {
        "ppo agent": rollout(ppo_agent, ppo_ckpt["normalizer"]),
        "ppo agent + the encoder at every step (same actions)": rollout(PPOPlusEncoder(), ppo_ckpt["normalizer"]),
        "ppo_wm agent (its own actions)": rollout(WorldModelAgent(), wm_ckpt["normalizer"]),
        "physics only, one thread: the ppo agent's actions replayed": replay("ppo agent"),
        "physics only, one thread: the ppo_wm agent's actions replayed": replay("ppo_wm agent"),
    }
    times, checksums = alternating_rounds(variants, args.rounds)
    print(f"{env_id}, 16 envs, {args.steps:,} vector steps per rollout, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}\n"
          f"ppo: {args.ppo_checkpoint}\nppo_wm: {args.wm_checkpoint}\n")
    print_table(times, checksums, "rollout")
    print("\n" + "; ".join(f"{name}: {stats['contacts']:.2f} contacts per env step, {stats['episodes']} episodes ended"
                            for name, stats in replay_stats.items()))


if __name__ == "__main__":
    main()
