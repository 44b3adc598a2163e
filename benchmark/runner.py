"""Fans out (script x env id x seed x extra flags) over local workers or a Slurm job array, then writes the report.

    python benchmark/runner.py --experiment E10                    # what benchmark/run.sh runs: the README's table
    python benchmark/runner.py --experiment E5                     # each experiment has its tasks and seeds
    python benchmark/runner.py --experiment E3 --seeds 1 2 3 --total-timesteps 300000 --workers 2
    python benchmark/runner.py --experiment E10 --report-only      # its report again, from the run data that ships
    python benchmark/runner.py --experiment E1 --dry-run           # print the commands only
    python benchmark/runner.py --experiment E1 --slurm --slurm-max-running 20   # submit a job array instead
    python benchmark/runner.py --experiment mine --variants ppo_wm "mine=my_wm.py --z-dim 16" --seeds 11 12 13

A variant is a name below (VARIANTS) or NAME=SCRIPT [FLAGS...]: a researcher's own script (a copy of one of ours) with
its flags; a name that is not a built-in experiment makes a new one from the variants given, the first the baseline.

Runs live in one pool, <runs-root>/<variant>/<env>__<variant>__<seed>__<time>/ (the scripts' own run names, with
--exp-name set to the variant), so experiments share runs of the same configuration: E2's z_dim 32 and E3's alpha 0.01
are E10's ppo_wm and ppo_wm_aux runs. Extra flags make another pool, and so does another length than 1M steps (with an
annealed learning rate the schedule depends on it). Finished runs are skipped; a run with a checkpoint that has not
reached its steps is continued with --resume. A finished or started run is only reused if its config.json matches what
the script would now run (its Args with the flags; the keys that do not change training are not compared) and was
trained for these steps, so a changed default never mixes old runs into a new result: the runner stops and says which
key differs. config.json records the code each run was trained with: runs of a built-in script made by another version
of it are reused with a line that says so; runs of a copied script are refused unless --reuse-changed-scripts.

Each run is claimed before it starts (an flock on <pool>/.<run>.lock, held by the run's process and released by the OS
when it ends), locally and in each Slurm array task alike: a second runner on the same pool skips the runs another
holds, says so, and waits for them before its report; a Slurm task decides new or --resume under its claim, so a
requeued task resumes its run. A run that diverged (diverged.json) is listed, never resumed or scored. A failed run
never disappears: the others finish, then each failed command is printed with its log path. Ctrl-C or a kill of the
runner passes the signal on: the runs checkpoint at the end of their iteration and exit (a second signal stops them at
once), none is left running, and the same command resumes them.

The report goes to benchmark/results/<experiment>/ for E1-E10 and beside the runs (<runs-root>/reports/) for a new
experiment; it never replaces a report of more runs unless --force. Exit codes: 0 done, 1 a run failed, 2 bad input or
a refusal (nothing written), 3 a run diverged, 128+N stopped by signal N.
"""

import signal
import sys

if __name__ == "__main__":  # Ctrl-C while it starts (the imports below take seconds): one line, not a traceback
    signal.signal(
        signal.SIGINT, lambda *_: sys.exit(print("runner.py: stopped by Ctrl-C while starting", file=sys.stderr) or 130)
    )

import argparse
import ctypes
import dataclasses
import fcntl
import glob
import importlib.util
import json
import os
import shlex
import re
import shutil
import subprocess
import time

import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

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
    # alpha 0: ppo_wm's runs, which ppo_wm_aux --alpha 0 reproduces bit for bit (tests/test_training.py);
    # ppo_wm_aux is 0.01
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
    # E8: does plain ppo_wm fall behind PPO late while the slow target (alone or with the other options) keeps it
    # improving, as E7's added arm suggested? Seeds fresh to that question; z_drift logged to test the mechanism
    "E8": (["ppo", "ppo_wm", "ppo_wm_target0.01", "ppo_wm_mrq_ema"], ["Hopper-v4"], list(range(21, 31)), 3_000_000),
    # E9: one verdict for Hopper at 1M over E5's and E6's seed sets (20 seeds; E5-screen's 11-15 chose, so excluded)
    "E9": (["ppo", "ppo_wm", "ppo_wm_mrq_ema"], ["Hopper-v4"], SEEDS + list(range(21, 31))),
    # E10: the README's table from runs that ship: the scripts and E5's option set on four tasks, seeds 1-10
    "E10": (["ppo", "ppo_wm", "ppo_wm_aux", "ppo_wm_mrq_ema"], [*TASKS, "Ant-v4"], SEEDS),
}
SEED_SETS = {"E9": {"E5": SEEDS, "E6": list(range(21, 31))}}  # an experiment pooled over seed sets: P per set too
STEPS = 1_000_000  # an experiment's steps per run unless it names its own
# the report gives the probability of improvement over each baseline; the first variant's by default
BASELINES = {
    "E5": ["ppo", "ppo_wm"],
    "E5-ant": ["ppo", "ppo_wm"],
    "E6": ["ppo_wm", "ppo"],
    "E8": ["ppo", "ppo_wm"],
    "E9": ["ppo", "ppo_wm"],
    "E10": ["ppo", "ppo_wm"],
}


def experiment_defaults(name):
    """(variants or None, tasks, seeds, steps) of an experiment; a new one has no variants of its own."""
    return (*EXPERIMENTS.get(name, (None, TASKS, SEEDS)), STEPS)[:4]


def report_folder(experiment, names, seeds, tasks, steps, extra):
    """The report's folder: the experiment's name, then what differs from its definition (variants, seeds, tasks,
    steps, flags that change results); the name alone for an experiment as defined."""
    variants, default_tasks, default_seeds, default_steps = experiment_defaults(experiment)
    what = []
    if variants:  # a new experiment is what its variants, flags and steps make it
        what += names if names != variants else []
        what += ["seeds", *map(str, seeds)] if seeds != default_seeds else []
        what += ["tasks", *tasks] if tasks != default_tasks else []
    return pool_name("+".join([experiment, *what]), extra, steps if steps != default_steps else STEPS)


# flags the runner sets for every run: given in --extra or a variant's flags they would train another run under this
# run's name; each with the runner's own option for it
RUNNER_FLAGS = {
    "--seed": "--seeds",
    "--env-id": "--env-ids",
    "--total-timesteps": "--total-timesteps",
    "--runs-dir": "--runs-root",
    "--exp-name": "the variant's name",
    "--resume": "nothing: the runner resumes a run itself",
    "--eval-checkpoint": "nothing: evaluate a run's best.pt with its script",
}


def runner_flag(flags, where):
    """A ValueError if these flags set what the runner sets itself."""
    for flag in (f.split("=")[0] for f in flags):
        if flag in RUNNER_FLAGS:
            raise ValueError(f"{where} sets {flag}, which the runner sets for every run: use {RUNNER_FLAGS[flag]}")


def parse_variant(spec):
    """(name, script path, flags) of a command-line variant: a name in VARIANTS, or NAME=SCRIPT [FLAGS ...]."""
    if "=" not in spec:
        if spec not in VARIANTS:
            raise ValueError(f"unknown variant {spec!r}: name one of {', '.join(VARIANTS)} or give NAME=SCRIPT [FLAGS]")
        script, flags = VARIANTS[spec]
        return spec, os.path.join(ROOT, f"{script}.py"), flags
    name, rest = spec.split("=", 1)
    script, *flags = shlex.split(rest) or [""]
    if bad := sorted({c for c in name if not (c.isalnum() or c in "_-.")}):  # it names folders and runs
        raise ValueError(f"variant name {name!r}: use letters, digits, _ - . only, not {' '.join(map(repr, bad))}")
    if not name or name in VARIANTS:
        raise ValueError(f"variant name {name!r}: give a name of your own, not empty nor a built-in one")
    runner_flag(flags, f"variant {name}")
    if not (script.endswith(".py") and os.path.isfile(script)):
        raise ValueError(f"variant {name}: {script!r} is not a Python script here")
    return name, os.path.abspath(script), flags


# flags that change no training row, so make no pool: env threads (tested) and where the metrics also go
NOT_A_CONFIGURATION = ("--num-env-threads", "--track", "--wandb-project-name", "--wandb-entity")


def pool_name(variant, extra, total_timesteps=STEPS):
    """The pool directory of a variant: runs with extra flags are another configuration, never E1's finished runs, and
    so are runs of another length than 1M (the learning-rate schedule, the evaluations and best.pt depend on it). The
    flags in NOT_A_CONFIGURATION do not change results, so they do not make a new configuration."""
    tokens = []
    for i, t in enumerate(extra):
        value_of_one = i > 0 and extra[i - 1] in NOT_A_CONFIGURATION and extra[i - 1] != "--track"
        if t.split("=")[0] in NOT_A_CONFIGURATION or value_of_one:
            continue
        tokens.append(t.lstrip("-").replace("/", "_"))
    if total_timesteps != STEPS:
        tokens += ["total-timesteps", str(total_timesteps)]
    return "+".join([variant, *tokens])


def plan(experiment, env_ids, seeds, total_timesteps, runs_root, python, extra, variants=None):
    """One dict per run: what to execute and where its outputs go. variants: names or NAME=SCRIPT [FLAGS] specs."""
    all_variants, default_tasks, _, _ = experiment_defaults(experiment)
    runs = []
    for seed in seeds:  # seed-major: a budget cut short still leaves every configuration with the same seeds
        for env_id in env_ids or default_tasks:
            for spec in variants or all_variants:
                name, script, flags = parse_variant(spec)
                variant = pool_name(name, extra, total_timesteps)
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
                        "label": name,
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


# config keys that do not change a run's training rows: where to write, how often to log, checkpoint, evaluate or
# render (evaluations do not touch the training RNG: tested), how many env threads (tested), and the steps, which
# --resume extends
NON_TRAINING_KEYS = {
    "exp_name",
    "runs_dir",
    "total_timesteps",
    "num_env_threads",
    "track",
    "wandb_project_name",
    "wandb_entity",
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
_expected_configs, _modules = {}, {}
_reused_other_code = {}  # pool -> runs of a built-in script made by another version of it (said once, then reused)
BUILT_IN_SCRIPTS = {os.path.join(ROOT, f"{script}.py") for script, _ in VARIANTS.values()}


class StaleRun(Exception):
    pass


def script_module(script):
    """The script imported as a module (again when it is edited), for its Args and its code_sha256()."""
    key = (script, os.stat(script).st_mtime_ns)
    if key not in _modules:
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)  # a copied script imports wm_common
        module_name = f"_variant_{abs(hash(key))}"
        spec = importlib.util.spec_from_file_location(module_name, script)
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
        _modules[key] = sys.modules[module_name]
    return _modules[key]


def expected_config(run):
    """The config.json keys a fresh run of this command would write, from the script's own Args and the flags."""
    key = (os.stat(run["script"]).st_mtime_ns, *run["fresh"][1:])  # an edited script is read again
    if key not in _expected_configs:
        args = tyro.cli(script_module(run["script"]).Args, args=run["fresh"][2:])
        _expected_configs[key] = json.loads(json.dumps(dataclasses.asdict(args)))
    return _expected_configs[key]


def check_config(run, run_dir, saved, reuse_changed_scripts=False):
    script = os.path.basename(run["script"])
    for k, v in RETIRED_KEYS.items():
        if saved.get(k, v) != v:
            raise StaleRun(
                f"{run_dir} was made with {k}={saved[k]!r}, a flag {script} no longer has (it runs {k}={v!r}): "
                f"move {run['runs_dir']} aside"
            )
    for k, v in expected_config(run).items():
        made_with = saved.get(k, ADDED_KEYS.get(k))
        if k not in NON_TRAINING_KEYS and made_with != v:
            raise StaleRun(
                f"{run_dir} was made with {k}={made_with!r} but {script} now runs {k}={v!r} (a changed default?): "
                f"move {run['runs_dir']} aside to rerun, or pass the old value with --extra"
            )
    # the length is part of a run: its learning-rate schedule, its evaluations and best.pt depend on it
    lengths = {saved["total_timesteps"]} | {start["total_timesteps"] for start in saved.get("trained_with", [])}
    if lengths != {wanted := run["total_timesteps"]}:
        raise StaleRun(
            f"{run_dir} was trained for {' then '.join(f'{n:,}' for n in sorted(lengths))} steps, not {wanted:,}: "
            f"a run of other steps is another run (its schedule and evaluations differ): move {run['runs_dir']} aside"
        )
    made_by = {start["code_sha256"] for start in saved.get("trained_with", [])}
    code = getattr(script_module(run["script"]), "code_sha256", None)
    if made_by and code and made_by != {code()}:
        if run["script"] not in BUILT_IN_SCRIPTS and not reuse_changed_scripts:
            raise StaleRun(
                f"{run_dir} was trained by another version of {script} (code {', '.join(sorted(made_by))}, now "
                f"{code()}): move {run['runs_dir']} aside to rerun, or pass --reuse-changed-scripts to keep it"
            )
        _reused_other_code.setdefault(run["runs_dir"], set()).add(run_dir)


def check_pool(run, write=False):
    """A pool holds the runs of one script and its flags: variant.json records them, so that another script given
    the same variant name never reuses its runs."""
    path, made = os.path.join(run["runs_dir"], "variant.json"), {"script": os.path.relpath(run["script"], ROOT)}
    if os.path.isfile(path):
        try:
            recorded = report.read_json(path, ["script"])["script"]
        except report.ReportError as e:
            raise StaleRun(str(e)) from None
        if recorded != made["script"]:
            raise StaleRun(f"{run['runs_dir']} holds runs of another script than {made['script']}: rename the variant")
    elif write:
        os.makedirs(run["runs_dir"], exist_ok=True)
        report.write_whole(path, lambda f: json.dump(made, f))


def read_config(run_dir):
    """A run's config.json, a JSON object with the keys the runner reads; else one line naming the file and the key."""
    try:
        return report.read_json(os.path.join(run_dir, "config.json"), ["exp_name", "env_id", "seed", "batch_size"])
    except report.ReportError as e:
        raise StaleRun(str(e)) from None


def run_dirs(run):
    """The run's directories in its pool: those that count (a checkpoint, a divergence record, or every step logged:
    finished, whatever was deleted after), and those that died before their first checkpoint."""
    dirs = sorted(glob.glob(os.path.join(run["runs_dir"], f"{run['name']}__*")))
    marked = lambda d: any(os.path.isfile(os.path.join(d, f)) for f in ("checkpoint.pt", "diverged.json"))  # noqa: E731
    started = [d for d in dirs if marked(d) or os.path.isfile(os.path.join(d, "config.json")) and logged_all(run, d)]
    return started, [d for d in dirs if d not in started]


def logged_all(run, run_dir):
    """Whether progress.csv holds every step of the run (complete rows only)."""
    rows, _ = report.read_progress(run_dir)
    batch = read_config(run_dir)["batch_size"]
    return bool(rows) and int(rows[-1]["global_step"]) >= (run["total_timesteps"] // batch) * batch


def run_state(run, reuse_changed_scripts=False):
    """('done' | 'diverged' | 'resume' | 'new', run_dir or None), from what is on disk."""
    started, _ = run_dirs(run)
    if len(started) > 1:
        raise StaleRun(f"two runs of {run['name']}: {started[0]} and {started[1]}; move one aside")
    if not started:
        return "new", None
    run_dir = started[0]
    check_config(run, run_dir, read_config(run_dir), reuse_changed_scripts)
    if os.path.isfile(os.path.join(run_dir, "diverged.json")):
        return "diverged", run_dir
    if logged_all(run, run_dir):
        return "done", run_dir
    rows, damage = report.read_progress(run_dir)
    if damage:  # resumable only if the rows up to the checkpoint are whole (the resume drops the damaged ones)
        import torch

        step = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)["counters"]["global_step"]
        if not rows or int(rows[-1]["global_step"]) < step:
            raise StaleRun(f"{run_dir}/{damage}, before its checkpoint (step {step:,}): move {run_dir} aside")
    return "resume", run_dir


def peek_state(run, reuse_changed_scripts=False):
    """run_state of a run no other runner holds, else ('held', None): a run in training is not read half-written."""
    if not os.path.exists(lock_path(run)):  # never claimed: no runner is writing it (and a dry run writes nothing)
        return run_state(run, reuse_changed_scripts)
    fd = claim(run)
    if fd is None:
        return "held", None
    try:
        return run_state(run, reuse_changed_scripts)
    finally:
        os.close(fd)


def command(run, state, run_dir):
    """The command that brings the run to its steps, or None when it has ended (finished or diverged)."""
    if state == "resume":
        return run["base"] + ["--resume", run_dir, "--total-timesteps", str(run["total_timesteps"])]
    return run["fresh"] if state == "new" else None


def lock_path(run):
    return os.path.join(run["runs_dir"], f".{run['name']}.lock")


def claim(run):
    """An exclusive lock on the run (flock on <pool>/.<run>.lock), so that two runners never train one run. The run's
    process inherits it and the OS releases it when that process ends, even if the runner was killed. None if another
    runner holds it."""
    os.makedirs(run["runs_dir"], exist_ok=True)
    try:
        fd = os.open(lock_path(run), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only pool: its runs can be read (a report), not trained
        fd = os.open(lock_path(run), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def set_aside_dead(run):
    """Under the run's claim: its directories that died before a first checkpoint move to <pool>/.died/, so that the
    run starts afresh in one directory and the report never meets them."""
    for run_dir in run_dirs(run)[1]:
        os.makedirs(os.path.join(run["runs_dir"], ".died"), exist_ok=True)
        os.replace(run_dir, aside := os.path.join(run["runs_dir"], ".died", os.path.basename(run_dir)))
        print(f"set aside {run_dir} as {aside}: it stopped before its first checkpoint; the run starts afresh")


def divergence(run_dir):
    try:
        d = report.read_json(os.path.join(run_dir, "diverged.json"), ["nonfinite", "global_step"])
    except report.ReportError as e:
        return f"diverged; {e}"
    return f"{d['nonfinite']} became NaN or infinite at step {d['global_step']:,}"


INDEX = os.path.join(ROOT, "benchmark", "results", "README.md")  # the results index: a report's run data and its sha256


def index_row(folder):
    """What the results index says of a report's run data: its sha256 if it ships, "" if it does not, None if the
    index has no row for the folder."""
    with open(INDEX) as f:
        row = next((line for line in f if line.startswith(f"| [{folder}/](")), None)
    if row is None:
        return None
    sha = re.search(r"sha256 `([0-9a-f]{64})`", row.rstrip().split("|")[-2])
    return sha.group(1) if sha else ""


def report_data(experiment, folder, out_dir, runs_root):
    """The run data a report is made from when none of its runs is on disk: <out_dir>/runs.csv.gz, else the copy that
    ships in benchmark/results/<folder>/, checked against the sha256 the index records; a ReportError (one line) if
    the data does not ship, is not there or is not what the index records."""
    shipped = index_row(folder)
    if shipped is None and experiment in EXPERIMENTS and index_row(experiment) == "":
        shipped, folder = "", experiment  # another form of a report whose runs are gone
    if shipped == "":
        raise report.ReportError(
            f"the runs of {folder} are gone and its run data does not ship (benchmark/results/README.md): "
            "its report cannot be made again; nothing written"
        )
    data = os.path.join(out_dir, report.DATA)
    if shipped and not os.path.isfile(data):  # another --results-dir: the data that ships
        data = os.path.join(ROOT, "benchmark", "results", folder, report.DATA)
    if not os.path.isfile(data):
        raise report.ReportError(
            f"no run of this report under {runs_root} and no run data at {data}: nothing to report"
        )
    if shipped and (found := report.sha256(data)) != shipped:
        report.read_data(data)  # what is wrong with it, if its format says (empty, not gzip, cut short, corrupt)
        raise report.ReportError(
            f"{data} is not the run data that ships (sha256 {found[:12]}..., the index records {shipped[:12]}...): "
            "edited; restore it (git checkout)"
        )
    return data


def stop_with_me():
    """In a run's process before it starts: SIGTERM when the runner dies, even by kill -9, so that the run checkpoints
    at the end of its iteration and never trains beside the runs of the next runner (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def run_local(runs, workers, logs_dir, reuse_changed_scripts=False):
    os.makedirs(logs_dir, exist_ok=True)
    states = [peek_state(r, reuse_changed_scripts) for r in runs]
    ended = [(r, run_dir) for r, (state, run_dir) in zip(runs, states) if state in ("done", "diverged")]
    todo = [r for r, (state, _) in zip(runs, states) if state not in ("done", "diverged")]
    diverged = [(r, run_dir) for r, (state, run_dir) in zip(runs, states) if state == "diverged"]
    print(f"{len(runs)} runs: {len(ended)} already finished, {len(todo)} to run on {workers} workers", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    running, held, failed, done, start, last_report, last_retry = [], [], [], len(ended), time.time(), 0.0, 0.0
    durations = []  # seconds of each run that started and ended in this session: the estimate of the time left
    # Ctrl-C or a kill stops the runs, never orphans them: each run gets SIGTERM, checkpoints at the end of its
    # iteration and exits; rerunning the same command resumes them. Set explicitly: a runner started with & inherits
    # SIGINT ignored.
    stop_signal, forwarded, stopped, said_held = [], 0, 0, set()
    previous_handlers = {
        sig: signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while ((todo or held) and not stop_signal) or running:
            if held and not todo and time.time() - last_retry > 5:  # runs another runner holds: ours once it lets go
                todo, held, last_retry = held, [], time.time()
            while todo and not stop_signal and len(running) < workers:
                run = todo.pop(0)
                fd = claim(run)
                if fd is None:
                    if run["name"] not in said_held:
                        said_held.add(run["name"])
                        print(f"{run['variant']}/{run['name']}: another runner holds it; waiting for it", flush=True)
                    held.append(run)
                    continue
                try:
                    state, run_dir = run_state(run, reuse_changed_scripts)  # under the claim: another may have run it
                except StaleRun as e:
                    os.close(fd)
                    failed.append((run["fresh"], str(e), 2))
                    continue
                if state in ("done", "diverged"):
                    os.close(fd)
                    done += 1
                    diverged += [(run, run_dir)] if state == "diverged" else []
                    continue
                set_aside_dead(run)
                cmd = command(run, state, run_dir)
                log_path = os.path.join(logs_dir, f"{run['name']}.log")
                log = open(log_path, "a")
                log.write(f"$ {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=ROOT,
                    pass_fds=(fd,),
                    preexec_fn=stop_with_me,
                )
                os.close(fd)  # the run's process holds the claim now
                running.append((proc, cmd, log_path, log, run, time.time()))
            time.sleep(0.5)
            if (
                len(stop_signal) > forwarded
            ):  # passed on as the scripts read them: the first stops after the iteration, a second at once
                forwarded, stopped = len(stop_signal), stopped or len(running)
                for proc, *_ in running:
                    proc.send_signal(signal.SIGTERM if forwarded == 1 else signal.SIGINT)
            for item in list(running):
                proc, cmd, log_path, log, run, started = item
                if proc.poll() is not None:
                    running.remove(item)
                    log.close()
                    if proc.returncode in (0, 3):
                        done += 1
                        durations += [time.time() - started] if "--resume" not in cmd else []  # whole runs only
                        diverged += [(run, run_state(run, reuse_changed_scripts)[1])] if proc.returncode == 3 else []
                    elif not stop_signal:
                        failed.append((cmd, f"log: {log_path}", proc.returncode))
            if time.time() - last_report > 30 or not (todo or running or held):
                last_report = time.time()
                left = ""
                if durations and (todo or running or held):  # from the runs that ended in this session
                    mean = sum(durations) / len(durations)
                    work = mean * (len(todo) + len(held)) + sum(max(mean - (time.time() - r[5]), 0) for r in running)
                    left = f"  about {work / workers / 60:.0f} min left"
                print(
                    f"[{time.strftime('%H:%M:%S')}] done {done}/{len(runs)}  running {len(running)}  "
                    + (f"held by another runner {len(held)}  " if held else "")
                    + f"failed {len(failed)}  "
                    + (f"diverged {len(diverged)}  " if diverged else "")
                    + f"elapsed {(time.time() - start) / 60:.1f} min{left}",
                    flush=True,
                )
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    for cmd, where, rc in failed:
        print(f"FAILED (exit {rc}): {shlex.join(cmd)}\n  {where}", file=sys.stderr)
    for run, run_dir in diverged:
        print(f"DIVERGED: {run_dir}: {divergence(run_dir)} (not run again; the report lists it)", file=sys.stderr)
    if stop_signal:
        print(
            f"runner.py: stopped by signal {stop_signal[0]}: {stopped} runs stopped, {len(todo) + len(held)} not "
            "started; the same command resumes them from their checkpoints",
            file=sys.stderr,
        )
        return 128 + stop_signal[0]
    return 1 if failed else 3 if diverged else 0


def submit_slurm(runs, slurm_dir, max_running, sbatch_args, python, reuse_changed_scripts=False):
    """One array task per run that is not finished. Each task claims its run and decides new or --resume when it
    starts (slurm_task), so a requeued or preempted task resumes its run and a run another runner holds is skipped."""
    todo = [r for r in runs if peek_state(r, reuse_changed_scripts)[0] not in ("done", "diverged")]
    if not todo:
        print("all runs already finished")
        return 0
    if shutil.which("sbatch") is None:
        print("runner.py: error: sbatch not found: --slurm submits from a machine with Slurm", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(slurm_dir, "logs"), exist_ok=True)
    runs_file = os.path.join(slurm_dir, f"runs-{int(time.time())}.jsonl")
    lines = [json.dumps(r | {"reuse_changed_scripts": reuse_changed_scripts}) + "\n" for r in todo]
    report.write_whole(runs_file, lambda f: f.writelines(lines))
    script = os.path.join(slurm_dir, "array.sbatch")
    report.write_whole(
        script,
        lambda f: f.write(f"""#!/bin/bash
#SBATCH --job-name=lightworld
#SBATCH --array=1-{len(todo)}%{max_running}
#SBATCH --cpus-per-task=1
#SBATCH --output={slurm_dir}/logs/%A_%a.out
export OMP_NUM_THREADS=1
exec {shlex.quote(python)} {shlex.quote(os.path.abspath(__file__))} \\
    --slurm-task {shlex.quote(runs_file)} "$SLURM_ARRAY_TASK_ID"
"""),
    )
    out = subprocess.run(["sbatch", "--parsable", *sbatch_args, script], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"runner.py: error: sbatch failed: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(
        f"submitted job array {out.stdout.strip()} with {len(todo)} runs; logs in {slurm_dir}/logs; "
        f"rerun this command after it finishes to resume failed runs, then --report-only"
    )
    return 0


def slurm_task(runs_file, index):
    """One array task: claims its run, decides new or --resume under the claim, then becomes the run's process, which
    keeps the claim until it exits."""
    with open(runs_file) as f:
        run = json.loads(f.readlines()[index - 1])
    fd = claim(run)
    if fd is None:
        print(f"{run['name']}: another runner holds it; skipped")
        return 0
    try:
        state, run_dir = run_state(run, run["reuse_changed_scripts"])
    except StaleRun as e:
        print(f"runner.py: error: {e}", file=sys.stderr)
        return 2
    cmd = command(run, state, run_dir)
    if cmd is None:
        print(f"{run['name']}: {'finished' if state == 'done' else 'diverged'} already")
        return 0
    set_aside_dead(run)
    print(f"$ {shlex.join(cmd)}", flush=True)
    os.set_inheritable(fd, True)
    os.execv(cmd[0], cmd)


def main(argv=None):
    try:
        return run_experiment(argv)
    except KeyboardInterrupt:  # outside the runs' loop, which passes Ctrl-C on to the runs itself
        print("runner.py: stopped by Ctrl-C; nothing is left running, and the same command goes on", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # its reader went away (| head): stop as SIGPIPE would; the runs stop with the runner
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:  # a pool, log or report folder that cannot be written (read-only, full, not a folder)
        print(f"runner.py: error: cannot write {e.filename or 'a file'} ({e.strerror})", file=sys.stderr)
        return 4


def run_experiment(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.error = lambda message: sys.exit(print(f"runner.py: error: {message}", file=sys.stderr) or 2)  # one line
    parser.add_argument("--experiment", default="E10", help=f"{', '.join(EXPERIMENTS)}, or a new name with --variants")
    parser.add_argument("--env-ids", nargs="+", help="tasks (default: the experiment's)")
    parser.add_argument(
        "--variants",
        nargs="+",
        help="variants (names or 'NAME=SCRIPT FLAGS'; the first is the baseline) instead of the experiment's",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the experiment's; 1-10 for a new one)")
    parser.add_argument(
        "--baselines", nargs="+", help="variants the report compares the others with (default: the experiment's)"
    )
    parser.add_argument(
        "--seed-sets",
        nargs="+",
        metavar="NAME=FIRST-LAST",
        help="score the comparison over several seed sets at once (e.g. E5=1-10 E6=21-30): P pooled and per set",
    )
    parser.add_argument("--total-timesteps", type=int, help="steps per run (default: the experiment's; 1M for most)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel runs (default: number of cores)")
    parser.add_argument(
        "--runs-root", default=os.path.join(ROOT, "runs", "benchmark"), help="the pool of runs of all experiments"
    )
    parser.add_argument(
        "--results-dir",
        help="where the report's folder goes (default: benchmark/results as defined, else <runs-root>/reports)",
    )
    parser.add_argument("--force", action="store_true", help="replace a report that holds more runs than the new one")
    parser.add_argument(
        "--reuse-changed-scripts", action="store_true", help="reuse runs that another version of a copied script made"
    )
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--extra", default="", help="extra flags for every run, e.g. '--num-envs 8'")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--slurm", action="store_true", help="submit a Slurm job array instead of running locally")
    parser.add_argument("--slurm-max-running", type=int, default=50, help="array concurrency limit (%%N)")
    parser.add_argument(
        "--sbatch-args", default="", help="extra sbatch arguments, e.g. '--partition=cpu --time=2:00:00'"
    )
    parser.add_argument("--slurm-task", nargs=2, help=argparse.SUPPRESS)  # RUNS_FILE INDEX: one task of the array
    parser.add_argument("--report-only", action="store_true", help="only write the report of existing runs")
    parser.add_argument("--no-report", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse takes the value of "--extra --no-clip-vloss" for an option of its own: bind it as
    # "--extra=--no-clip-vloss"
    if "--extra" in argv[:-1]:
        i = argv.index("--extra")
        argv[i : i + 2] = [f"--extra={argv[i + 1]}"]
    args = parser.parse_args(argv)
    if args.slurm_task:
        return slurm_task(args.slurm_task[0], int(args.slurm_task[1]))
    if args.experiment not in EXPERIMENTS and not args.variants:
        parser.error(f"--experiment {args.experiment} is not one of {', '.join(EXPERIMENTS)}: give its --variants")
    all_variants, default_tasks, default_seeds, default_steps = experiment_defaults(args.experiment)
    seed_sets = {}
    for spec in args.seed_sets or []:
        name, _, span = spec.partition("=")
        first, _, last = span.partition("-")
        if not (name and first.isdigit() and (last or first).isdigit()):
            parser.error(f"--seed-sets {spec}: give NAME=FIRST-LAST, e.g. E6=21-30")
        seed_sets[name] = list(range(int(first), int(last or first) + 1))
    if not (seed_sets or args.seeds):
        seed_sets = SEED_SETS.get(args.experiment, {})
    args.seeds = args.seeds or sorted({seed for seeds in seed_sets.values() for seed in seeds}) or default_seeds
    args.total_timesteps = args.total_timesteps or default_steps
    args.runs_root = os.path.abspath(args.runs_root)  # relative to the caller's directory, for runs, logs and report
    variants = args.variants or all_variants
    try:
        names = [parse_variant(v)[0] for v in variants]
    except ValueError as e:
        parser.error(str(e))
    baselines = args.baselines or [b for b in BASELINES.get(args.experiment, names[:1]) if b in names] or names[:1]
    if not set(baselines) <= set(names):
        parser.error(f"--baselines {' '.join(baselines)}: each must be one of the variants ({' '.join(names)})")
    if args.workers < 1 or args.total_timesteps < 1:
        parser.error("--workers and --total-timesteps must be positive")

    extra = args.extra.split()
    try:
        runner_flag(extra, "--extra")
    except ValueError as e:
        parser.error(str(e))
    if args.workers >= (os.cpu_count() or 1) and "--num-env-threads" not in extra:
        extra += ["--num-env-threads", "1"]  # one core per run when runs fill the machine (results do not change)
    runs = plan(
        args.experiment, args.env_ids, args.seeds, args.total_timesteps, args.runs_root, args.python, extra, variants
    )
    _reused_other_code.clear()
    try:
        for r in runs:
            check_pool(r, write=not (args.dry_run or args.report_only))
            peek_state(r, args.reuse_changed_scripts)
    except StaleRun as e:
        print(f"runner.py: error: {e}", file=sys.stderr)
        return 2
    for pool, run_dirs_ in _reused_other_code.items():
        print(f"runner.py: {len(run_dirs_)} runs in {pool} were made by another version of its script; reused")
    if args.dry_run:
        for r in runs:
            state, run_dir = peek_state(r, args.reuse_changed_scripts)
            cmd = command(r, state, run_dir)
            what = {"done": "finished", "held": "held by another runner"}.get(state, state)
            print(f"# {r['name']}: {what}" if cmd is None else shlex.join(cmd))
        return 0
    if args.slurm:
        return submit_slurm(
            runs,
            os.path.join(args.runs_root, f"slurm-{args.experiment}"),
            args.slurm_max_running,
            shlex.split(args.sbatch_args),
            args.python,
            args.reuse_changed_scripts,
        )
    logs = os.path.join(args.runs_root, "logs")
    rc = 0 if args.report_only else run_local(runs, args.workers, logs, args.reuse_changed_scripts)
    if not args.no_report and rc < 128:  # a runner stopped by a signal reports when the same command has gone on
        labels = {r["variant"]: r["label"] for r in runs}  # pool -> the variant's name as given
        tasks = args.env_ids or default_tasks
        folder = report_folder(args.experiment, names, args.seeds, tasks, args.total_timesteps, extra)
        as_defined = args.experiment in EXPERIMENTS and folder == args.experiment  # a result: benchmark/results
        default_dir = (
            os.path.join(ROOT, "benchmark", "results") if as_defined else os.path.join(args.runs_root, "reports")
        )
        out_dir = os.path.join(args.results_dir or default_dir, folder)
        try:
            data = None  # the report's run data, read where none of its runs is on disk
            if args.report_only and not any(sum(run_dirs(r), []) for r in runs):
                data = report_data(args.experiment, folder, out_dir, args.runs_root)
                print(f"no runs of this report under {args.runs_root}: reporting from its run data, {data}")
            report.write_report(
                [os.path.join(args.runs_root, pool) for pool in labels],
                out_dir,
                args.total_timesteps,
                baselines=[pool for pool, name in labels.items() if name in baselines],
                title=args.experiment,
                env_ids=tasks,
                seeds=args.seeds,
                force=args.force,
                data=data,
                labels=labels,
                seed_sets=seed_sets,
            )
            print(f"report: {os.path.join(out_dir, 'summary.md')}")
            data = os.path.join(out_dir, report.DATA)
            print(f"run data: {data} (sha256 {report.sha256(data)})")
        except report.ReportError as e:
            print(f"runner.py: error: {e}", file=sys.stderr)
            return 2
    return rc


if __name__ == "__main__":
    sys.exit(main())
