import numpy as np
import pytest
import torch

from conftest import SCRIPTS, script

pytestmark = pytest.mark.quick  # the scripts' contract: python -m pytest -q -m quick


@pytest.mark.parametrize("name", SCRIPTS)
def test_gae_matches_hand_computation_with_termination_and_truncation(name):
    gamma, lam = 0.9, 0.5
    # one env, 4 steps: step 1 terminates, step 2 is truncated (time limit), step 3 runs on
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    values = torch.tensor([[0.5], [0.6], [0.7], [0.8]])
    # V of the true next state of each transition; for step 2 that is V(final observation) = 10, not V(reset obs)
    next_values = torch.tensor([[0.6], [99.0], [10.0], [0.9]])
    terminations = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    dones = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    adv, ret = script(name).compute_gae(
        rewards, values, next_values, terminations, dones, script(name).Args(gamma=gamma, gae_lambda=lam)
    )

    d3 = 4.0 + gamma * 0.9 - 0.8
    d2 = 3.0 + gamma * 10.0 - 0.7  # truncation: bootstrap from the final observation's value
    d1 = 2.0 + 0.0 - 0.6  # termination: no bootstrap (99 must be ignored)
    d0 = 1.0 + gamma * 0.6 - 0.5
    a3 = d3
    a2 = d2  # the episode ended: nothing flows back from step 3
    a1 = d1
    a0 = d0 + gamma * lam * a1
    np.testing.assert_allclose(adv.squeeze(1).numpy(), [a0, a1, a2, a3], rtol=1e-6)
    np.testing.assert_allclose(ret.numpy(), (adv + values).numpy(), rtol=1e-6)


def test_gae_is_independent_per_env():
    mod = script("ppo_continuous")
    torch.manual_seed(0)
    r, v, nv = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    term = (torch.rand(6, 3) < 0.2).float()
    done = torch.maximum(term, (torch.rand(6, 3) < 0.2).float())
    adv, _ = mod.compute_gae(r, v, nv, term, done, mod.Args(gamma=0.99, gae_lambda=0.95))
    for e in range(3):
        adv_e, _ = mod.compute_gae(
            r[:, e : e + 1],
            v[:, e : e + 1],
            nv[:, e : e + 1],
            term[:, e : e + 1],
            done[:, e : e + 1],
            mod.Args(gamma=0.99, gae_lambda=0.95),
        )
        torch.testing.assert_close(adv[:, e], adv_e[:, 0])
