"""The small world model shared by ppo_wm.py and ppo_wm_aux.py: encoder, latent dynamics, loss, intrinsic reward.

Encoder: normalized obs s -> z (AvgL1Norm'd, as SALE/TD7). Dynamics: (z_t, a_t) -> z_hat_{t+1}, plus a linear decoder
z_hat_{t+1} -> s_hat_{t+1}. A latent self-prediction loss whose gradients reach its own target has a trivial minimizer
(a constant z); two remedies together keep z informative:
  - the target z_{t+1} = encoder(s_{t+1}) is computed under no_grad (stop-gradient, as SPR/SALE), and
  - the predicted latent must also decode the true next observation (grounding, as OFENet), which a constant cannot.
Options (off by default; docs/world-model.md): the dynamics unrolled H steps in latent space (MR.Q, SPR), a head that
predicts each transition's reward and termination (MR.Q), and an EMA target encoder (SPR).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def avg_l1_norm(x, eps=1e-8):
    # keeps z at a fixed scale (mean |z_i| = 1), so z can neither shrink to 0 nor blow up as a policy input
    return x / x.abs().mean(-1, keepdim=True).clamp(min=eps)


class Encoder(nn.Module):
    def __init__(self, obs_dim, z_dim, hidden=128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, z_dim)
        )

    def forward(self, obs):
        return avg_l1_norm(self.net(obs))


class Dynamics(nn.Module):
    def __init__(self, z_dim, act_dim, obs_dim, hidden=128, reward_head=False):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim + act_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, z_dim)
        )
        self.decoder = nn.Linear(z_dim, obs_dim)
        # (z_t, a_t) -> (reward, termination logit); built only when used, so the default run draws the same weights
        self.reward_head = nn.Linear(z_dim + act_dim, 2) if reward_head else None

    def forward(self, z, action):
        return self.net(torch.cat([z, action], -1))


def rollout_windows(inds, horizon, num_envs, obs, actions, next_obs, rewards, terminations, dones):
    """Windows of `horizon` consecutive transitions of one env from (num_steps, num_envs, ...) rollout buffers, starting
    at flat indices inds = t * num_envs + env (t <= num_steps - horizon). Returns the start observations (B, obs_dim),
    the (horizon, B, ...) actions, true next observations, rewards and terminations, and mask (horizon, B): True for
    the steps up to and including the window's first episode end, so that no loss crosses into the next episode."""
    t, env = inds // num_envs, inds % num_envs
    steps = t[None] + torch.arange(horizon, device=inds.device)[:, None]
    ended = dones[steps, env]
    mask = torch.cat([torch.ones_like(ended[:1]), 1 - ended[:-1]]).cumprod(0).bool()
    return obs[t, env], actions[steps, env], next_obs[steps, env], rewards[steps, env], terminations[steps, env], mask


def masked_mean(x, valid):
    # the mean over the valid rows; zero (with a graph) at a step that every window has ended before
    return x[valid].mean() if valid.any() else x.sum() * 0.0


def squared_error(prediction, target):
    """The latent and observation terms' error, elementwise; masked_mean averages it over the steps' valid rows."""
    return (prediction - target) ** 2


def reward_and_termination_error(predicted, reward, termination):
    """The reward head's error per row: squared error on the reward, logistic loss on the termination (MR.Q)."""
    return (predicted[:, 0] - reward) ** 2 + F.binary_cross_entropy_with_logits(
        predicted[:, 1], termination, reduction="none"
    )


def world_model_loss(
    encoder,
    dynamics,
    obs,
    actions,
    next_obs,
    rewards,
    terminations,
    mask,
    target_encoder=None,
    reward_weight=0.0,
    latent_error=squared_error,
    obs_error=squared_error,
    reward_error=reward_and_termination_error,
):
    """The loss on windows from rollout_windows, and its terms (detached) to log. The dynamics is unrolled from
    z_0 = encoder(obs) with the window's actions; at each step the predicted latent is trained towards the
    stop-gradient latent of the true next observation (from target_encoder when given), latent_error(prediction,
    target), and must decode that observation, obs_error(decoded, observation). With reward_weight > 0, the reward
    head's reward_error on each step's reward and termination is added. A copy that changes how one term is computed
    passes its own error function (per row, or elementwise as squared_error), not a copy of this: docs/extending.md."""
    z, horizon = encoder(obs), actions.shape[0]
    latent_loss = obs_loss = reward_loss = 0.0
    for h in range(horizon):
        valid = mask[h]
        if reward_weight > 0:
            predicted = dynamics.reward_head(torch.cat([z, actions[h]], -1))
            reward_loss = reward_loss + masked_mean(reward_error(predicted, rewards[h], terminations[h]), valid)
        z = dynamics(z, actions[h])
        with torch.no_grad():
            z_target = (target_encoder or encoder)(next_obs[h])
        latent_loss = latent_loss + masked_mean(latent_error(z, z_target), valid)
        obs_loss = obs_loss + masked_mean(obs_error(dynamics.decoder(z), next_obs[h]), valid)
    latent_loss, obs_loss = latent_loss / horizon, obs_loss / horizon
    loss = latent_loss + obs_loss
    terms = {"wm_latent_loss": latent_loss.detach(), "wm_obs_loss": obs_loss.detach()}
    if reward_weight > 0:
        terms["wm_reward_loss"] = reward_loss.detach() / horizon
        loss = loss + reward_weight * reward_loss / horizon
    return loss, {"wm_loss": loss.detach()} | terms


@torch.no_grad()
def ema_update(target, online, tau):
    """target <- (1 - tau) * target + tau * online, parameter by parameter (SPR's target encoder)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)


@torch.no_grad()
def intrinsic_reward(dynamics, z, action, z_next):
    """Per-transition latent prediction error, the curiosity signal (batched over a whole rollout), from the latents
    z = encoder(obs) and z_next = encoder(next_obs), which the caller has computed already for the policy."""
    return ((dynamics(z, action) - z_next) ** 2).mean(-1)


@torch.no_grad()
def latent_drift(z, z_before):
    """How far the latents of a fixed batch of inputs moved: the mean distance each z moved, over the mean distance of
    z_before from its centroid (0: unchanged; about 1.4: the batch reshuffled at random)."""
    spread = (z_before - z_before.mean(0)).norm(dim=-1).mean().clamp(min=1e-12)
    return ((z - z_before).norm(dim=-1).mean() / spread).item()


@torch.no_grad()
def latent_stats(z):
    """Collapse diagnostics of a batch of latents: effective rank (exp of the entropy of the normalized singular
    values of centred z; 1 = collapsed to a line, z_dim = full) and the mean per-dimension std; NaN for a non-finite z
    (the script then stops as diverged)."""
    if not torch.isfinite(z).all():
        return {"z_effective_rank": float("nan"), "z_std": float("nan")}
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s / s.sum().clamp(min=1e-12)
    effective_rank = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).item()
    return {"z_effective_rank": effective_rank, "z_std": z.std(0).mean().item()}
