import csv
import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the runner's tiny configuration (--extra)
TINY_EXTRA = "--num-envs 4 --num-steps 32 --num-minibatches 2 --update-epochs 1 --eval-interval 0"
SCRIPTS = ["ppo_continuous", "ppo_wm", "ppo_wm_aux"]
# A tiny configuration: 4 envs x 32 steps = 128 steps per iteration. Hopper's untrained episodes are short.
BATCH = 128
TINY = [
    "--env-id",
    "Hopper-v4",
    "--num-envs",
    "4",
    "--num-steps",
    "32",
    "--num-minibatches",
    "4",
    "--update-epochs",
    "2",
    "--eval-episodes",
    "2",
    "--eval-interval",
    "2",
]


def script(name):
    return importlib.import_module(name)


def train(name, runs_dir, *extra, expect=0):
    """Runs a script's main() in-process and returns its new run directory."""
    runs_dir = Path(runs_dir)
    before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    rc = script(name).main([*TINY, "--runs-dir", str(runs_dir), *map(str, extra)])
    assert rc == expect
    (run_dir,) = set(runs_dir.iterdir()) - before
    return run_dir


def read_progress(run_dir):
    with open(Path(run_dir) / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def tb_scalars(run_dir):
    """{tag: [(step, value), ...]} from all TensorBoard event files of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """One short finished run of each script (3 iterations, evaluations at iterations 2 and 3), shared by tests."""
    root = tmp_path_factory.mktemp("finished")
    return {name: train(name, root / name, "--total-timesteps", 3 * BATCH) for name in SCRIPTS}


def make_run(root, variant, env_id, seed, final, steps=1_000_000, batch=2048, name=None, rise=None):
    """A finished run on disk as the report reads it: config.json and a progress.csv rising linearly to final (or
    reaching it at step rise and flat after)."""
    run_dir = root / variant / (name or f"{env_id}__{variant}__{seed}__0")
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(
        json.dumps({"exp_name": variant, "env_id": env_id, "seed": seed, "batch_size": batch})
    )
    grid = list(range(batch, steps + 1, batch))
    with open(run_dir / "progress.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["global_step", "return_last100", "wall_time"])
        w.writeheader()
        for s in grid:
            w.writerow(
                {"global_step": s, "return_last100": final * min(s / (rise or grid[-1]), 1.0), "wall_time": s / 5000}
            )
    return run_dir
