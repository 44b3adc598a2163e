"""Where the world-model scripts spend time beyond PPO: per-iteration pieces measured side by side, one process.

    python benchmark/wm_cost_probe.py                 # Walker2d-v4 sizes, 8 repeats, medians
    python benchmark/wm_cost_probe.py --repeats 20

Uses the scripts' own Agent, Encoder, Dynamics, train_world_model, policy_input and latent_stats on random data of
the default sizes (the scripts' default batch, minibatches and epochs, for PPO and for the world model). The
PPO update is overlap_probe.py's: the scripts' losses without logging. Pieces: the PPO update on 17-wide inputs
(ppo_continuous) and on 49-wide inputs [obs, z] (ppo_wm); the world-model update alone; the PPO update with the
world-model update in a second thread (how the scripts ran it before) and in a child process (ppo_wm.py's own
world_model_process, how they run it now; spawned here, forked by the scripts on Linux: the same work); the
per-iteration extras (encoder on the batch's next observations, latent diagnostics); ppo_wm_aux's intrinsic reward,
encoding the batch again (before) and from the latents the policy used (now); sending the world model's shuffles to a
child process and back as a list of tensors (through shared-memory files) and as one NumPy array (pickled bytes, how
the scripts send them); and, per policy step, the encoder at batch 16.
"""
import argparse
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from overlap_probe import LEARNING_RATE, ppo_epochs  # noqa: E402  (the benchmark folder is on the path when run as a script)
from ppo_wm import Agent, Args, policy_input, receive, train_world_model, world_model_process  # noqa: E402
from wm_common import Dynamics, Encoder, intrinsic_reward, latent_stats  # noqa: E402

OBS_DIM, ACT_DIM = 17, 6
# the world-model scripts' defaults, so the pieces are those the scripts run
DEFAULTS = Args()
Z_DIM, BATCH, WM_EPOCHS = DEFAULTS.z_dim, DEFAULTS.num_envs * DEFAULTS.num_steps, DEFAULTS.wm_epochs
WM_MINIBATCH = BATCH // DEFAULTS.wm_num_minibatches


def echo(conn):
    """A child that answers every ("kind", payload) message at once: the pipe's own cost."""
    for _ in iter(conn.recv, None):
        conn.send(1)


def ms(fn):
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pool = ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,))
    encoder, dynamics = Encoder(OBS_DIM, Z_DIM), Dynamics(Z_DIM, ACT_DIM, OBS_DIM)
    wm_optimizer = torch.optim.Adam(list(encoder.parameters()) + list(dynamics.parameters()), lr=DEFAULTS.wm_learning_rate, fused=True)
    agents = {width: Agent(width, ACT_DIM) for width in (OBS_DIM, OBS_DIM + Z_DIM)}
    optimizers = {width: torch.optim.Adam(a.parameters(), lr=LEARNING_RATE, eps=1e-5, fused=True) for width, a in agents.items()}
    obs, next_obs, actions = torch.randn(BATCH, OBS_DIM), torch.randn(BATCH, OBS_DIM), torch.rand(BATCH, ACT_DIM) * 2 - 1
    rest = (actions, torch.randn(BATCH) - 8, torch.randn(BATCH), torch.randn(BATCH), torch.randn(BATCH))  # logprobs, adv, returns, values
    inputs = {OBS_DIM: obs, OBS_DIM + Z_DIM: policy_input(obs, encoder)}

    def world_model():
        train_world_model(encoder, dynamics, wm_optimizer, obs, actions, next_obs, [torch.randperm(BATCH) for _ in range(WM_EPOCHS)], WM_MINIBATCH)

    def ppo(width):
        return lambda: ppo_epochs(agents[width], optimizers[width], inputs[width], *rest)

    def ppo_with_world_model_in_thread():
        wm_update = pool.submit(world_model)
        ppo(OBS_DIM + Z_DIM)()
        wm_update.result()

    conn, child_conn = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=world_model_process, args=(
        child_conn, conn, encoder, dynamics, wm_optimizer, obs, actions, next_obs, torch.tensor(-1.0), torch.tensor(1.0), WM_MINIBATCH, 1,
    ))
    child.start()

    def ppo_with_world_model_in_process():
        conn.send(("train", torch.stack([torch.randperm(BATCH) for _ in range(WM_EPOCHS)]).numpy()))
        ppo(OBS_DIM + Z_DIM)()
        receive(conn)

    def extras():
        policy_input(next_obs, encoder)
        latent_stats(inputs[OBS_DIM + Z_DIM][:, OBS_DIM:])

    with torch.no_grad():
        z, z_next = encoder(obs), encoder(next_obs)

    def intrinsic_reward_encoding_again():
        with torch.no_grad():
            intrinsic_reward(dynamics, encoder(obs), actions, encoder(next_obs))

    def intrinsic_reward_from_policy_latents():
        intrinsic_reward(dynamics, z, actions, z_next)

    echo_conn, echo_child_conn = multiprocessing.Pipe()
    echo_child = multiprocessing.get_context("spawn").Process(target=echo, args=(echo_child_conn,))
    echo_child.start()

    def shuffles_round_trip(as_array):
        perms = [torch.randperm(BATCH) for _ in range(WM_EPOCHS)]
        echo_conn.send(("train", torch.stack(perms).numpy() if as_array else perms))
        echo_conn.recv()

    def encoder_per_step():
        with torch.no_grad():
            for _ in range(1000):
                policy_input(obs[:16], encoder)

    pieces = {
        "PPO update, 17-wide input (ppo_continuous)": ppo(OBS_DIM),
        "PPO update, 49-wide input [obs, z] (ppo_wm)": ppo(OBS_DIM + Z_DIM),
        "world-model update alone": world_model,
        "PPO update (49-wide) with the world-model update in a second thread (before)": ppo_with_world_model_in_thread,
        "PPO update (49-wide) with the world-model update in a child process (ppo_wm)": ppo_with_world_model_in_process,
        "encoder on the batch's next obs + latent diagnostics": extras,
        "intrinsic reward, encoding obs and next obs again (ppo_wm_aux before)": intrinsic_reward_encoding_again,
        "intrinsic reward from the latents the policy used (ppo_wm_aux)": intrinsic_reward_from_policy_latents,
        "shuffles to a child process and back, as tensors": lambda: shuffles_round_trip(False),
        "shuffles to a child process and back, as a NumPy array (the scripts)": lambda: shuffles_round_trip(True),
        "encoder at batch 16, per policy step, x 1000": encoder_per_step,
    }
    times = {name: [] for name in pieces}
    for _ in range(args.repeats):
        for name, fn in pieces.items():
            times[name].append(ms(fn))
    for c, p in ((conn, child), (echo_conn, echo_child)):
        c.send(None)
        p.join()
    print(f"medians of {args.repeats} repeats, {time.strftime('%Y-%m-%d %H:%M')}\n\n| piece | ms |\n|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.1f} |")


if __name__ == "__main__":
    main()
