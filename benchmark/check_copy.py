"""Checks a copied script on tiny runs: its control is its original, an interrupted run is the uninterrupted one, and
evaluation from a checkpoint is the evaluation the run logged.

    python benchmark/check_copy.py my_wm.py --flags "--delta-weight 0.5" --control "--delta-weight 0"
    python benchmark/check_copy.py my_stack.py --flags "--frame-stack 4" --control "--frame-stack 1"
    python benchmark/check_copy.py my_wm.py --original ppo_wm --env-id Walker2d-v4 --keep /tmp/check

Checks, one line each (PASS or FAIL with the first difference):
- saved parts: the copy starts with --flags; what the scripts refuse at start (a trained parameter that no checkpoint
  part saves, a bad flag) is reported here.
- control (with --control): the copy run with those flags equals its original (the built-in script it differs from in
  the fewest lines, or --original) row for row in every non-timing column of the original's progress.csv.
- resume: the copy run with --flags, killed with SIGKILL after its second checkpoint and resumed, ends as its
  uninterrupted twin: progress.csv (non-timing columns) and every tensor and number of the final checkpoint.pt.
- evaluation: --eval-checkpoint of the twin's best.pt reproduces the best eval_return the run logged.

Runs are tiny (4 envs x 64 steps, 10 iterations, a checkpoint every 2 and an evaluation every 2 of 2 episodes), two
at a time. Exit codes: 0 every check passed, 1 a check failed (the runs are kept and their folder named), 2 bad input.
"""

import argparse
import contextlib
import csv
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runner import script_module  # noqa: E402
from speed import ROOT, SCRIPTS, closest_original  # noqa: E402

ITERATIONS, BATCH, CHECKPOINT_INTERVAL = 10, 4 * 64, 2
TINY = ["--num-envs", "4", "--num-steps", "64", "--num-minibatches", "2", "--update-epochs", "2"]
TINY += ["--eval-episodes", "2", "--eval-interval", "2", "--checkpoint-interval", str(CHECKPOINT_INTERVAL)]
TINY += ["--total-timesteps", str(ITERATIONS * BATCH), "--num-env-threads", "1"]
OWN_FLAGS = ("--total-timesteps", "--runs-dir", "--resume", "--eval-checkpoint", "--checkpoint-interval", "--seed")
# checkpoint entries that differ between an interrupted run and its twin by design: where and when it ran
NOT_STATE = {("counters", "wall_time"), ("counters", "trained_with"), ("args", "runs_dir"), ("args", "resume")}


def read(path):
    with open(path) as f:
        return f.read()


class Failed(Exception):
    """A check failed: its line says where."""


class Refused(Failed):
    """The copy refused to start (exit 2): what the scripts check at start, such as a parameter no checkpoint saves."""


def original_of(copy, given):
    """The built-in script a copy is checked against: --original, or the one it differs from in the fewest lines."""
    if given:
        path = given if given.endswith(".py") else os.path.join(ROOT, f"{given}.py")
        return os.path.abspath(path)
    return os.path.join(ROOT, f"{closest_original(copy, {s: os.path.join(ROOT, f'{s}.py') for s in SCRIPTS})}.py")


def untimed_columns(rows, script):
    """The columns of progress.csv rows that a rerun reproduces: all but the script's TIMING_COLUMNS."""
    return [c for c in rows[0] if c not in script_module(script).TIMING_COLUMNS] if rows else []


def twin_paths(work):
    """The logs and the runs folders of the resume check: the uninterrupted twin, and the run killed, then resumed."""
    logs = {n: os.path.join(work, f"{n}.log") for n in ("twin", "killed", "resumed")}
    return logs, os.path.join(work, "twin"), os.path.join(work, "killed")


def start(script, runs_dir, flags, log):
    cmd = [sys.executable, script, *TINY, *flags, "--runs-dir", runs_dir]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(script))


def finish(proc, what, log_path):
    """Waits for a run; a refusal at start (exit 2) or a crash is a failed check with the script's last line."""
    if (code := proc.wait()) != 0:
        lines = [line for line in read(log_path).splitlines() if line.strip()] or ["(no output)"]
        raise (Refused if code == 2 else Failed)(f"{what} exited {code}: {lines[-1].strip()} (log: {log_path})")


def run_dir_of(runs_dir):
    dirs = [os.path.join(runs_dir, d) for d in os.listdir(runs_dir)] if os.path.isdir(runs_dir) else []
    return dirs[0] if len(dirs) == 1 else None


def read_rows(run_dir):
    with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
        return list(csv.DictReader(f))


def first_row_difference(expected, got, columns, names):
    """'step S, column C: a (first) != b (second)' for the first differing cell, or None."""
    if len(expected) != len(got):
        return f"{len(expected)} rows ({names[0]}) != {len(got)} rows ({names[1]})"
    for a, b in zip(expected, got):
        for column in columns:
            if a.get(column) != b.get(column):
                step = a.get("global_step")
                return f"step {step}, column {column}: {a.get(column)!r} ({names[0]}) != {b.get(column)!r} ({names[1]})"
    return None


def first_state_difference(a, b, key=()):
    """The first entry (a key path) where two checkpoints differ, in tensors, numbers or their structure; or None."""
    if key in NOT_STATE:
        return None
    name = ".".join(map(str, key)) or "checkpoint"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{name}: keys {sorted(set(a) ^ set(b))} are in one checkpoint only"
        return next((d for k in a if (d := first_state_difference(a[k], b[k], (*key, k)))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{name}: {len(a)} entries != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_state_difference(x, y, (*key, i)))), None)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        return None if same else f"{name}: tensors differ"
    return None if type(a) is type(b) and a == b else f"{name}: {a!r} != {b!r}"


def check_control(copy, original, task, control, work):
    logs = [os.path.join(work, f"control-{n}.log") for n in ("copy", "original")]
    runs = [os.path.join(work, f"control-{n}") for n in ("copy", "original")]
    with open(logs[0], "w") as a, open(logs[1], "w") as b:
        procs = [start(copy, runs[0], task + control, a), start(original, runs[1], task, b)]
        finish(procs[1], os.path.basename(original), logs[1])
        finish(procs[0], f"the copy with --control {shlex.join(control)}", logs[0])
    expected, got = read_rows(run_dir_of(runs[1])), read_rows(run_dir_of(runs[0]))
    columns = untimed_columns(expected, original)
    names = (os.path.basename(original), "copy")
    if difference := first_row_difference(expected, got, columns, names):
        raise Failed(difference)
    return f"{len(got)} rows equal {os.path.basename(original)}'s in its {len(columns)} non-timing columns"


def start_twins(copy, flags, work):
    """The twin runs whole while the other is killed after its second checkpoint; Refused if the copy will not start."""
    logs, twin_runs, killed_runs = twin_paths(work)
    with open(logs["twin"], "w") as t, open(logs["killed"], "w") as k:
        twin, killed = start(copy, twin_runs, flags, t), start(copy, killed_runs, flags, k)
        saved = set()  # the inodes of checkpoint.pt seen: each save renames a new file into place
        while killed.poll() is None and len(saved) < 2:
            if run_dir := run_dir_of(killed_runs):
                with contextlib.suppress(FileNotFoundError):
                    saved.add(os.stat(os.path.join(run_dir, "checkpoint.pt")).st_ino)
            time.sleep(0.005)
        if killed.poll() is None:
            killed.kill()
        killed.wait()
        finish(twin, "the copy", logs["twin"])
    if killed.returncode != -signal.SIGKILL:
        finish(killed, "the copy", logs["killed"])  # a refusal or crash has its own line
        raise Failed(f"the run ended before its second checkpoint could be interrupted (log: {logs['killed']})")
    return "the copy starts with these flags: every trained parameter is in a part the checkpoint saves"


def check_resume(copy, work):
    """The killed run resumed to the end equals its twin: progress.csv and the final checkpoint."""
    logs, twin_runs, killed_runs = twin_paths(work)
    run_dir = run_dir_of(killed_runs)
    at = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["counters"]["iteration"]
    with open(logs["resumed"], "w") as r:
        resume = [sys.executable, copy, "--resume", run_dir]
        finish(subprocess.Popen(resume, stdout=r, stderr=subprocess.STDOUT), "the resumed copy", logs["resumed"])
    twin_dir = run_dir_of(twin_runs)
    expected, got = read_rows(twin_dir), read_rows(run_dir)
    columns = untimed_columns(expected, copy)
    if difference := first_row_difference(expected, got, columns, ("uninterrupted", "killed and resumed")):
        raise Failed(difference)
    states = [torch.load(os.path.join(d, "checkpoint.pt"), weights_only=True) for d in (twin_dir, run_dir)]
    if difference := first_state_difference(*states):
        raise Failed(f"final checkpoint.pt, {difference} (uninterrupted vs killed and resumed)")
    return (
        f"killed after the checkpoint of iteration {at} and resumed: {len(got)} rows and every checkpoint entry equal"
    )


def check_evaluation(copy, work):
    run_dir = run_dir_of(os.path.join(work, "twin"))
    best, rows = os.path.join(run_dir, "best.pt"), read_rows(run_dir)
    logged = max(float(r["eval_return"]) for r in rows if r.get("eval_return"))  # best.pt is the best evaluation's
    log = os.path.join(work, "evaluation.log")
    with open(log, "w") as f:
        cmd = [sys.executable, copy, "--eval-checkpoint", best, "--eval-episodes", "2"]
        finish(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), "--eval-checkpoint", log)
    found = [line for line in read(log).split() if line.startswith("eval_return_mean=")]
    if not found:
        raise Failed(f"--eval-checkpoint printed no eval_return_mean (log: {log})")
    evaluated = float(found[-1].split("=")[1])
    if not math.isclose(evaluated, logged, rel_tol=1e-9, abs_tol=1e-6):  # printed with 6 decimals
        raise Failed(f"best.pt evaluates to {evaluated:.6f}, but the run logged {logged:.6f} for it")
    return f"best.pt evaluates to {evaluated:.6f}, as the run logged"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.error = lambda message: sys.exit(print(f"check_copy.py: error: {message}", file=sys.stderr) or 2)  # one line
    parser.add_argument("copy", help="the copied script, e.g. my_wm.py")
    parser.add_argument("--flags", default="", help="the idea's flags, for the resume and evaluation checks")
    parser.add_argument("--control", help="flags that make the copy its original again, e.g. '--delta-weight 0'")
    parser.add_argument("--original", help=f"{', '.join(SCRIPTS)} or a script's path (default: the closest)")
    parser.add_argument("--env-id", default="Hopper-v4", help="the task of the tiny runs")
    parser.add_argument("--keep", help="write the runs here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)
    copy = os.path.abspath(args.copy)
    flags, control = shlex.split(args.flags), None if args.control is None else shlex.split(args.control)
    if not (copy.endswith(".py") and os.path.isfile(copy)):
        parser.error(f"{args.copy}: not a Python script here")
    for flag in (f.split("=")[0] for f in flags + (control or [])):
        if flag in OWN_FLAGS:
            parser.error(f"{flag}: check_copy sets it for its tiny runs; leave it out of --flags and --control")
    original = original_of(copy, args.original)
    if not os.path.isfile(original):
        parser.error(f"--original {args.original}: name one of {', '.join(SCRIPTS)} or a script's path")
    task = ["--env-id", args.env_id]
    work = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="check_copy-")
    if args.keep and os.path.exists(work) and os.listdir(work):
        parser.error(f"--keep {args.keep}: not empty; give a new folder")
    os.makedirs(work, exist_ok=True)
    checks = [("saved parts", lambda: start_twins(copy, task + flags, work))]
    checks += [("resume", lambda: check_resume(copy, work)), ("evaluation", lambda: check_evaluation(copy, work))]
    if control is not None:
        checks.insert(0, ("control", lambda: check_control(copy, original, task, control, work)))
    failed, skipped, started = 0, 0, time.time()
    for name, check in checks:
        if skipped:
            print(f"SKIP {name}: the copy did not start with --flags")
            continue
        try:
            print(f"PASS {name}: {check()}", flush=True)
        except Failed as e:
            failed += 1
            skipped = name == "saved parts"  # the resume and evaluation checks read its runs
            print(f"FAIL {name}: {e}", flush=True)
    kept = f"runs kept in {work}" if failed or args.keep else "runs removed"
    print(
        f"{len(checks) - failed - skipped * 2} of {len(checks)} checks passed in {time.time() - started:.0f} s; {kept}"
    )
    if not (failed or args.keep):
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
