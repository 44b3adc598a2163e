"""The world model: its loss learns and cannot collapse, the multi-step, reward and target-encoder options, windows
that never cross an episode end, the intrinsic reward and the collapse diagnostics."""

import copy

import pytest
import torch

from conftest import BATCH, read_progress, script, train
from wm_common import Dynamics, Encoder, ema_update, intrinsic_reward, latent_drift, latent_stats, rollout_windows
from wm_common import world_model_loss

OBS_DIM, ACT_DIM, Z_DIM = 11, 3, 16


def fixed_batch(n=512):
    # a linear system with some structure: the next obs depends on obs and action
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, OBS_DIM, generator=g)
    action = torch.rand(n, ACT_DIM, generator=g) * 2 - 1
    A = torch.randn(OBS_DIM, OBS_DIM, generator=g) * 0.3
    B = torch.randn(ACT_DIM, OBS_DIM, generator=g)
    return obs, action, obs @ A + action @ B


def one_step(obs, action, next_obs):
    """world_model_loss's arguments for single transitions (horizon 1, no episode end, zero rewards)."""
    n = len(obs)
    return obs, action[None], next_obs[None], torch.zeros(1, n), torch.zeros(1, n), torch.ones(1, n, dtype=torch.bool)


def rollout(num_steps=16, num_envs=4, seed=0):
    """(num_steps, num_envs, ...) buffers of the linear system, with episode ends, rewards and terminations."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(OBS_DIM, OBS_DIM, generator=g) * 0.3
    B = torch.randn(ACT_DIM, OBS_DIM, generator=g)
    obs = torch.zeros(num_steps, num_envs, OBS_DIM)
    actions = torch.rand(num_steps, num_envs, ACT_DIM, generator=g) * 2 - 1
    next_obs, rewards = torch.zeros_like(obs), torch.zeros(num_steps, num_envs)
    dones = (torch.rand(num_steps, num_envs, generator=g) < 0.1).float()
    current = torch.randn(num_envs, OBS_DIM, generator=g)
    for t in range(num_steps):
        obs[t] = current
        next_obs[t] = current @ A + actions[t] @ B
        rewards[t] = next_obs[t, :, 0] - 0.1 * (actions[t] ** 2).sum(-1)
        reset = torch.randn(num_envs, OBS_DIM, generator=g)
        current = torch.where(dones[t, :, None].bool(), reset, next_obs[t])
    terminations = dones * (next_obs[..., 1] > 0).float()  # some ends are terminations, the others truncations
    return obs, actions, next_obs, rewards, terminations, dones


def test_world_model_loss_falls_and_latent_keeps_rank():
    torch.manual_seed(0)
    obs, action, next_obs = fixed_batch()
    encoder, dynamics = Encoder(OBS_DIM, Z_DIM), Dynamics(Z_DIM, ACT_DIM, OBS_DIM)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(dynamics.parameters()), lr=1e-3)
    first = world_model_loss(encoder, dynamics, *one_step(obs, action, next_obs))[0].item()
    rank_before = latent_stats(encoder(obs))["z_effective_rank"]
    for _ in range(400):
        loss, terms = world_model_loss(encoder, dynamics, *one_step(obs, action, next_obs))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    assert terms["wm_obs_loss"].item() < 0.2  # the latent carries the information to predict the next observation
    stats = latent_stats(encoder(obs))
    assert stats["z_effective_rank"] > 0.5 * rank_before and stats["z_effective_rank"] > 4  # not a point or a line
    assert stats["z_std"] > 0.1


def test_horizon_1_without_reward_or_target_is_the_one_step_loss_exactly():
    # the options are off by default: the default loss is the one-step latent + decoder loss, bit for bit
    torch.manual_seed(0)
    buffers = rollout()
    encoder, dynamics = Encoder(OBS_DIM, Z_DIM), Dynamics(Z_DIM, ACT_DIM, OBS_DIM)
    inds = torch.randperm(16 * 4)[:32]
    loss, terms = world_model_loss(encoder, dynamics, *rollout_windows(inds, 1, 4, *buffers))
    obs, actions, next_obs = (b.reshape(64, -1)[inds] for b in buffers[:3])
    pred = dynamics(encoder(obs), actions)
    by_hand = ((pred - encoder(next_obs).detach()) ** 2).mean() + ((dynamics.decoder(pred) - next_obs) ** 2).mean()
    assert torch.equal(loss, by_hand) and set(terms) == {"wm_loss", "wm_latent_loss", "wm_obs_loss"}
    grads = torch.autograd.grad(loss, list(encoder.parameters()) + list(dynamics.parameters()))
    expected = torch.autograd.grad(by_hand, list(encoder.parameters()) + list(dynamics.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))
    assert Dynamics(Z_DIM, ACT_DIM, OBS_DIM).reward_head is None  # no extra weights drawn at the defaults


def test_windows_gather_consecutive_steps_of_one_env_and_stop_at_the_first_episode_end():
    obs, actions, next_obs, rewards, terminations, dones = rollout()
    dones[:] = 0
    dones[5, 2] = 1  # env 2's episode ends with transition 5
    inds = torch.tensor([3 * 4 + 2, 6 * 4 + 1])  # env 2 from t=3, env 1 from t=6
    start, a, nxt, r, term, mask = rollout_windows(inds, 4, 4, obs, actions, next_obs, rewards, terminations, dones)
    assert torch.equal(start, torch.stack([obs[3, 2], obs[6, 1]]))
    assert torch.equal(a[:, 0], actions[3:7, 2]) and torch.equal(nxt[:, 1], next_obs[6:10, 1])
    assert torch.equal(r[:, 0], rewards[3:7, 2]) and torch.equal(term[:, 1], terminations[6:10, 1])
    # steps 3, 4, 5 of env 2 are one episode (5 ends it, with its true final observation); step 6 is the next one
    assert mask.tolist() == [[True, True], [True, True], [True, True], [False, True]]


def test_no_gradient_crosses_an_episode_end():
    torch.manual_seed(0)
    obs, actions, next_obs, rewards, terminations, dones = rollout()
    dones[:] = 0
    dones[1, :] = 1  # every episode ends with transition 1
    encoder, dynamics = Encoder(OBS_DIM, Z_DIM), Dynamics(Z_DIM, ACT_DIM, OBS_DIM, reward_head=True)
    params = list(encoder.parameters()) + list(dynamics.parameters())
    inds = torch.arange(4)  # windows from t=0: steps 0 and 1 are one episode, steps 2 and 3 the next

    def loss_and_grads(next_obs, rewards, actions):
        mb = rollout_windows(inds, 4, 4, obs, actions, next_obs, rewards, terminations, dones)
        loss = world_model_loss(encoder, dynamics, *mb, reward_weight=0.5)[0]
        return loss, torch.autograd.grad(loss, params)

    base_loss, base_grads = loss_and_grads(next_obs, rewards, actions)
    after_end = next_obs.clone(), rewards.clone(), actions.clone()
    for buffer in after_end:
        buffer[2:] += 100.0  # what happens after the episode end: another episode
    loss, grads = loss_and_grads(*after_end)
    assert torch.equal(loss, base_loss) and all(torch.equal(a, b) for a, b in zip(grads, base_grads))
    at_end = next_obs.clone()
    at_end[1] += 1.0  # the final observation of the episode is a real target
    assert not torch.equal(loss_and_grads(at_end, rewards, actions)[0], base_loss)


@pytest.mark.parametrize("horizon,reward_weight,tau", [(5, 0.0, 1.0), (5, 0.1, 1.0), (3, 0.1, 0.05)])
def test_each_option_learns_on_a_fixed_rollout(horizon, reward_weight, tau):
    torch.manual_seed(0)
    buffers = rollout(num_steps=64, num_envs=8)
    encoder = Encoder(OBS_DIM, Z_DIM)
    dynamics = Dynamics(Z_DIM, ACT_DIM, OBS_DIM, reward_head=reward_weight > 0)
    target = copy.deepcopy(encoder).requires_grad_(False) if tau < 1 else None
    opt = torch.optim.Adam(list(encoder.parameters()) + list(dynamics.parameters()), lr=1e-3)
    inds = torch.arange((64 - horizon + 1) * 8)
    mb = rollout_windows(inds, horizon, 8, *buffers)
    first = world_model_loss(encoder, dynamics, *mb, target, reward_weight)[1]
    for _ in range(300):
        loss, terms = world_model_loss(encoder, dynamics, *mb, target, reward_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if target is not None:
            ema_update(target, encoder, tau)
    assert terms["wm_obs_loss"] < 0.3 * first["wm_obs_loss"]
    if reward_weight > 0:
        assert terms["wm_reward_loss"] < 0.5 * first["wm_reward_loss"]
    assert latent_stats(encoder(buffers[0].reshape(-1, OBS_DIM)))["z_effective_rank"] > 4


def test_ema_target_moves_towards_the_encoder_and_gets_no_gradient():
    encoder = Encoder(OBS_DIM, Z_DIM)
    target = copy.deepcopy(encoder).requires_grad_(False)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, encoder, 0.25)
    for t, b, o in zip(target.parameters(), before, encoder.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * o)
        assert t.grad is None and not t.requires_grad


def test_target_gets_no_gradient():
    obs, action, next_obs = fixed_batch(n=8)
    encoder, dynamics = Encoder(OBS_DIM, Z_DIM), Dynamics(Z_DIM, ACT_DIM, OBS_DIM)
    # the loss depends on next_obs through the target; with stop-gradient no gradient may reach the encoder from it
    encoder.zero_grad()
    loss, _ = world_model_loss(encoder, dynamics, *one_step(obs.detach() * 0, action, next_obs))
    loss.backward()
    grad_only_obs = [p.grad.clone() for p in encoder.parameters()]
    # same loss computed with the target detached by hand gives identical encoder gradients
    encoder.zero_grad()
    pred = dynamics(encoder(obs * 0), action)
    target = encoder(next_obs).detach()
    (((pred - target) ** 2).mean() + ((dynamics.decoder(pred) - next_obs) ** 2).mean()).backward()
    for a, p in zip(grad_only_obs, encoder.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_latent_stats_detects_collapse():
    collapsed = torch.ones(256, 32) * torch.randn(1, 32)
    stats = latent_stats(collapsed)
    assert stats["z_effective_rank"] < 1.01 and stats["z_std"] < 1e-6
    assert latent_stats(torch.randn(256, 32))["z_effective_rank"] > 25


def test_latent_drift_is_the_move_of_a_fixed_batch_relative_to_its_spread():
    z = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    spread = (z - z.mean(0)).norm(dim=-1).mean()
    assert latent_drift(z, z) == 0
    direction = torch.zeros(32)
    direction[0] = 1.0
    assert latent_drift(z + 0.25 * spread * direction, z) == pytest.approx(0.25, rel=1e-5)  # a shift of a quarter
    assert latent_drift(3 * z[:100], 3 * z[100:200]) == pytest.approx(latent_drift(z[:100], z[100:200]), rel=1e-5)
    assert latent_drift(z.roll(1, 0), z) == pytest.approx(2**0.5, rel=0.05)  # reshuffled: about sqrt(2)


def test_scripts_log_the_drift_of_z_from_the_second_iteration(finished_runs):
    for name in ("ppo_wm", "ppo_wm_aux"):
        drift = [r["z_drift"] for r in read_progress(finished_runs[name])]
        assert drift[0] == "" and all(0 < float(d) < 2 for d in drift[1:])  # nothing to compare with at the first
    assert "z_drift" not in read_progress(finished_runs["ppo_continuous"])[0]


def test_intrinsic_reward_is_per_transition_prediction_error():
    obs, action, next_obs = fixed_batch(n=64)
    encoder, dynamics = Encoder(OBS_DIM, Z_DIM), Dynamics(Z_DIM, ACT_DIM, OBS_DIM)

    def surprise():
        with torch.no_grad():
            return intrinsic_reward(dynamics, encoder(obs), action, encoder(next_obs))

    r = surprise()
    assert r.shape == (64,) and (r >= 0).all()
    with torch.no_grad():  # one value per transition, independent of the rest of the batch
        single = intrinsic_reward(dynamics, encoder(obs[5:6]), action[5:6], encoder(next_obs[5:6]))
        expected = ((dynamics(encoder(obs[5]), action[5]) - encoder(next_obs[5])) ** 2).mean()
    torch.testing.assert_close(single[0], expected)
    torch.testing.assert_close(r[5], expected)
    # transitions the model has trained on become less surprising: the curiosity signal decays with familiarity
    opt = torch.optim.Adam(list(encoder.parameters()) + list(dynamics.parameters()), lr=1e-3)
    for _ in range(300):
        loss = world_model_loss(encoder, dynamics, *one_step(obs, action, next_obs))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert surprise().mean() < 0.5 * r.mean()


@pytest.mark.parametrize("name", ["ppo_wm", "ppo_wm_aux"])
def test_scripts_train_resume_and_evaluate_with_every_option(name, tmp_path):
    options = ["--wm-horizon", 3, "--wm-reward-weight", 0.1, "--wm-target-tau", 0.05]
    run_dir = train(name, tmp_path, "--total-timesteps", 2 * BATCH, *options)
    rows = read_progress(run_dir)
    assert all(float(r["wm_reward_loss"]) > 0 and float(r["wm_loss"]) > 0 for r in rows)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"target_encoder", "dynamics"} <= set(ckpt) and "reward_head.weight" in ckpt["dynamics"]
    assert not torch.equal(ckpt["target_encoder"]["net.0.weight"], ckpt["encoder"]["net.0.weight"])
    assert script(name).main(["--resume", str(run_dir), "--total-timesteps", str(3 * BATCH)]) == 0
    assert len(read_progress(run_dir)) == 3
    assert script(name).main(["--eval-checkpoint", str(run_dir / "best.pt"), "--eval-episodes", "2"]) == 0
