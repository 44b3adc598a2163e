"""Fans out (script x env id x seed x extra flags) over local workers or a Slurm job array, then writes the report.

    python benchmark/runner.py --experiment E1                     # what benchmark/run.sh runs (seeds 1-10)
    python benchmark/runner.py --experiment E5                     # each experiment has its tasks and seeds
    python benchmark/runner.py --experiment E3 --seeds 1 2 3 --total-timesteps 300000 --workers 2
    python benchmark/runner.py --experiment E1 --dry-run           # print the commands only
    python benchmark/runner.py --experiment E1 --slurm --slurm-max-running 20   # submit a job array instead
    python benchmark/runner.py --experiment mine --variants ppo_wm "mine=my_wm.py --z-dim 16" --seeds 11 12 13

A variant is a name below (VARIANTS) or NAME=SCRIPT [FLAGS...]: a researcher's own script (a copy of one of ours) with
its flags; a name that is not a built-in experiment makes a new one from the variants given, the first the baseline.

Runs live in one pool, <runs-root>/<variant>/<env>__<variant>__<seed>__<time>/ (the scripts' own run names, with
--exp-name set to the variant), so experiments share runs of the same configuration: E2's z_dim 32 and E3's alpha 0.01
are E1's ppo_wm and ppo_wm_aux runs. Finished runs are skipped; a run with a checkpoint that has not reached its steps is
continued with --resume. A finished or started run is only reused if its config.json matches what the script would now
run (its Args with the flags; the keys that do not change training are not compared), so a changed default never mixes
old runs into a new result: the runner stops and says which key differs. A failed run never disappears: the others
finish, then each failed command is printed with its log path and the runner exits 1. Ctrl-C or a kill of the runner
passes the signal on: the runs checkpoint at the end of their iteration and exit (a second signal stops them at once),
none is left running, and the same command resumes them.
"""

import argparse
import csv
import dataclasses
import glob
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ["Walker2d-v4", "Hopper-v4", "HalfCheetah-v4"]

# variant -> (script, flags); the defaults are z_dim 32 and, for E1, alpha 0.01
VARIANTS = {
    "ppo": ("ppo_continuous", []),
    "ppo_wm": ("ppo_wm", []),
    "ppo_wm_aux": ("ppo_wm_aux", ["--alpha", "0.01"]),
    "ppo_wm_z16": ("ppo_wm", ["--z-dim", "16"]),
    "ppo_wm_z64": ("ppo_wm", ["--z-dim", "64"]),
    "ppo_wm_aux_alpha0": ("ppo_wm_aux", ["--alpha", "0"]),
    "ppo_wm_aux_alpha0.05": ("ppo_wm_aux", ["--alpha", "0.05"]),
    # MR.Q's world-model objective (docs/world-model.md): 5-step latent rollouts, reward and termination prediction
    "ppo_wm_mrq": ("ppo_wm", ["--wm-horizon", "5", "--wm-reward-weight", "0.1"]),
    "ppo_wm_mrq_ema": ("ppo_wm", ["--wm-horizon", "5", "--wm-reward-weight", "0.1", "--wm-target-tau", "0.01"]),
    "ppo_wm_aux_mrq_ema": (
        "ppo_wm_aux",
        ["--alpha", "0.01", "--wm-horizon", "5", "--wm-reward-weight", "0.1", "--wm-target-tau", "0.01"],
    ),
    # E6: each of ppo_wm_mrq_ema's three options alone
    "ppo_wm_horizon5": ("ppo_wm", ["--wm-horizon", "5"]),
    "ppo_wm_reward0.1": ("ppo_wm", ["--wm-reward-weight", "0.1"]),
    "ppo_wm_target0.01": ("ppo_wm", ["--wm-target-tau", "0.01"]),
}
SEEDS = list(range(1, 11))  # at 5 seeds E1's intervals could neither confirm nor rule out a 10-15% gain
# experiment -> (variants, default tasks, default seeds); the first variant is the baseline of the report
EXPERIMENTS = {
    "E1": (["ppo", "ppo_wm", "ppo_wm_aux"], TASKS, SEEDS),
    "E2": (["ppo_wm", "ppo_wm_z16", "ppo_wm_z64"], ["HalfCheetah-v4"], SEEDS[:5]),  # ppo_wm is z_dim 32
    # alpha 0: ppo_wm's runs, which ppo_wm_aux --alpha 0 reproduces bit for bit (tests/test_training.py); ppo_wm_aux is 0.01
    "E3": (["ppo_wm", "ppo_wm_aux", "ppo_wm_aux_alpha0.05"], ["Walker2d-v4"], SEEDS[:5]),
    # E5's screen, on seeds 11-15 only: which world-model objective E5 measures on seeds 1-10. Rule, fixed before the
    # screen's results: the variant with the higher P(variant > ppo_wm) averaged over the tasks
    "E5-screen": (["ppo_wm", "ppo_wm_mrq", "ppo_wm_mrq_ema"], TASKS, list(range(11, 16))),
    # E5: the screen's choice, ppo_wm_mrq_ema (average P 0.57 against ppo_wm_mrq's 0.44), and its curiosity twin against
    # PPO and today's ppo_wm; E5-ant the same on Ant-v4
    "E5": (["ppo", "ppo_wm", "ppo_wm_mrq_ema", "ppo_wm_aux_mrq_ema"], TASKS, SEEDS),
    "E5-ant": (["ppo", "ppo_wm", "ppo_wm_mrq_ema"], ["Ant-v4"], SEEDS),
    # E6: which of E5's options lifts Hopper, on seeds no setting was chosen on; PPO to replicate E5's P over PPO
    "E6": (
        ["ppo_wm", "ppo_wm_horizon5", "ppo_wm_reward0.1", "ppo_wm_target0.01", "ppo_wm_mrq_ema", "ppo"],
        ["Hopper-v4"],
        list(range(21, 31)),
    ),
    # E7: does E5's Hopper gain last? Fresh 3M-step runs (an annealed 1M run extended to 3M is another schedule)
    "E7": (["ppo", "ppo_wm_mrq_ema"], ["Hopper-v4"], SEEDS, 3_000_000),
}
STEPS = 1_000_000  # an experiment's steps per run unless it names its own


def experiment_defaults(name):
    """(variants or None, tasks, seeds, steps) of an experiment; a new one has no variants of its own."""
    return (*EXPERIMENTS.get(name, (None, TASKS, SEEDS)), STEPS)[:4]


def parse_variant(spec):
    """(name, script path, flags) of a command-line variant: a name in VARIANTS, or NAME=SCRIPT [FLAGS ...]."""
    if "=" not in spec.split(" ")[0]:
        if spec not in VARIANTS:
            raise ValueError(f"unknown variant {spec!r}: name one of {', '.join(VARIANTS)} or give NAME=SCRIPT [FLAGS]")
        script, flags = VARIANTS[spec]
        return spec, os.path.join(ROOT, f"{script}.py"), flags
    name, rest = spec.split("=", 1)
    script, *flags = shlex.split(rest) or [""]
    if not name.replace("_", "").replace("-", "").replace(".", "").isalnum() or name in VARIANTS:
        raise ValueError(f"variant name {name!r}: use letters, digits, _ - . and not a built-in name")
    if not (script.endswith(".py") and os.path.isfile(script)):
        raise ValueError(f"variant {name}: {script!r} is not a Python script here")
    return name, os.path.abspath(script), flags


def pool_name(variant, extra):
    """The pool directory of a variant: runs with extra flags are another configuration, never E1's finished runs.
    --num-env-threads does not change results (tested), so it does not make a new configuration."""
    tokens = []
    for i, t in enumerate(extra):
        if t.startswith("--num-env-threads") or (i > 0 and extra[i - 1] == "--num-env-threads"):
            continue
        tokens.append(t.lstrip("-").replace("/", "_"))
    return "+".join([variant, *tokens]) if tokens else variant


def plan(experiment, env_ids, seeds, total_timesteps, runs_root, python, extra, variants=None):
    """One dict per run: what to execute and where its outputs go. variants: names or NAME=SCRIPT [FLAGS] specs."""
    all_variants, default_tasks, _, _ = experiment_defaults(experiment)
    runs = []
    for seed in seeds:  # seed-major: a budget cut short still leaves every configuration with the same seeds
        for env_id in env_ids or default_tasks:
            for spec in variants or all_variants:
                name, script, flags = parse_variant(spec)
                variant = pool_name(name, extra)
                runs_dir = os.path.join(runs_root, variant)
                base = [python, script]
                fresh = base + [
                    "--env-id",
                    env_id,
                    "--seed",
                    str(seed),
                    "--total-timesteps",
                    str(total_timesteps),
                    "--exp-name",
                    variant,
                    "--runs-dir",
                    runs_dir,
                    *flags,
                    *extra,
                ]
                runs.append(
                    {
                        "name": f"{env_id}__{variant}__{seed}",
                        "script": script,
                        "runs_dir": runs_dir,
                        "env_id": env_id,
                        "variant": variant,
                        "seed": seed,
                        "fresh": fresh,
                        "base": base,
                        "total_timesteps": total_timesteps,
                        "extra": extra,
                    }
                )
    return runs


# config keys that do not change a run's training rows: where to write, how often to log, checkpoint, evaluate or render
# (evaluations do not touch the training RNG: tested), how many env threads (tested), and the steps, which --resume extends
NON_TRAINING_KEYS = {
    "exp_name",
    "runs_dir",
    "total_timesteps",
    "num_env_threads",
    "status_interval",
    "checkpoint_interval",
    "eval_interval",
    "eval_episodes",
    "capture_video",
    "video_interval",
    "save_snapshot",
    "snapshot_interval",
    "resume",
    "eval_checkpoint",
    "batch_size",
    "minibatch_size",
    "num_iterations",
}
# flags added after runs were made, with the value the scripts hard-coded before: a config.json without the key
# trained with exactly that value, so it still matches a command that runs it
ADDED_KEYS = {"wm_horizon": 1, "wm_reward_weight": 0.0, "wm_target_tau": 1.0}  # the world-model options, off
# flags removed from the scripts, with the value the scripts now hard-code: a run made with another value is another
# configuration (torch_threads and status_interval did not change training rows)
RETIRED_KEYS = {"init_action_std": 1.0, "critic_width": 64, "compile": False, "torch_deterministic": True}
_expected_configs = {}


class StaleRun(Exception):
    pass


def expected_config(run):
    """The config.json keys a fresh run of this command would write, from the script's own Args and the flags."""
    key = (os.stat(run["script"]).st_mtime_ns, *run["fresh"][1:])  # an edited script is read again
    if key not in _expected_configs:
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)  # a copied script imports wm_common
        module_name = f"_variant_{abs(hash(key[:2]))}"
        if module_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(module_name, run["script"])
            sys.modules[module_name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sys.modules[module_name])
        args = tyro.cli(sys.modules[module_name].Args, args=run["fresh"][2:])
        _expected_configs[key] = json.loads(json.dumps(dataclasses.asdict(args)))
    return _expected_configs[key]


def check_config(run, run_dir, saved):
    for k, v in RETIRED_KEYS.items():
        if saved.get(k, v) != v:
            raise StaleRun(
                f"{run_dir} was made with {k}={saved[k]!r}, a flag {os.path.basename(run['script'])} no longer has (it runs {k}={v!r}): "
                f"move {run['runs_dir']} aside"
            )
    for k, v in expected_config(run).items():
        made_with = saved.get(k, ADDED_KEYS.get(k))
        if k not in NON_TRAINING_KEYS and made_with != v:
            raise StaleRun(
                f"{run_dir} was made with {k}={made_with!r} but {os.path.basename(run['script'])} now runs {k}={v!r} (a changed default?): "
                f"move {run['runs_dir']} aside to rerun, or pass the old value with --extra"
            )


def check_pool(run, write=False):
    """A pool holds the runs of one script and its flags: variant.json records them, so that another script given
    the same variant name never reuses its runs."""
    path, made = os.path.join(run["runs_dir"], "variant.json"), {"script": os.path.relpath(run["script"], ROOT)}
    if os.path.isfile(path):
        with open(path) as f:
            if json.load(f)["script"] != made["script"]:
                raise StaleRun(
                    f"{run['runs_dir']} holds runs of another script than {made['script']}: rename the variant"
                )
    elif write:
        os.makedirs(run["runs_dir"], exist_ok=True)
        with open(path, "w") as f:
            json.dump(made, f)


def run_state(run):
    """('done' | 'resume' | 'new', run_dir or None), from what is on disk."""
    dirs = sorted(
        d
        for d in glob.glob(os.path.join(run["runs_dir"], f"{run['name']}__*"))
        if os.path.isfile(os.path.join(d, "checkpoint.pt"))
    )
    if not dirs:
        return "new", None
    run_dir = dirs[-1]
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    check_config(run, run_dir, config)
    batch = config["batch_size"]
    with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    last_step = int(rows[-1]["global_step"]) if rows else 0
    return ("done" if last_step >= (run["total_timesteps"] // batch) * batch else "resume"), run_dir


def command(run):
    state, run_dir = run_state(run)
    if state == "done":
        return None
    if state == "resume":
        return run["base"] + ["--resume", run_dir, "--total-timesteps", str(run["total_timesteps"])]
    return run["fresh"]


def run_local(runs, workers, logs_dir):
    os.makedirs(logs_dir, exist_ok=True)
    todo = [(r, command(r)) for r in runs]
    skipped = sum(cmd is None for _, cmd in todo)
    todo = [(r, cmd) for r, cmd in todo if cmd is not None]
    print(f"{len(runs)} runs: {skipped} already finished, {len(todo)} to run on {workers} workers", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    running, failed, done, start, last_report = [], [], skipped, time.time(), 0.0
    # Ctrl-C or a kill stops the runs, never orphans them: each run gets SIGTERM, checkpoints at the end of its iteration
    # and exits; rerunning the same command resumes them. Set explicitly: a runner started with & inherits SIGINT ignored.
    stop_signal, forwarded, stopped = [], 0, 0
    previous_handlers = {
        sig: signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while (todo and not stop_signal) or running:
            while todo and not stop_signal and len(running) < workers:
                run, cmd = todo.pop(0)
                log_path = os.path.join(logs_dir, f"{run['name']}.log")
                log = open(log_path, "a")
                log.write(f"$ {shlex.join(cmd)}\n")
                log.flush()
                running.append(
                    (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), cmd, log_path, log)
                )
            time.sleep(0.5)
            if (
                len(stop_signal) > forwarded
            ):  # passed on as the scripts read them: the first stops after the iteration, a second at once
                forwarded, stopped = len(stop_signal), stopped or len(running)
                for proc, *_ in running:
                    proc.send_signal(signal.SIGTERM if forwarded == 1 else signal.SIGINT)
            for item in list(running):
                proc, cmd, log_path, log = item
                if proc.poll() is not None:
                    running.remove(item)
                    log.close()
                    if proc.returncode == 0:
                        done += 1
                    elif not stop_signal:
                        failed.append((cmd, log_path, proc.returncode))
            if time.time() - last_report > 30 or not (todo or running):
                last_report = time.time()
                print(
                    f"[{time.strftime('%H:%M:%S')}] done {done}/{len(runs)}  running {len(running)}  failed {len(failed)}  "
                    f"elapsed {(time.time() - start) / 60:.1f} min",
                    flush=True,
                )
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    for cmd, log_path, rc in failed:
        print(f"FAILED (exit {rc}): {shlex.join(cmd)}\n  log: {log_path}", file=sys.stderr)
    if stop_signal:
        print(
            f"runner.py: stopped by signal {stop_signal[0]}: {stopped} runs stopped, {len(todo)} not started; the same command "
            "resumes them from their checkpoints",
            file=sys.stderr,
        )
        return 128 + stop_signal[0]
    return 1 if failed else 0


def submit_slurm(runs, slurm_dir, max_running, sbatch_args):
    """One array task per run; Slurm does the scheduling. Commands are decided (new or --resume) at submission."""
    cmds = [c for c in (command(r) for r in runs) if c is not None]
    if not cmds:
        print("all runs already finished")
        return 0
    os.makedirs(os.path.join(slurm_dir, "logs"), exist_ok=True)
    commands_file = os.path.join(slurm_dir, f"commands-{int(time.time())}.txt")
    with open(commands_file, "w") as f:
        f.writelines(shlex.join(c) + "\n" for c in cmds)
    script = os.path.join(slurm_dir, "array.sbatch")
    with open(script, "w") as f:
        f.write(f"""#!/bin/bash
#SBATCH --job-name=lightworld
#SBATCH --array=1-{len(cmds)}%{max_running}
#SBATCH --cpus-per-task=1
#SBATCH --output={slurm_dir}/logs/%A_%a.out
export OMP_NUM_THREADS=1
cmd=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {shlex.quote(commands_file)})
echo "$ $cmd"
eval "$cmd"
""")
    out = subprocess.run(["sbatch", "--parsable", *sbatch_args, script], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"runner.py: error: sbatch failed: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(
        f"submitted job array {out.stdout.strip()} with {len(cmds)} runs; logs in {slurm_dir}/logs; "
        f"rerun this command after it finishes to resume failed runs, then --report-only"
    )
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--experiment", default="E1", help=f"{', '.join(EXPERIMENTS)}, or a new name with --variants")
    parser.add_argument("--env-ids", nargs="+", help="tasks (default: the experiment's)")
    parser.add_argument(
        "--variants",
        nargs="+",
        help="variants (names or 'NAME=SCRIPT FLAGS'; the first is the baseline) instead of the experiment's",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the experiment's; 1-10 for a new one)")
    parser.add_argument("--total-timesteps", type=int, help="steps per run (default: the experiment's; 1M for most)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel runs (default: number of cores)")
    parser.add_argument(
        "--runs-root", default=os.path.join(ROOT, "runs", "benchmark"), help="the pool of runs of all experiments"
    )
    parser.add_argument("--results-dir", default=os.path.join(ROOT, "benchmark", "results"))
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--extra", default="", help="extra flags for every run, e.g. '--num-envs 8'")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--slurm", action="store_true", help="submit a Slurm job array instead of running locally")
    parser.add_argument("--slurm-max-running", type=int, default=50, help="array concurrency limit (%%N)")
    parser.add_argument(
        "--sbatch-args", default="", help="extra sbatch arguments, e.g. '--partition=cpu --time=2:00:00'"
    )
    parser.add_argument("--report-only", action="store_true", help="only write the report of existing runs")
    parser.add_argument("--no-report", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse takes the value of "--extra --no-clip-vloss" for an option of its own: bind it as "--extra=--no-clip-vloss"
    if "--extra" in argv[:-1]:
        i = argv.index("--extra")
        argv[i : i + 2] = [f"--extra={argv[i + 1]}"]
    args = parser.parse_args(argv)
    if args.experiment not in EXPERIMENTS and not args.variants:
        parser.error(f"--experiment {args.experiment} is not one of {', '.join(EXPERIMENTS)}: give its --variants")
    all_variants, default_tasks, default_seeds, default_steps = experiment_defaults(args.experiment)
    args.seeds = args.seeds or default_seeds
    args.total_timesteps = args.total_timesteps or default_steps
    variants = args.variants or all_variants
    try:
        names = [parse_variant(v)[0] for v in variants]
    except ValueError as e:
        parser.error(str(e))
    if args.workers < 1 or args.total_timesteps < 1:
        parser.error("--workers and --total-timesteps must be positive")

    extra = args.extra.split()
    if args.workers >= (os.cpu_count() or 1) and "--num-env-threads" not in extra:
        extra += ["--num-env-threads", "1"]  # one core per run when runs fill the machine (results do not change)
    runs = plan(
        args.experiment, args.env_ids, args.seeds, args.total_timesteps, args.runs_root, args.python, extra, variants
    )
    try:
        for r in runs:
            check_pool(r, write=not args.dry_run)
            run_state(r)
    except StaleRun as e:
        print(f"runner.py: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for r in runs:
            cmd = command(r)
            print(f"# {r['name']}: finished" if cmd is None else shlex.join(cmd))
        return 0
    if args.slurm:
        return submit_slurm(
            runs,
            os.path.join(args.runs_root, f"slurm-{args.experiment}"),
            args.slurm_max_running,
            shlex.split(args.sbatch_args),
        )
    rc = 0 if args.report_only else run_local(runs, args.workers, os.path.join(args.runs_root, "logs"))
    if not args.no_report:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import report

        pools = [pool_name(v, extra) for v in names]
        subset = all_variants is not None and variants != all_variants  # never overwrite the full report
        name = "+".join([args.experiment, *names]) if subset else args.experiment
        report.write_report(
            [os.path.join(args.runs_root, p) for p in pools],
            os.path.join(args.results_dir, pool_name(name, extra)),
            args.total_timesteps,
            baseline=pools[0],
            title=args.experiment,
            env_ids=args.env_ids or default_tasks,
            seeds=args.seeds,
        )
    return rc


if __name__ == "__main__":
    sys.exit(main())
