"""--track: Weights & Biases gets the metrics and the flags (offline here), a resumed run continues the same W&B run,
and without wandb installed --track is one line, exit 2, nothing written."""

import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BATCH, ROOT, TINY, read_progress, script


def run(name, *argv, env=None):
    tiny = [] if "--resume" in argv else TINY  # a resumed run has its own flags
    cmd = [sys.executable, str(ROOT / f"{name}.py"), *tiny, *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def offline_runs(run_dir):
    return sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")))


def wandb_records(path):
    """The records of an offline run's .wandb file: a 7-byte header, then LevelDB's log format (32 KiB blocks of
    records, each a 4-byte checksum, a 2-byte length and a type: 1 full, 2 first, 3 middle, 4 last) of protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, pos, records, pending = Path(path).read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending, pos = pending + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def logged(path):
    """(the run's id, its config {key: value}, its history {step: {tag: value}}) from an offline run."""
    run_id, config, history = None, {}, {}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run_id = r.run.run_id
            config |= {item.key: json.loads(item.value_json) for item in r.run.config.update}
        elif kind == "config":
            config |= {item.key: json.loads(item.value_json) for item in r.config.update}
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            history[row["_step"]] = row
    return run_id, config, history


def test_track_logs_metrics_and_flags_offline_and_resume_continues_the_same_run(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    out = run("ppo_wm", "--total-timesteps", 2 * BATCH, "--runs-dir", tmp_path, "--track", "--capture-video", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    (first,) = offline_runs(run_dir)
    run_id, config, history = logged(first)
    assert config["env_id"] == "Hopper-v4" and config["wm_horizon"] == 1 and config["track"] is True  # the flags
    rows = read_progress(run_dir)
    assert sorted(history) == [int(r["global_step"]) for r in rows] == [BATCH, 2 * BATCH]
    for row in rows:  # the same metrics as TensorBoard and progress.csv
        for tag in ("charts/return_last100", "losses/value_loss", "wm/wm_loss", "charts/episodes"):
            assert history[int(row["global_step"])][tag] == pytest.approx(float(row[tag.split("/")[-1]]))
    assert len(list(run_dir.glob("videos/*.mp4"))) == 1  # the evaluation at iteration 2, and its video
    assert history[2 * BATCH]["videos/eval/_type"] == "video-file" and "videos/eval/_type" not in history[BATCH]

    out = run("ppo_wm", "--resume", run_dir, "--total-timesteps", 3 * BATCH, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = offline_runs(run_dir)
    assert len(runs) == 2
    resumed_id, _, history = logged(runs[-1])
    assert resumed_id == run_id and sorted(history) == [3 * BATCH]  # the same W&B run, continued


def test_track_without_wandb_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a)
    )
    runs = tmp_path / "runs"
    assert (
        script("ppo_continuous").main([*TINY, "--total-timesteps", str(BATCH), "--runs-dir", str(runs), "--track"]) == 2
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        'ppo_continuous.py: error: --track needs wandb: pip install -e ".[track]"'
    ]
    assert not runs.exists()


def test_the_runner_passes_track_without_making_another_configuration(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmark"))
    import runner

    extra = ["--track", "--wandb-project-name", "screens", "--wandb-entity=me"]
    assert runner.pool_name("ppo", extra) == "ppo"  # the same runs, logged elsewhere too
    argv = ["--experiment", "E1", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1", "--dry-run"]
    assert runner.main([*argv, "--runs-root", str(tmp_path), "--extra", " ".join(extra)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("--track --wandb-project-name screens --wandb-entity=me --num-env-threads 1")
    assert f"--runs-dir {tmp_path}/ppo " in line
