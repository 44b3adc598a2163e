"""Throughput and memory of the three scripts against the raw physics rate, measured side by side in one session.

    python benchmark/speed.py                       # Walker2d-v4, 200k steps per script (a quick proxy), default flags
    python benchmark/speed.py --steps 1000000 --repeats 2 --out benchmark/results/speed-1M.md   # the default budget
    python benchmark/speed.py --steps 100000 --env-id Hopper-v4 --repeats 3 --out benchmark/results/speed.md

Raw rate: a SyncVectorEnv of the task (16 envs, random actions, no wrappers, one process), measured before the first
repeat and after every repeat; each script run is compared with the mean of the two raw measurements around its
repeat, because on a shared machine the raw rate moves by 10% or more within minutes. Each script runs as its own
process with default flags; its rate is the training steps of the run over the process's whole wall time (imports, env creation and evaluations included),
and its peak memory is the largest sum, sampled every 0.5 s, of the proportional set size (PSS) of the process and its
children (the world-model scripts train the world model in a forked child process; PSS counts the pages they share
once), next to the maximum resident set size (RSS) of the largest single process. The training-loop rate (the run's own `sps`, from
progress.csv: steps over the time since the loop started) is shown too; the difference is start-up (imports, env
creation), which a 1M-step run pays once; the run's rollout_time and update_time columns, summed, split the loop into
acting plus env stepping and everything else (GAE, the updates, the world model). With --repeats R the scripts run R times in
alternating order (A B C, C B A, ...), so slow drift of the machine affects each script alike; the table gives the
median rate of each script and the ranges of its per-repeat ratios to the raw rate and to ppo_continuous. Repeat r
(from 1) runs every script with --seed r (--first-seed shifts them), so over repeats the ratios average over several
trained policies, not one. On a shared machine other tenants' work only ever adds time, unevenly over a run, and a run
uses both cores, so it is slowed by interference on either: next to the whole-process ratio, the table gives the ratio of
the runs' undisturbed iteration time, the 10th percentile over iterations of rollout_time + update_time (evaluations,
checkpoints and start-up excluded), which is what the code costs per iteration when nothing else runs; under the table,
the same percentile of rollout_time and of update_time alone, per repeat, shows which half of an iteration differs.
"""
import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["ppo_continuous", "ppo_wm", "ppo_wm_aux"]

RAW = """
import sys, time, warnings
warnings.filterwarnings("ignore")
import gymnasium as gym
env_id, num_envs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)])
envs.reset(seed=0)
envs.action_space.seed(0)
for _ in range(100):
    envs.step(envs.action_space.sample())
steps, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    envs.step(envs.action_space.sample())
    steps += num_envs
print(steps / (time.perf_counter() - start))
"""


def tree_pss_mb(pid):
    """Proportional set size of a process and all its descendants, in MB (Linux; None elsewhere). PSS splits each shared
    page between the processes that map it, so a forked child's shared pages are not counted twice, as RSS would."""
    if not os.path.exists("/proc/self/smaps_rollup"):
        return None
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(stat.split("/")[2]))
        except (OSError, ValueError):
            pass  # exited meanwhile
    tree, total = [pid], 0
    for p in tree:  # grows while it is walked: breadth-first over the descendants
        tree += children.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass  # exited meanwhile
    return total / 1024


def run(cmd, sample_seconds=0.5):
    """Runs a command; returns (stdout, wall seconds, peak RSS of its largest single process in MB
    (wait4 reports the largest over the process and the children it waited for; Linux keeps it
    across exec, so it also covers the forking caller's size, small for this script), peak PSS of its process tree in MB,
    sampled every sample_seconds by a second thread, so the wall time is not rounded to the sampling). Output goes to
    temporary files, so a full pipe never blocks the run."""
    samples, done = [], threading.Event()
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, cwd=ROOT)

        def sample():
            while not done.wait(sample_seconds):
                samples.append(tree_pss_mb(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"speed.py: error: {' '.join(cmd)} failed:\n{err[-2000:]}")
    measured = [pss for pss in samples if pss is not None]
    return out, wall, usage.ru_maxrss / 1024, max(measured) if measured else None


def undisturbed_iteration_ms(rows, columns=("rollout_time", "update_time")):
    """10th percentile over a run's iterations of the sum of these progress.csv columns, in ms (at least 2 rows)."""
    return 1000 * statistics.quantiles([sum(float(r[c]) for c in columns) for r in rows], n=10)[0]


def median_and_range(values):
    return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def raw_rate(env_id, num_envs, seconds):
    out, *_ = run([sys.executable, "-c", RAW, env_id, str(num_envs), str(seconds)])
    return float(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="Walker2d-v4")
    parser.add_argument("--steps", type=int, default=200_000, help="training steps per script")
    parser.add_argument("--raw-seconds", type=float, default=15.0, help="seconds of each raw-physics measurement")
    parser.add_argument("--raw-num-envs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each script, in alternating order")
    parser.add_argument("--first-seed", type=int, default=1, help="repeat r runs --seed first_seed + r (r from 0)")
    parser.add_argument("--scripts", nargs="+", default=SCRIPTS, choices=SCRIPTS)
    parser.add_argument("--extra", default="", help="extra flags for every script, e.g. '--num-env-threads 1'")
    parser.add_argument("--out", help="also write the table as Markdown to this file")
    args = parser.parse_args()

    if args.steps < 1 or args.repeats < 1 or args.raw_seconds <= 0:
        parser.error("--steps and --repeats must be at least 1 and --raw-seconds positive")
    raws = [raw_rate(args.env_id, args.raw_num_envs, args.raw_seconds)]  # before the first repeat, then after each
    runs = {name: [] for name in args.scripts}  # name -> one dict of measurements per repeat
    with tempfile.TemporaryDirectory() as runs_dir:
        for repeat in range(args.repeats):
            for name in args.scripts if repeat % 2 == 0 else reversed(args.scripts):
                cmd = [sys.executable, f"{name}.py", "--env-id", args.env_id, "--total-timesteps", str(args.steps), "--runs-dir", runs_dir,
                       "--status-interval", "1e9", "--seed", str(args.first_seed + repeat), *args.extra.split()]
                before = set(glob.glob(os.path.join(runs_dir, "*")))
                _, wall, rss, pss = run(cmd)
                (run_dir,) = set(glob.glob(os.path.join(runs_dir, "*"))) - before
                with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
                    rows = list(csv.DictReader(f))
                runs[name].append({"sps": args.steps / wall, "rss": rss, "pss": pss, "wall": wall, "loop_sps": float(rows[-1]["sps"]),
                                   "rollout": sum(float(r["rollout_time"]) for r in rows), "update": sum(float(r["update_time"]) for r in rows),
                                   "iteration_ms": undisturbed_iteration_ms(rows), "rollout_ms": undisturbed_iteration_ms(rows, ["rollout_time"]),
                                   "update_ms": undisturbed_iteration_ms(rows, ["update_time"])})
            raws.append(raw_rate(args.env_id, args.raw_num_envs, args.raw_seconds))
            raw_around = (raws[-2] + raws[-1]) / 2
            for name in args.scripts:
                measured = runs[name][-1]
                measured["x_raw"], measured["loop_x_raw"] = measured["sps"] / raw_around, measured["loop_sps"] / raw_around

    base = runs.get("ppo_continuous")
    lines = [
        f"speed of {args.env_id}, {args.steps:,} training steps per script, {args.repeats} repeat(s) in alternating order (seeds {args.first_seed}-{args.first_seed + args.repeats - 1}), "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores" + (f", extra flags `{args.extra}`" if args.extra else ""),
        "",
        f"raw physics (SyncVectorEnv x{args.raw_num_envs}, random actions, one process), before the first repeat and after each: "
        + ", ".join(f"{r:,.0f}" for r in raws) + " steps/s",
        "",
        "| script | steps/s (whole process, median) | x raw physics around it (median; range over repeats) | x ppo_continuous (median; range over repeats) "
        "| peak memory MB, all its processes (PSS; max) | peak RSS MB, largest single process (max) | wall s (median) | training-loop steps/s (median) | loop x raw physics (median) | rollout s / update s (median) "
        "| undisturbed iteration ms (10th percentile; median) | x ppo_continuous by undisturbed iteration (median; range) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_repeat = []
    for name, results in runs.items():
        median = {k: statistics.median(r[k] for r in results) for k in results[0] if k != "pss"}
        pss = "n/a" if None in [r["pss"] for r in results] else f"{max(r['pss'] for r in results):.0f}"
        rel = rel_iteration = "n/a"
        if base:
            ratios = [r["sps"] / b["sps"] for r, b in zip(results, base)]
            # the ratio of the median rates (as in the earlier tables), with the range of the per-repeat ratios
            rel = f"{median['sps'] / statistics.median(b['sps'] for b in base):.2f}" + (f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else "")
            iteration_ratios = [b["iteration_ms"] / r["iteration_ms"] for r, b in zip(results, base)]
            rel_iteration = median_and_range(iteration_ratios)
            if name != "ppo_continuous":
                per_repeat.append(f"{name}: x ppo_continuous per repeat, whole process " + ", ".join(f"{x:.2f}" for x in ratios)
                                  + "; by undisturbed iteration " + ", ".join(f"{x:.2f}" for x in iteration_ratios))
        per_repeat.append(f"{name}: undisturbed rollout / update ms per repeat " + ", ".join(f"{r['rollout_ms']:.0f} / {r['update_ms']:.0f}" for r in results))
        lines.append(f"| {name} | {median['sps']:,.0f} | {median_and_range([r['x_raw'] for r in results])} | {rel} | {pss} | {max(r['rss'] for r in results):.0f} | {median['wall']:.1f} "
                     f"| {median['loop_sps']:,.0f} | {median['loop_x_raw']:.2f} | {median['rollout']:.1f} / {median['update']:.1f} "
                     f"| {median['iteration_ms']:.0f} | {rel_iteration} |")
    report = "\n".join(lines + [""] + per_repeat)
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
