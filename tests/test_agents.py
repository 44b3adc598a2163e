"""The shipped agents (agents/): each loads with --eval-checkpoint in a fresh clone, with no training, and walks: its
return is within the range recorded in agents/agents.json (not bit-exact: kernels differ across CPUs)."""

import json
import re

import pytest

from conftest import ROOT, script

AGENTS = json.loads((ROOT / "agents" / "agents.json").read_text())


def test_every_script_ships_an_agent_and_every_file_is_listed():
    assert {a["script"] for a in AGENTS.values()} == {"ppo_continuous", "ppo_wm", "ppo_wm_aux"}
    assert sorted(p.name for p in (ROOT / "agents").glob("*.pt")) == sorted(AGENTS)


@pytest.mark.parametrize("file", sorted(AGENTS))
def test_a_shipped_agent_walks_as_recorded(file, capsys):
    agent = AGENTS[file]
    path = ROOT / "agents" / file
    assert path.stat().st_size < 400_000  # small enough to commit
    assert script(agent["script"]).main(["--eval-checkpoint", str(path), "--eval-episodes", "1"]) == 0
    returned = float(re.search(r"eval_return_mean=([-\d.]+)", capsys.readouterr().out).group(1))
    low, high = agent["return_range"]
    assert low <= returned <= high, (returned, agent["eval_return"])
