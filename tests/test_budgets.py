"""The scripts' line budgets, decided so that each stays self-contained and readable: the algorithm above the ruled
divider, the whole file and train(), and 120 columns. New plumbing trades lines; it never grows a script past these."""

import pytest

from conftest import ROOT, SCRIPTS

# lines above the divider, lines in all, lines of train()
BUDGETS = {"ppo_continuous": (400, 860, 150), "ppo_wm": (450, 925, 175), "ppo_wm_aux": (470, 945, 190)}


@pytest.mark.quick
@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_keeps_its_line_budget(name):
    lines = (ROOT / f"{name}.py").read_text().splitlines()
    divider = next(i for i, line in enumerate(lines) if line.startswith("# ====="))
    start = next(i for i, line in enumerate(lines) if line.startswith("def train("))
    end = next(i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", ")"))
    while not lines[end - 1].strip():
        end -= 1
    above, whole, train = BUDGETS[name]
    assert start < divider <= above, f"{name}: {divider} lines above the divider, budget {above}"
    assert len(lines) <= whole, f"{name}: {len(lines)} lines, budget {whole}"
    assert end - start <= train, f"{name}: train() has {end - start} lines, budget {train}"
    assert max(len(line) for line in lines) <= 120
