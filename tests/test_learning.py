"""One short learning run per script on an easy task. Fails when the algorithm is broken (for example with the sign
of the advantage flipped, the return stays at a random policy's ~10)."""

import contextlib
import subprocess
import sys

from conftest import ROOT, SCRIPTS, read_progress

FLAGS = ["--env-id", "InvertedPendulum-v4", "--total-timesteps", "61440", "--eval-interval", "1000"]
FLAGS += ["--eval-episodes", "5", "--num-env-threads", "1"]


def test_each_script_learns_inverted_pendulum(tmp_path):
    with contextlib.ExitStack() as logs:
        procs = {  # the three side by side: the suite's time
            name: subprocess.Popen(
                [sys.executable, str(ROOT / f"{name}.py"), *FLAGS, "--runs-dir", str(tmp_path / name)],
                stdout=logs.enter_context(open(tmp_path / f"{name}.log", "w")),
                stderr=subprocess.STDOUT,
            )
            for name in SCRIPTS
        }
        for proc in procs.values():  # none outlives a failed wait (a no-op on a run that ended)
            logs.callback(proc.kill)
        returncodes = {name: proc.wait(timeout=600) for name, proc in procs.items()}
    for name in SCRIPTS:
        assert returncodes[name] == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
        (run_dir,) = (tmp_path / name).iterdir()
        rows = read_progress(run_dir)
        final_eval = float(rows[-1]["eval_return"])
        # the score (mean of the last 100 training episodes): a policy that holds the pole for all 1,000 steps ends no
        # episode for several iterations, so the last rows alone may hold none
        score = float(rows[-1]["return_last100"])
        assert final_eval >= 500, (name, final_eval)  # the maximum is 1000; a random policy gets about 10
        assert score >= 200, (name, score)
