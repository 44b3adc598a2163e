"""What a trained policy costs the rollout: acting + stepping 16 envs with a trained PPO and a trained ppo_wm agent.

    python benchmark/policy_cost_probe.py runs/benchmark/ppo/Walker2d-v4__ppo__4__<time>/checkpoint.pt \
        runs/benchmark/ppo_wm/Walker2d-v4__ppo_wm__4__<time>/checkpoint.pt --rounds 4

Three rollouts per round, in alternating order, each with its checkpoint's normalization statistics (rollout_probe.py's
batched, the scripts' rollout): the PPO agent; the PPO agent while also computing z with the ppo_wm checkpoint's encoder
at every step and discarding it (the same actions, so the same physics, plus the encoder); and the ppo_wm agent on
[obs, z] (its own actions). The first two differ by the encoder's compute only, the last two by the physics of what
the two policies do (episode lengths, contacts). Equal checksums (sum of all actions taken) mean the same actions.
"""
import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_continuous  # noqa: E402
import ppo_wm  # noqa: E402
from rollout_probe import alternating_rounds, batched, print_table  # noqa: E402  (the benchmark folder is on the path when run as a script)
from wm_common import Encoder  # noqa: E402


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
        return lambda: batched(env_id, args.steps, [8, 8], pool, agent, normalizer_state)

    variants = {
        "ppo agent": rollout(ppo_agent, ppo_ckpt["normalizer"]),
        "ppo agent + the encoder at every step (same actions)": rollout(PPOPlusEncoder(), ppo_ckpt["normalizer"]),
        "ppo_wm agent (its own actions)": rollout(WorldModelAgent(), wm_ckpt["normalizer"]),
    }
    times, checksums = alternating_rounds(variants, args.rounds)
    print(f"{env_id}, 16 envs, {args.steps:,} vector steps per rollout, {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}\n"
          f"ppo: {args.ppo_checkpoint}\nppo_wm: {args.wm_checkpoint}\n")
    print_table(times, checksums, "rollout")


if __name__ == "__main__":
    main()
