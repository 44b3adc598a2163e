"""The small world model shared by ppo_wm.py and ppo_wm_aux.py: encoder, latent dynamics, loss, intrinsic reward.

Encoder: normalized obs s -> z (AvgL1Norm'd, as SALE/TD7). Dynamics: (z_t, a_t) -> z_hat_{t+1}, plus a linear decoder
z_hat_{t+1} -> s_hat_{t+1}. A latent self-prediction loss whose gradients reach its own target has a trivial minimizer
(a constant z); two remedies together keep z informative:
  - the target z_{t+1} = encoder(s_{t+1}) is computed under no_grad (stop-gradient, as SPR/SALE), and
  - the predicted latent must also decode the true next observation (grounding, as OFENet), which a constant cannot.
"""

import torch
import torch.nn as nn


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
    def __init__(self, z_dim, act_dim, obs_dim, hidden=128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim + act_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, z_dim)
        )
        self.decoder = nn.Linear(z_dim, obs_dim)

    def forward(self, z, action):
        return self.net(torch.cat([z, action], -1))


def world_model_loss(encoder, dynamics, obs, action, next_obs):
    """The loss on a batch of transitions with their true next observations, and its terms (detached) to log."""
    z_next_pred = dynamics(encoder(obs), action)
    with torch.no_grad():
        z_next_target = encoder(next_obs)
    latent_loss = ((z_next_pred - z_next_target) ** 2).mean()
    obs_loss = ((dynamics.decoder(z_next_pred) - next_obs) ** 2).mean()
    loss = latent_loss + obs_loss
    return loss, {"wm_loss": loss.detach(), "wm_latent_loss": latent_loss.detach(), "wm_obs_loss": obs_loss.detach()}


@torch.no_grad()
def intrinsic_reward(dynamics, z, action, z_next):
    """Per-transition latent prediction error, the curiosity signal (batched over a whole rollout), from the latents
    z = encoder(obs) and z_next = encoder(next_obs), which the caller has computed already for the policy."""
    return ((dynamics(z, action) - z_next) ** 2).mean(-1)


@torch.no_grad()
def latent_stats(z):
    """Collapse diagnostics of a batch of latents: effective rank (exp of the entropy of the normalized singular
    values of centred z; 1 = collapsed to a line, z_dim = full) and the mean per-dimension std."""
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s / s.sum().clamp(min=1e-12)
    effective_rank = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).item()
    return {"z_effective_rank": effective_rank, "z_std": z.std(0).mean().item()}
