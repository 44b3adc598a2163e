"""E4: what the world model's latent z encodes. Loads a ppo_wm / ppo_wm_aux checkpoint, runs its deterministic policy
with the frozen normalization, projects z to 2-D (PCA and t-SNE) coloured by time step and by gait phase, measures how
well z predicts the gait phase linearly, and renders a gait filmstrip of the agent.

    python benchmark/latent_viz.py runs/benchmark/ppo_wm/Walker2d-v4__ppo_wm__1__<time>/best.pt

It writes to runs/latent_viz/<run>/ and needs the bench extra (scikit-learn, for t-SNE). It never writes over a
report: a folder that holds a summary.md is refused unless --force (benchmark/results/E4 is the committed one).

Gait phase: the phase angle of the first thigh joint's oscillation, atan2(angular velocity, angle), both standardized
(obs index 2 and its velocity, for Walker2d, Hopper and HalfCheetah alike).
"""

import argparse
import importlib
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402


def load(path):
    """The script module and its restored encoder, agent and frozen normalizer."""
    try:
        script = torch.load(path, map_location="cpu", weights_only=True).get("script")
    except Exception as e:
        print(f"latent_viz.py: error: cannot read checkpoint {path} ({type(e).__name__})", file=sys.stderr)
        sys.exit(2)
    if script not in ("ppo_wm", "ppo_wm_aux"):
        print(f"latent_viz.py: error: {path} was written by {script}.py, not a world-model script", file=sys.stderr)
        sys.exit(2)
    mod = importlib.import_module(script)
    ckpt = mod.load_checkpoint(path)
    a = ckpt["args"]
    obs_dim, act_dim = ckpt["normalizer"]["obs_rms"]["mean"].shape[0], ckpt["agent"]["actor_logstd"].shape[1]
    agent, encoder = mod.Agent(obs_dim + a["z_dim"], act_dim), mod.Encoder(obs_dim, a["z_dim"])
    normalizer = mod.Normalizer((obs_dim,), 1, a["gamma"])
    mod.restore_state(ckpt, {"agent": agent, "encoder": encoder, "normalizer": normalizer}, rng=False)
    return mod, ckpt, agent, encoder, normalizer


def collect(env_id, agent, encoder, normalizer, episodes, seed, max_steps, film_start, film_every, film_frames):
    import gymnasium as gym

    obs_all, z_all, t_all, frames = [], [], [], []
    returns = []
    for ep in range(episodes):
        env = (
            gym.make(env_id, render_mode="rgb_array", camera_name="track", width=240, height=240)
            if ep == 0
            else gym.make(env_id)
        )
        obs, _ = env.reset(seed=seed + ep)
        total = 0.0
        for t in range(max_steps):
            x = torch.from_numpy(normalizer.obs(obs[None], update=False))
            with torch.no_grad():
                z = encoder(x)
                action = agent.actor_mean(torch.cat([x, z], -1)).numpy()[0]
            obs_all.append(obs)
            z_all.append(z.numpy()[0])
            t_all.append(t)
            if ep == 0 and t >= film_start and (t - film_start) % film_every == 0 and len(frames) < film_frames:
                frame = env.render()
                w = frame.shape[1]
                frames.append(
                    frame[:, w // 4 : 3 * w // 4]
                )  # the "track" camera follows the agent: keep the middle half
            obs, reward, terminated, truncated, _ = env.step(
                np.clip(action, env.action_space.low, env.action_space.high)
            )
            total += reward
            if terminated or truncated:
                break
        returns.append(total)
        env.close()
    return np.array(obs_all), np.array(z_all), np.array(t_all), frames, returns


def gait_phase(obs):
    n_qpos = (obs.shape[1] - 1) // 2  # obs = qpos without x (n_qpos) + qvel (n_qpos + 1)
    angle, velocity = obs[:, 2], obs[:, n_qpos + 3]
    return np.arctan2((velocity - velocity.mean()) / velocity.std(), (angle - angle.mean()) / angle.std())


def linear_r2(features, phase):
    """R^2 of a least-squares linear map from features to (cos phase, sin phase), fitted on the first half of the
    samples and scored on the second half."""
    y = np.stack([np.cos(phase), np.sin(phase)], 1)
    X = np.hstack([features, np.ones((len(features), 1))])
    half = len(X) // 2
    w, *_ = np.linalg.lstsq(X[:half], y[:half], rcond=None)
    residual = ((X[half:] @ w - y[half:]) ** 2).sum()
    return float(1 - residual / ((y[half:] - y[half:].mean(0)) ** 2).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out-dir", help="where the figures and summary.md go (default: runs/latent_viz/<run name>)")
    parser.add_argument("--force", action="store_true", help="write into a folder that holds a report already")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--film-start", type=int, default=200, help="first step of the filmstrip (past the start-up)")
    parser.add_argument("--film-every", type=int, default=4, help="steps between filmstrip frames")
    parser.add_argument("--film-frames", type=int, default=14)
    args = parser.parse_args()
    if not os.path.isfile(args.checkpoint):
        parser.exit(2, f"latent_viz.py: error: checkpoint {args.checkpoint} does not exist\n")
    run_name = os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint)))
    args.out_dir = args.out_dir or os.path.join("runs", "latent_viz", run_name)
    if os.path.isfile(os.path.join(args.out_dir, "summary.md")) and not args.force:
        parser.exit(2, f"latent_viz.py: error: {args.out_dir} holds a report: give another --out-dir (or --force)\n")
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        parser.exit(2, 'latent_viz.py: error: t-SNE needs scikit-learn: pip install -e ".[bench]"\n')
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mod, ckpt, agent, encoder, normalizer = load(args.checkpoint)
    env_id = ckpt["args"]["env_id"]
    obs, z, t, frames, returns = collect(
        env_id,
        agent,
        encoder,
        normalizer,
        args.episodes,
        args.seed,
        args.max_steps,
        args.film_start,
        args.film_every,
        args.film_frames,
    )
    phase = gait_phase(obs)
    zc = z - z.mean(0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    pca = zc @ vt[:2].T
    explained = s**2 / (s**2).sum()
    sub = slice(None, None, max(1, len(z) // 2000))  # t-SNE on at most ~2000 points
    tsne = TSNE(n_components=2, perplexity=30, init="pca", random_state=0).fit_transform(z[sub])
    rank, z_std = mod.latent_stats(torch.from_numpy(z)).values()

    os.makedirs(args.out_dir, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for row, (name, points, tt, ph) in enumerate([("PCA", pca, t, phase), ("t-SNE", tsne, t[sub], phase[sub])]):
        a = axes[row][0].scatter(points[:, 0], points[:, 1], c=tt, s=3, cmap="viridis")
        fig.colorbar(a, ax=axes[row][0], label="time step")
        b = axes[row][1].scatter(points[:, 0], points[:, 1], c=ph, s=3, cmap="twilight", vmin=-np.pi, vmax=np.pi)
        fig.colorbar(b, ax=axes[row][1], label="gait phase (rad)")
        axes[row][0].set_title(f"{name} of z, by time step")
        axes[row][1].set_title(f"{name} of z, by gait phase")
    fig.suptitle(
        f"{env_id}, {ckpt['script']} step {ckpt['counters']['global_step']:,}: "
        f"{len(z)} latents from {args.episodes} episodes"
    )
    fig.tight_layout()
    path = os.path.join(args.out_dir, "latent_projections.png")
    report.write_whole(path, lambda f: fig.savefig(f, dpi=100, format="png"), "wb")
    plt.close(fig)

    strip = np.concatenate(frames, axis=1)
    report.write_whole(
        os.path.join(args.out_dir, "gait_filmstrip.png"), lambda f: plt.imsave(f, strip, format="png"), "wb"
    )

    r2_z = linear_r2(z, phase)
    r2_obs = linear_r2(normalizer.obs(obs, update=False), phase)
    lines = [
        f"# E4: the latent of {ckpt['script']} on {env_id}",
        "",
        f"Checkpoint: `{os.path.relpath(args.checkpoint, ROOT)}` (step {ckpt['counters']['global_step']:,}); "
        f"{args.episodes} deterministic episodes, returns {', '.join(f'{r:.0f}' for r in returns)}.",
        "",
        f"- z: {z.shape[1]} dims, effective rank {rank:.1f}, mean per-dimension std {z_std:.2f}",
        f"- PCA: the first two components explain {explained[0]:.0%} and {explained[1]:.0%} of z's variance",
        f"- gait phase linearly decodable from z: R^2 = {r2_z:.2f} "
        f"(from the normalized observation itself: {r2_obs:.2f})",
        "",
        "![latent projections](latent_projections.png)",
        "",
        f"Gait filmstrip (steps {args.film_start}, {args.film_start + args.film_every}, ... of the first episode):",
        "",
        "![gait filmstrip](gait_filmstrip.png)",
    ]
    report.write_whole(os.path.join(args.out_dir, "summary.md"), lambda f: f.write("\n".join(lines) + "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
