"""Throughput and memory of the three scripts against the raw physics rate, measured side by side in one session.

    python benchmark/speed.py                       # Walker2d-v4, 200k steps per script (a quick proxy), default flags
    python benchmark/speed.py --steps 1000000 --repeats 3 --out benchmark/results/speed/1M.md  # the default budget
    python benchmark/speed.py --steps 100000 --env-id Hopper-v4 --repeats 3 --out /tmp/speed-hopper.md
    python benchmark/speed.py --steps 1000000 --repeats 2 --variant-extra="--update-epochs 15"  # scripts with a flag
    python benchmark/speed.py --reference ../old-checkout       # each script also as it is in another checkout
    python benchmark/speed.py --pairs                           # the runner's mode: two runs side by side, one per core
    python benchmark/speed.py --scripts ppo_wm mine=my_wm.py    # a copy beside its original: mine's rate x ppo_wm's

Side by side, in turns: in each repeat every script and a raw-physics process (a SyncVectorEnv of the task, 16 envs,
random actions, no wrappers) are started together, stopped (SIGSTOP to the process group, children included) and resumed
one at a time, round robin, for --slice seconds each (the raw process for --raw-slice), so only one of them runs at any
moment and each has the CPUs to itself (but for other tenants). A script's time is the sum of its turns from start to
exit (imports, env creation, evaluations and checkpoints included): its rate is its training steps over that time. The
raw rate is the raw process's env steps over its turns, counted from its first turn that starts after env creation. On a
shared machine other tenants slow a run unevenly over minutes (1M-step runs made one after the other disagree:
docs/speed.md); in turns of a few seconds every process meets the same machine, so the ratios to the raw rate and to
ppo_continuous hold still while the absolute rates move. `--scripts ppo_continuous ppo_continuous` (a script against
itself) shows the noise that is left. The ratio to the raw rate is the less robust one: the raw process uses one core
and the scripts two, so work of other tenants on one core slows the scripts more than it slows the raw process.

With --pairs, each command is two runs of the script side by side (seeds r and r + repeats), --num-env-threads 1 each,
as benchmark/runner.py runs a multi-seed experiment on a 2-core machine: the pair takes turns like a single script, its
rate is both runs' steps over its turns, and the raw rate is still one process on one core. With --reference DIR,
every script runs again from the checkout DIR (for example a `git worktree` of an older commit), labelled
"script @reference", and the per-repeat lines give each script's ratio to its reference twin; with --variant-extra,
each variant's ratio to its own script (the flags' cost).

Memory: the peak, read after each of a script's turns (while it is stopped, so reading it slows no one), of its
resident set (RSS) plus the private pages of its child processes (with --pairs, of the two runs under one shell; a
forked child shares the rest of its pages with its parent). Unlike PSS this does not fall when other processes
map the same libraries, as the scripts running together do.

With --repeats R the round-robin order alternates (A B C, C B A, ...), and repeat r (from 1) runs every script with
--seed r (--first-seed shifts them), so over repeats the ratios average over several trained policies. Under the table,
the 10th percentile over iterations of rollout_time and update_time (progress.csv) splits an iteration into acting plus
env stepping and the rest; an iteration that spans a turn also counts the time the script was stopped, which the
percentile leaves out.
"""

import argparse
import csv
import difflib
import glob
import mmap
import os
import shlex
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["ppo_continuous", "ppo_wm", "ppo_wm_aux"]

# steps the envs until killed, counting env steps in an 8-byte file that speed.py reads while the process is stopped
RAW = """
import mmap, sys, warnings
warnings.filterwarnings("ignore")
import gymnasium as gym
env_id, num_envs, counter_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)])
envs.reset(seed=0)
envs.action_space.seed(0)
with open(counter_path, "r+b") as f:
    counter = memoryview(mmap.mmap(f.fileno(), 8)).cast("q")
while True:
    envs.step(envs.action_space.sample())
    counter[0] += num_envs
"""

# started in front of every command: stops itself, then becomes the command when first resumed, so none of it runs
# outside its turns
STOPPED_START = "import os, signal, sys; os.kill(os.getpid(), signal.SIGSTOP); os.execvp(sys.argv[1], sys.argv[1:])"


def process_tree(pid):
    """pid and its descendants, parents first (Linux /proc)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(stat.split("/")[2]))
        except (OSError, ValueError):
            pass  # exited meanwhile
    tree = [pid]
    for p in tree:  # grows while it is walked: breadth-first over the descendants
        tree += children.get(p, [])
    return tree


def tree_memory_mb(pid):
    """RSS of a process plus the private pages of its descendants, in MB (Linux; None elsewhere). A forked child's other
    pages are shared with its parent, so counting them again (summed RSS) would double them; PSS would split each page
    with every process that maps it anywhere, so it would fall when other programs load the same libraries."""
    if not os.path.exists("/proc/self/smaps_rollup"):
        return None
    total = 0
    for p in process_tree(pid):
        fields = ("Rss:",) if p == pid else ("Private_Clean:", "Private_Dirty:")
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith(fields))
        except OSError:
            pass  # exited meanwhile
    return total / 1024


def take_turns(commands, slices, counter_index=None, counter_path=None):
    """Runs the commands together but one at a time: each is resumed for its slice (seconds), then stopped, round robin,
    until every command but the counter's has exited. Returns, per command, a dict with the seconds it ran ("active"),
    its pid, exit code (None if it was killed, once another failed or all others were done), stdout and stderr, the
    maximum RSS of its largest process (MB, from wait4) and its peak tree memory (MB, tree_memory_mb, read after each of
    its turns, while it is stopped: reading a process's memory map costs up to 20 ms, which then slows no one). The
    command at counter_index runs until the others are done, then is killed; for it, "rate" is the count in
    counter_path (an int64 it increments) per second of its turns that began with the count above 0."""
    files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STOPPED_START, *cmd],
            stdout=out,
            stderr=err,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        for cmd, (out, err) in zip(commands, files)
    ]
    results = [{"active": 0.0, "memory": None, "code": None, "pid": proc.pid} for proc in procs]
    counted_steps = counted_seconds = 0

    def count():
        with open(counter_path, "rb") as f:
            return struct.unpack("q", mmap.mmap(f.fileno(), 8, access=mmap.ACCESS_READ)[:8])[0]

    try:
        for proc in procs:
            os.waitpid(proc.pid, os.WUNTRACED)  # until it has stopped itself
        while any(r["code"] is None for i, r in enumerate(results) if i != counter_index):
            for i, (proc, result) in enumerate(zip(procs, results)):
                if result["code"] is not None:
                    continue
                before = count() if i == counter_index else None
                start = time.perf_counter()
                os.killpg(proc.pid, signal.SIGCONT)
                while (left := start + slices[i] - time.perf_counter()) > 0:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        result["code"], result["rss"] = os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
                        proc.returncode = result["code"]
                        break
                    time.sleep(min(left, 0.02))  # sees an exit within 20 ms: once per run
                else:
                    os.killpg(proc.pid, signal.SIGSTOP)
                turn = time.perf_counter() - start
                result["active"] += turn
                if before:  # a turn of pure stepping (a count of 0 means the envs were still being made)
                    counted_steps += count() - before
                    counted_seconds += turn
                if result["code"] is None and (mb := tree_memory_mb(proc.pid)) is not None:
                    result["memory"] = max(result["memory"] or 0, mb)
                if result["code"] not in (None, 0):
                    break
            if any(r["code"] not in (None, 0) for r in results):
                break
    finally:
        for proc, result in zip(procs, results):
            if result["code"] is None:
                os.killpg(proc.pid, signal.SIGKILL)  # also when stopped; also the children
                proc.wait()
    for (out, err), result in zip(files, results):
        out.seek(0)
        err.seek(0)
        result["out"], result["err"] = out.read(), err.read()
        out.close()
        err.close()
    if counter_index is not None:
        results[counter_index]["rate"] = counted_steps / counted_seconds if counted_seconds else None
    return results


MIN_ITERATIONS = 10  # a 10th percentile of iteration times needs at least 10 of them


def closest_original(copy, originals):
    """The one of originals ({name: path}) that the script at copy differs from in the fewest lines: its original."""
    with open(copy) as f:
        lines = f.readlines()

    def differs(path):
        with open(path) as f:
            return sum(1 for _ in difflib.unified_diff(lines, f.readlines()))

    return min(originals, key=lambda name: differs(originals[name]))


def undisturbed_iteration_ms(rows, columns=("rollout_time", "update_time")):
    """10th percentile over a run's iterations of the sum of these progress.csv columns, in ms (inclusive: it lies
    between two measured times, never outside them)."""
    times = [sum(float(r[c]) for c in columns) for r in rows]
    return 1000 * statistics.quantiles(times, n=10, method="inclusive")[0]


def batch_of(flags):
    """Steps per iteration that these flags give a script: --num-envs x --num-steps (last given; default 16, 128)."""
    values = {"--num-envs": 16, "--num-steps": 128}
    for i, flag in enumerate(flags):
        name, _, value = flag.partition("=")
        if name in values and (value or i + 1 < len(flags)) and (value or flags[i + 1]).isdigit():
            values[name] = int(value or flags[i + 1])  # a malformed value is the script's to refuse
    return values["--num-envs"] * values["--num-steps"]


def median_and_range(values):
    return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="Walker2d-v4")
    parser.add_argument("--steps", type=int, default=200_000, help="training steps per script")
    parser.add_argument("--slice", type=float, default=2.0, help="seconds of each script's turn")
    parser.add_argument("--raw-slice", type=float, default=1.0, help="seconds of the raw-physics process's turn")
    parser.add_argument("--raw-num-envs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all scripts, in alternating order")
    parser.add_argument("--first-seed", type=int, default=1, help="repeat r runs --seed first_seed + r (r from 0)")
    parser.add_argument(
        "--scripts",
        nargs="+",
        default=SCRIPTS,
        help=f"{', '.join(SCRIPTS)} or NAME=SCRIPT.py (a copied script); one named twice runs twice (the noise left)",
    )
    parser.add_argument("--extra", default="", help="extra flags for every script, e.g. '--num-env-threads 1'")
    parser.add_argument(
        "--variant-extra",
        default="",
        help="also run every script with these flags added, e.g. --variant-extra=--compile "
        "(labelled 'script --compile')",
    )
    parser.add_argument(
        "--reference", help="also run every script from this checkout (e.g. a worktree of another commit)"
    )
    parser.add_argument(
        "--pairs", action="store_true", help="each command runs two copies side by side, one env thread each"
    )
    parser.add_argument("--out", help="also append the table (Markdown) to this file")
    args = parser.parse_args()

    if args.steps < 1 or args.repeats < 1 or args.slice <= 0 or args.raw_slice <= 0 or args.raw_num_envs < 1:
        parser.error("--steps, --repeats and --raw-num-envs must be at least 1, --slice and --raw-slice positive")
    batch = max(batch_of(args.extra.split()), batch_of((args.extra + " " + args.variant_extra).split()))
    if args.steps < MIN_ITERATIONS * batch:
        minimum = f"at least {MIN_ITERATIONS * batch:,} ({MIN_ITERATIONS} iterations of {batch:,} steps)"
        print(
            f"speed.py: error: --steps {args.steps:,} is too few to measure an iteration's time: {minimum}",
            file=sys.stderr,
        )
        sys.exit(2)
    script_paths = {}  # name -> path: a built-in name, or NAME=SCRIPT.py (a copied script)
    for spec in args.scripts:
        name, copied, path = spec.partition("=")
        path = os.path.abspath(path) if copied else os.path.join(ROOT, f"{name}.py")
        if not (copied or name in SCRIPTS) or not (path.endswith(".py") and os.path.isfile(path)):
            parser.error(f"--scripts {spec}: name one of {', '.join(SCRIPTS)} or give NAME=SCRIPT.py of a script here")
        script_paths[name] = path
    args.scripts = [spec.partition("=")[0] for spec in args.scripts]
    # a copied script's original: the built-in one given beside it that differs from it in the fewest lines
    built_in = {name: script_paths[name] for name in args.scripts if name in SCRIPTS}
    original = {
        name: closest_original(path, built_in)
        for name, path in script_paths.items()
        if name not in SCRIPTS and built_in
    }
    # a script named twice runs twice per repeat (e.g. ppo_continuous against itself: the noise left)
    labels = [
        name if args.scripts[:i].count(name) == 0 else f"{name} #{args.scripts[:i].count(name) + 1}"
        for i, name in enumerate(args.scripts)
    ]
    scripts, flags = list(args.scripts), [args.extra.split()] * len(args.scripts)
    # each script again with the flags: the variant's ratios to the same turns of the same machine
    if args.variant_extra:
        labels += [f"{label} {args.variant_extra}" for label in labels]
        scripts, flags = scripts * 2, flags + [args.extra.split() + args.variant_extra.split()] * len(scripts)
    paths = [script_paths[name] for name in scripts]
    if args.reference:  # each script again from the other checkout: the ratio of the same turns of the same machine
        references = [os.path.join(os.path.abspath(args.reference), os.path.basename(path)) for path in paths]
        if not all(os.path.isfile(path) for path in references):
            parser.error(
                f"--reference {args.reference} has not all of {' '.join(sorted(set(map(os.path.basename, paths))))}"
            )
        labels += [f"{label} @reference" for label in labels]
        paths += references
        scripts, flags = scripts * 2, flags * 2
    signal.signal(
        signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum)
    )  # as Ctrl-C: take_turns then kills the stopped processes
    runs = {label: [] for label in labels}  # label -> one dict of measurements per repeat
    raws = []
    with tempfile.TemporaryDirectory() as runs_dir:
        counter_path = os.path.join(runs_dir, "raw_steps")
        for repeat in range(args.repeats):
            order = list(range(len(labels))) if repeat % 2 == 0 else list(range(len(labels)))[::-1]
            commands = []
            for i in order:
                cmd = [
                    sys.executable,
                    paths[i],
                    "--env-id",
                    args.env_id,
                    "--total-timesteps",
                    str(args.steps),
                    "--runs-dir",
                    os.path.join(runs_dir, f"{repeat}-{i}"),
                    *flags[i],
                ]
                seed = args.first_seed + repeat
                if args.pairs:  # both copies in one process group, which the turns stop and resume together
                    pair = [
                        shlex.join([*cmd, "--seed", str(s), "--num-env-threads", "1"])
                        for s in (seed, seed + args.repeats)
                    ]
                    cmd = [
                        "sh",
                        "-c",
                        f"{pair[0]} > /dev/null & a=$!; {pair[1]} > /dev/null & b=$!; wait $a && wait $b",
                    ]
                commands.append(cmd if args.pairs else [*cmd, "--seed", str(seed)])
            with open(counter_path, "wb") as f:
                f.write(bytes(8))
            commands.append([sys.executable, "-c", RAW, args.env_id, str(args.raw_num_envs), counter_path])
            results = take_turns(
                commands,
                [args.slice] * len(order) + [args.raw_slice],
                counter_index=len(order),
                counter_path=counter_path,
            )
            for cmd, result in zip(commands, results):
                if result["code"] not in (None, 0):
                    what = "the raw-physics process" if cmd[1] == "-c" else " ".join(cmd)
                    sys.exit(f"speed.py: error: {what} failed (exit {result['code']}):\n{result['err'][-2000:]}")
            if results[-1]["rate"] is None:
                sys.exit(
                    "speed.py: error: the raw-physics process never had a turn after making its envs; use more --steps"
                )
            raws.append(results[-1]["rate"])
            for i, result in zip(order, results):
                progress = sorted(glob.glob(os.path.join(runs_dir, f"{repeat}-{i}", "*", "progress.csv")))[0]
                with open(progress, newline="") as f:
                    rows = list(csv.DictReader(f))
                sps = args.steps * (2 if args.pairs else 1) / result["active"]
                runs[labels[i]].append(
                    {
                        "sps": sps,
                        "x_raw": sps / raws[-1],
                        "seconds": result["active"],
                        "rss": result["rss"],
                        "memory": result["memory"],
                        "iteration_ms": undisturbed_iteration_ms(rows),
                        "rollout_ms": undisturbed_iteration_ms(rows, ["rollout_time"]),
                        "update_ms": undisturbed_iteration_ms(rows, ["update_time"]),
                    }
                )

    base = runs.get("ppo_continuous")
    lines = [
        f"speed of {args.env_id}, {args.steps:,} training steps per script, {args.repeats} repeat(s) "
        f"(seeds {args.first_seed}-{args.first_seed + args.repeats - 1}), "
        f"side by side in turns of {args.slice:g} s (raw physics {args.raw_slice:g} s), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores"
        + (f", extra flags `{args.extra}`" if args.extra else "")
        + (f", each script also with `{args.variant_extra}`" if args.variant_extra else "")
        + (f", each script also from {args.reference} (@reference)" if args.reference else "")
        + (", each command two runs side by side (--num-env-threads 1), steps/s of the pair" if args.pairs else ""),
        "",
        f"raw physics (SyncVectorEnv x{args.raw_num_envs}, random actions, one process), per repeat: "
        + ", ".join(f"{r:,.0f}" for r in raws)
        + " steps/s",
        "",
        "| script | steps/s (whole process, median) | x raw physics (median; range over repeats) "
        "| x ppo_continuous (median; range over repeats) | peak memory MB (RSS + children's private; max) "
        "| peak RSS MB, largest single process (max) | seconds of its turns (median) "
        "| iteration ms (10th percentile; median) | rollout / update ms (10th percentile; median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_repeat = []
    for name, results in runs.items():
        median = {k: statistics.median(r[k] for r in results) for k in results[0] if k != "memory"}
        memory = "n/a" if None in [r["memory"] for r in results] else f"{max(r['memory'] for r in results):.0f}"
        rel = "n/a"
        if base:  # the same repeat: the same turns of the same machine
            rel = median_and_range([r["sps"] / b["sps"] for r, b in zip(results, base)])
        # per repeat, the rate over each twin's: PPO's, the script's without the variant flags, the reference checkout's
        unvaried = name.removesuffix(f" {args.variant_extra}") if args.variant_extra else name
        for twin in dict.fromkeys(["ppo_continuous", unvaried, f"{name} @reference", original.get(name, name)]):
            if twin != name and twin in runs:
                ratios = [r["sps"] / t["sps"] for r, t in zip(results, runs[twin])]
                per_repeat.append(f"{name}: x {twin} per repeat " + ", ".join(f"{x:.3f}" for x in ratios))
        per_repeat.append(f"{name}: x raw physics per repeat " + ", ".join(f"{r['x_raw']:.3f}" for r in results))
        lines.append(
            f"| {name} | {median['sps']:,.0f} | {median_and_range([r['x_raw'] for r in results])} | {rel} | {memory} "
            f"| {max(r['rss'] for r in results):.0f} | {median['seconds']:.1f} | {median['iteration_ms']:.0f} "
            f"| {median['rollout_ms']:.0f} / {median['update_ms']:.0f} |"
        )
    report = "\n".join(lines + [""] + per_repeat)
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
