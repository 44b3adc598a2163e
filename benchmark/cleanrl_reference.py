"""CleanRL's own ppo_continuous_action.py, run here: the published baseline measured on this machine and its packages.

CleanRL's code is not part of this repository. Fetch the version measured (its gymnasium 1.x port, same-step
autoreset), then run it:

    mkdir -p runs/cleanrl && curl -sL -o runs/cleanrl/ppo_continuous_action.py https://raw.githubusercontent.com/vwxyzjn/cleanrl/016ca33aa70f188ef385082524373ccb6dd14e03/cleanrl/ppo_continuous_action.py
    python benchmark/cleanrl_reference.py --env-ids Hopper-v4 --seeds 1 2 3 4 5 --against runs/benchmark/ppo

The script gets the one change gymnasium 1.4 needs (`TransformObservation` takes the observation space; without it
CleanRL's script stops with a TypeError) and otherwise runs with its own defaults, two runs at a time with one torch
thread each (as the runner runs ours). Each run is scored as ours: the mean raw return of its last 100 training
episodes; `--against` puts our runs of the same tasks and seeds beside them (1M-step runs of a runner pool), with the
probability of improvement and its 95% bootstrap interval (`report.py`'s). A run's log is renamed from `.partial` to
`.log` only when the run succeeds; finished runs are not rerun. Ctrl-C or kill stops the runs too (CleanRL's script has
no checkpoints: the same command starts them again).
"""

import argparse
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import report

TOTAL_TIMESTEPS = 1_000_000  # CleanRL's default, which it runs at

GYMNASIUM_0_29_LINE = "gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10))"
PORTED_LINE = "gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)"


def port(source):
    """CleanRL's script with the observation clip given its space, as gymnasium 1.x requires."""
    if source.count(GYMNASIUM_0_29_LINE) != 1:
        raise SystemExit(
            "cleanrl_reference.py: the script is not the CleanRL version measured "
            f"(no single `{GYMNASIUM_0_29_LINE}`); fetch it with the command in this file's docstring"
        )
    return source.replace(GYMNASIUM_0_29_LINE, PORTED_LINE)


def score(log_text):
    """(mean raw return of the last 100 training episodes, final steps/s) from the script's printed output."""
    returns = [float(r) for r in re.findall(r"episodic_return=\[?([-0-9.eE+]+)", log_text)]
    sps = re.findall(r"^SPS: (\d+)", log_text, re.MULTILINE)
    return (float(np.mean(returns[-100:])) if returns else float("nan")), (int(sps[-1]) if sps else 0)


def finished(run):
    return bool(run["rows"]) and run["last_step"] >= (TOTAL_TIMESTEPS // run["batch_size"]) * run["batch_size"]


RUNNING, STOP_SIGNAL = set(), []


def stop(signum, frame):
    STOP_SIGNAL.append(signum)
    for proc in list(RUNNING):
        proc.terminate()


def run(script, out_dir, env_id, seed):
    log_path = os.path.join(out_dir, f"{env_id}__{seed}.log")
    if not os.path.exists(log_path):
        if STOP_SIGNAL:
            return env_id, seed, "not started"
        with open(log_path + ".partial", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, script, "--env-id", env_id, "--seed", str(seed)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=out_dir,
                env=dict(os.environ, OMP_NUM_THREADS="1"),
            )
            RUNNING.add(proc)
            if STOP_SIGNAL:  # the signal came between the check above and add()
                proc.terminate()
            rc = proc.wait()
            RUNNING.discard(proc)
        if rc != 0:
            return env_id, seed, f"exit {rc}, log {log_path}.partial"
        os.replace(log_path + ".partial", log_path)
    with open(log_path) as f:
        return env_id, seed, score(f.read())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--script", default="runs/cleanrl/ppo_continuous_action.py", help="CleanRL's script, as fetched"
    )
    parser.add_argument("--out-dir", default="runs/cleanrl", help="logs and CleanRL's own runs/ go here")
    parser.add_argument("--env-ids", nargs="+", default=["Hopper-v4"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--against", help="a pool of our runs (e.g. runs/benchmark/ppo) to compare with, same tasks and seeds"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.against and not os.path.isdir(args.against):
        parser.error(f"--against {args.against}: no such folder of runs")
    # our runs are read first, so a pool that cannot be compared fails before hours of CleanRL's runs
    ours = (
        [r for r in report.load_runs([args.against]) if r["seed"] in args.seeds and finished(r)] if args.against else []
    )
    if len({(r["env_id"], r["seed"]) for r in ours}) < len(ours):
        raise SystemExit(
            f"cleanrl_reference.py: {args.against} holds two finished runs of one task and seed; "
            "give a pool of one configuration"
        )
    if not os.path.isfile(args.script):
        raise SystemExit(
            f"cleanrl_reference.py: {args.script} not found; "
            "fetch CleanRL's script with the command in this file's docstring"
        )
    with open(args.script) as f:
        ported = port(f.read())
    os.makedirs(args.out_dir, exist_ok=True)
    ported_path = os.path.abspath(os.path.join(args.out_dir, "ppo_continuous_action_gymnasium1.py"))
    with open(ported_path, "w") as f:
        f.write(ported)
    jobs = [(e, s) for e in args.env_ids for s in args.seeds]
    # set explicitly: started with & the tool inherits SIGINT ignored; a run stopped by either is killed, none is
    # orphaned
    STOP_SIGNAL.clear()
    previous_handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(lambda job: run(ported_path, args.out_dir, *job), jobs))
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    if STOP_SIGNAL:
        print(
            f"cleanrl_reference.py: stopped by signal {STOP_SIGNAL[0]}; "
            "the same command runs the unfinished runs again",
            file=sys.stderr,
        )
        return 128 + STOP_SIGNAL[0]
    failed = [(e, s, r) for e, s, r in results if isinstance(r, str)]
    columns = ["task", "seeds", "CleanRL here: per seed", "mean ± std", "steps/s per run"]
    columns += ["ours: seeds", "per seed", "mean ± std", "P(ours > CleanRL here) [95% CI]"] if args.against else []
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for env_id in args.env_ids:
        done = [(s, r) for e, s, r in results if e == env_id and not isinstance(r, str)]
        if not done:
            continue
        cleanrl = np.array([r[0] for _, r in done])
        row = [
            env_id,
            " ".join(str(s) for s, _ in done),
            ", ".join(f"{x:.0f}" for x in cleanrl),
            report.mean_std(cleanrl),
            ", ".join(str(r[1]) for _, r in done),
        ]
        mine = sorted((r["seed"], float(r["rows"][-1]["return_last100"])) for r in ours if r["env_id"] == env_id)
        if mine:
            x = np.array([v for _, v in mine])
            lo, hi = report.bootstrap_ci([x, cleanrl], report.probability_of_improvement)
            row += [
                " ".join(str(s) for s, _ in mine),
                ", ".join(f"{v:.0f}" for v in x),
                report.mean_std(x),
                f"{report.probability_of_improvement(x, cleanrl):.2f} [{lo:.2f}, {hi:.2f}]",
            ]
        print("| " + " | ".join(row) + " |")
    for env_id, seed, why in failed:
        print(f"cleanrl_reference.py: {env_id} seed {seed} failed ({why})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
