"""Ways to step 16 MuJoCo envs on this machine, side by side: what the scripts use and the alternatives measured.

    python benchmark/env_stepping.py                      # Walker2d-v4, 16 envs, 2000 steps of random actions each
    python benchmark/env_stepping.py --env-id Hopper-v4 --steps 1000

All use the same fixed random actions: one SyncVectorEnv (one thread); two SyncVectorEnv halves stepped by two
threads (what the scripts do, MuJoCo releases the GIL); half the envs in the main thread and half in one worker
process; two worker processes of half the envs each, driven through pipes; gymnasium's AsyncVectorEnv (one process
per env, shared memory); and, when it is installed, envpool (C++ envs, its own port of the MuJoCo tasks and its own
MuJoCo build). All but envpool use same-step autoreset; envpool only has next-step autoreset, so its numbers include
the ignored-action reset steps. Last, the floor of one thread: MuJoCo's own step alone for each env in turn.
"""
import argparse
import multiprocessing as mp
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import mujoco
import numpy as np

SAME_STEP = gym.vector.AutoresetMode.SAME_STEP


def sync_env(env_id, n):
    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id)] * n, autoreset_mode=SAME_STEP)


def worker(conn, env_id, n):
    warnings.filterwarnings("ignore")
    envs = sync_env(env_id, n)
    while True:
        cmd, data = conn.recv()
        if cmd == "close":
            return envs.close()
        conn.send(envs.step(data) if cmd == "step" else envs.reset(seed=data))


def rate(step, reset, actions):
    reset()
    for a in actions[:50]:  # warm-up
        step(a)
    start = time.perf_counter()
    for a in actions:
        step(a)
    return actions.shape[0] * actions.shape[1] / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="Walker2d-v4")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per method")
    args = parser.parse_args()
    if args.num_envs < 2 or args.num_envs % 2 or args.steps < 1:
        parser.error("--num-envs must be even and at least 2, --steps at least 1")
    warnings.filterwarnings("ignore")
    half = args.num_envs // 2
    act_dim = gym.make(args.env_id).action_space.shape[0]
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, args.num_envs, act_dim)).astype(np.float32)
    results = {}

    envs = sync_env(args.env_id, args.num_envs)
    results["SyncVectorEnv, one thread"] = rate(envs.step, lambda: envs.reset(seed=0), actions)
    envs.close()

    groups = [sync_env(args.env_id, half), sync_env(args.env_id, half)]
    with ThreadPoolExecutor(1) as pool:
        def step_threads(a):
            other = pool.submit(groups[1].step, a[half:])
            groups[0].step(a[:half])
            other.result()
        results["two SyncVectorEnv halves, two threads (the scripts)"] = rate(
            step_threads, lambda: [g.reset(seed=i * half) for i, g in enumerate(groups)], actions)
    for g in groups:
        g.close()

    ctx = mp.get_context("fork")
    pipes = []
    for _ in range(2):
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(child, args.env_id, half), daemon=True).start()
        pipes.append(parent)

    def step_processes(a):
        for i, p in enumerate(pipes):
            p.send(("step", a[i * half:(i + 1) * half]))
        return [p.recv() for p in pipes]

    def reset_processes():
        for i, p in enumerate(pipes):
            p.send(("reset", i * half))
        return [p.recv() for p in pipes]

    results["two worker processes of half the envs, pipes"] = rate(step_processes, reset_processes, actions)

    mine = sync_env(args.env_id, half)

    def step_main_and_worker(a):
        pipes[1].send(("step", a[half:]))
        mine.step(a[:half])
        return pipes[1].recv()

    def reset_main_and_worker():
        pipes[1].send(("reset", half))
        mine.reset(seed=0)
        return pipes[1].recv()

    results["half the envs in the main thread, half in one worker process"] = rate(step_main_and_worker, reset_main_and_worker, actions)
    mine.close()
    for p in pipes:
        p.send(("close", None))

    envs = gym.vector.AsyncVectorEnv([lambda: gym.make(args.env_id)] * args.num_envs, autoreset_mode=SAME_STEP)
    results["AsyncVectorEnv, one process per env"] = rate(envs.step, lambda: envs.reset(seed=0), actions)
    envs.close()

    try:
        import envpool
    except ImportError:
        envpool = None
    if envpool is not None and args.env_id in envpool.list_all_envs():
        envs = envpool.make(args.env_id, env_type="gymnasium", num_envs=args.num_envs, batch_size=args.num_envs, num_threads=2, seed=0)
        results[f"envpool {envpool.__version__}, two threads (next-step autoreset)"] = rate(envs.step, envs.reset, actions)
        envs.close()

    # the floor: MuJoCo's own step (the task's frame skip) for each env in turn, no Python env code, no resets
    sims = [gym.make(args.env_id).unwrapped for _ in range(args.num_envs)]
    for i, sim in enumerate(sims):
        sim.reset(seed=i)

    def step_physics_only(a):
        for sim, ctrl in zip(sims, a):
            sim.data.ctrl[:] = ctrl
            mujoco.mj_step(sim.model, sim.data, nstep=sim.frame_skip)

    results["MuJoCo physics only (mj_step x frame skip), one thread"] = rate(step_physics_only, lambda: None, actions)

    base = results["SyncVectorEnv, one thread"]
    print(f"{args.env_id}, {args.num_envs} envs, {args.steps:,} vector steps of random actions, {time.strftime('%Y-%m-%d')}\n")
    print("| method | steps/s | x one SyncVectorEnv |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r:,.0f} | {r / base:.2f} |")


if __name__ == "__main__":
    main()
