"""One short learning run per script on an easy task. Fails when the algorithm is broken (for example with the sign
of the advantage flipped, the return stays at a random policy's ~10)."""

import pytest

from conftest import SCRIPTS, read_progress, script


@pytest.mark.parametrize("name", SCRIPTS)
def test_learns_inverted_pendulum(name, tmp_path):
    runs = tmp_path / "runs"
    rc = script(name).main(
        [
            "--env-id",
            "InvertedPendulum-v4",
            "--total-timesteps",
            "61440",
            "--runs-dir",
            str(runs),
            "--eval-interval",
            "1000",
            "--eval-episodes",
            "5",
        ]
    )
    assert rc == 0
    (run_dir,) = runs.iterdir()
    rows = read_progress(run_dir)
    final_eval = float(rows[-1]["eval_return"])
    # the score (mean of the last 100 training episodes): a policy that holds the pole for all 1,000 steps ends no
    # episode for several iterations, so the last rows alone may hold none
    score = float(rows[-1]["return_last100"])
    assert final_eval >= 500, final_eval  # the maximum is 1000; a random policy gets about 10
    assert score >= 200, score
