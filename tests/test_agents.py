"""The shipped agents (agents/): each loads with --eval-checkpoint in a fresh clone, with no training, and walks.

One episode is no test on another CPU: a last-bit difference in a kernel (another instruction set, or a batch of 1
instead of 10) changes a walker's gait, and about one episode in ten falls (1,400-2,500 instead of 5,300). So each
agent plays 10 episodes and the median return must lie within 15% of the median recorded in agents/agents.json: the
episodes that do not fall spread by 0.1-4% here, and the median leaves the band only if 5 of 10 fall (at most 2 of 10
did for any agent here)."""

import json
import re

import numpy as np
import pytest

from conftest import ROOT, SCRIPTS, script

AGENTS = json.loads((ROOT / "agents" / "agents.json").read_text())


def test_every_script_ships_an_agent_each_task_one_per_baseline_and_every_file_is_listed():
    assert {a["script"] for a in AGENTS.values()} == {"ppo_continuous", "ppo_wm", "ppo_wm_aux"}
    shipped = {(file.split("__")[0], a["script"]) for file, a in AGENTS.items()}
    assert {(task, s) for task in ("Walker2d-v4", "Hopper-v4", "HalfCheetah-v4") for s in SCRIPTS[:2]} <= shipped
    assert sorted(p.name for p in (ROOT / "agents").glob("*.pt")) == sorted(AGENTS)


@pytest.mark.parametrize("file", sorted(AGENTS))
def test_a_shipped_agent_walks_as_recorded(file, capsys):
    agent = AGENTS[file]
    path = ROOT / "agents" / file
    assert path.stat().st_size < 400_000  # small enough to commit
    assert script(agent["script"]).main(["--eval-checkpoint", str(path), "--eval-episodes", "10"]) == 0
    returns = [float(r) for r in re.findall(r"episode \d+: return ([-\d.]+)", capsys.readouterr().out)]
    low, high = agent["median_range"]
    assert len(returns) == 10 and low <= np.median(returns) <= high, (returns, agent["median_return_10"])
