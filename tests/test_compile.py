"""--compile: torch.compile of the PPO loss computes what the eager loss computes, its runs reproduce with a fixed
seed and write the same checkpoints, and a machine without a C++ compiler gets a one-line error."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import BATCH, ROOT, SCRIPTS, read_progress, script, train

MINIBATCH, OBS_DIM, ACT_DIM = 64, 11, 3


def minibatch(seed):
    g = torch.Generator().manual_seed(seed)
    obs, actions = torch.randn(MINIBATCH, OBS_DIM, generator=g), torch.randn(MINIBATCH, ACT_DIM, generator=g)
    logprobs = torch.randn(MINIBATCH, generator=g) - 4.0
    advantages, returns, values = (torch.randn(MINIBATCH, generator=g) for _ in range(3))
    return obs, actions, logprobs, advantages, returns, values


@pytest.mark.parametrize("flags", [{}, {"clip_vloss": False, "norm_adv": False, "ent_coef": 0.01, "clip_coef": 0.3}])
def test_compiled_loss_and_gradients_equal_eager(flags):
    ppo = script("ppo_continuous")
    args = ppo.Args(**flags)
    torch.manual_seed(0)
    eager_agent = ppo.Agent(OBS_DIM, ACT_DIM)
    with torch.no_grad():
        eager_agent.actor_logstd.fill_(-0.3)  # not the initial 0, so the std enters the loss
    compiled_agent = copy.deepcopy(eager_agent)
    compiled = torch.compile(ppo.ppo_loss, dynamic=False)
    for seed in range(2):  # the second call runs the compiled kernels without compiling
        batch = minibatch(seed)
        eager_out, compiled_out = ppo.ppo_loss(eager_agent, args, *batch), compiled(compiled_agent, args, *batch)
        for e, c in zip([*eager_out[:4], *eager_out[4]], [*compiled_out[:4], *compiled_out[4]], strict=True):
            torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6)
        eager_out[0].backward()
        compiled_out[0].backward()
        for (name, e), c in zip(eager_agent.named_parameters(), compiled_agent.parameters(), strict=True):
            torch.testing.assert_close(c.grad, e.grad, rtol=1e-4, atol=1e-6, msg=name)
        assert eager_agent.actor_logstd.grad.abs().sum() > 0  # the comparison covers the policy's std too
        eager_agent.zero_grad()
        compiled_agent.zero_grad()


@pytest.fixture(scope="module")
def compiled_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled")
    return {name: train(name, root / name, "--total-timesteps", 3 * BATCH, "--compile") for name in SCRIPTS}


@pytest.mark.parametrize("name", SCRIPTS)
def test_compiled_run_follows_the_eager_run(name, compiled_runs, finished_runs):
    compiled, eager = read_progress(compiled_runs[name]), read_progress(finished_runs[name])
    assert json.loads((compiled_runs[name] / "config.json").read_text())["compile"] is True
    # the same first rollout (nothing compiled acts), then updates that agree to float rounding
    assert compiled[0]["episodic_return"] == eager[0]["episodic_return"]
    for column in ("policy_loss", "value_loss", "approx_kl"):
        assert float(compiled[0][column]) == pytest.approx(float(eager[0][column]), rel=1e-3, abs=1e-6), column
    assert float(compiled[0]["first_ratio_dev"]) < 1e-5
    # the checkpoint holds the agent itself (the compiled function wraps no module): same keys as an eager run's
    c = torch.load(compiled_runs[name] / "checkpoint.pt", weights_only=True)
    e = torch.load(finished_runs[name] / "checkpoint.pt", weights_only=True)
    assert c["agent"].keys() == e["agent"].keys()


def test_compiled_runs_reproduce_with_a_fixed_seed(tmp_path, compiled_runs):
    again = read_progress(train("ppo_continuous", tmp_path, "--total-timesteps", 3 * BATCH, "--compile"))
    timing = script("ppo_continuous").TIMING_COLUMNS
    first = read_progress(compiled_runs["ppo_continuous"])
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [{k: v for k, v in r.items() if k not in timing} for r in first]


def test_compile_without_a_cpp_compiler_is_a_one_line_error(tmp_path):
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"))  # torch's inductor looks for $CXX (else g++)
    env.pop("TORCH_INDUCTOR_INSTALL_GXX", None)
    proc = subprocess.run([sys.executable, str(ROOT / "ppo_wm.py"), "--compile", "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ppo_wm.py: error: --compile needs a C++ compiler (g++, or the one named by $CXX): torch.compile builds its CPU kernels with it"
    ]
    assert not (tmp_path / "runs").exists()
