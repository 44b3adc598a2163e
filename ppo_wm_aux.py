# PPO for continuous control on Gymnasium MuJoCo tasks, CleanRL-style, correct on gymnasium 1.x.
# World-model variant: actor and critic see [normalized obs, z], z from a world model trained online (wm_common.py).
# Auxiliary-reward variant: PPO learns from r + alpha * (world-model prediction error, scaled by a running std).
# One file, read top to bottom. Differences from CleanRL's ppo_continuous_action.py are listed in README.md.
import atexit
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering on CPU; must be set before mujoco is imported

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

from wm_common import Dynamics, Encoder, intrinsic_reward, latent_stats, world_model_loss

warnings.filterwarnings("ignore", message=".*is out of date")  # -v4 tasks are wanted: they are the published benchmarks

SCRIPT = os.path.basename(__file__)[: -len(".py")]
TIMING_COLUMNS = ("sps", "wall_time", "rollout_time", "update_time")  # the only progress.csv columns that differ between identical seeded runs


@dataclass
class Args:
    exp_name: str = SCRIPT
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """use CUDA when available (off by default: these small MLPs are faster on the CPU)"""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for small MLPs and makes runs reproducible"""
    compile: bool = False
    """torch.compile the PPO loss, forward and backward (the update runs faster; not bit-identical to eager runs; see README)"""
    runs_dir: str = "runs"
    """root folder of run directories"""

    env_id: str = "Walker2d-v4"
    """the id of the Gymnasium environment (continuous actions)"""
    total_timesteps: int = 1_000_000
    """total environment steps of the experiment"""
    learning_rate: float = 8.5e-4
    """the learning rate of the optimizer (CleanRL: 3e-4 at minibatches of 64; here sqrt(2) x 6e-4 for minibatches of 512, see README)"""
    num_envs: int = 16
    """the number of parallel environments"""
    num_env_threads: int = 2
    """threads that step the environments (MuJoCo releases the GIL, so 2 threads use both cores)"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches (4 of 512: half the gradient steps of 8 of 256, scores within the noise of it in E1, see README)"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function"""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    init_action_std: float = 1.0
    """the policy's initial action std (state-independent; CleanRL: 1.0)"""
    critic_width: int = 64
    """hidden units in each of the critic's two layers (CleanRL: 64; the actor stays at 64)"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""
    z_dim: int = 32
    """size of the world model's latent z (the policy sees [obs, z])"""
    wm_learning_rate: float = 1e-3
    """learning rate of the world model"""
    wm_epochs: int = 2
    """epochs of world-model training on each rollout batch"""
    wm_num_minibatches: int = 4
    """minibatches per world-model epoch"""
    alpha: float = 0.01
    """weight of the intrinsic (curiosity) reward; 0 reproduces ppo_wm.py exactly"""

    eval_interval: int = 50
    """evaluate the deterministic policy every this many iterations (and at the end); 0 disables"""
    eval_episodes: int = 5
    """episodes per evaluation (also for --eval-checkpoint)"""
    checkpoint_interval: int = 25
    """write checkpoint.pt every this many iterations (and at the end)"""
    status_interval: float = 10.0
    """seconds between lines in training_status.log"""
    capture_video: bool = False
    """record evaluation episodes as MP4 in runs/<run-name>/videos/"""
    video_interval: int = 4
    """record a video every this many evaluations"""
    save_snapshot: bool = False
    """save PNG frames with a JSON sidecar of evaluation episodes in runs/<run-name>/snapshots/"""
    snapshot_interval: int = 50
    """save a snapshot every this many evaluation steps"""
    resume: Optional[str] = None
    """continue the run in this run directory from its checkpoint.pt"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint (deterministic policy, frozen normalization) and exit"""

    # filled in at runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before anything is written."""


def flag_given(argv, name):
    return any(a == name or a.startswith(name + "=") for a in argv)


def check_args(args):
    if args.num_envs < 1:
        raise UsageError(f"--num-envs must be at least 1 (got {args.num_envs})")
    if not 1 <= args.num_env_threads <= args.num_envs:
        raise UsageError(f"--num-env-threads must be between 1 and --num-envs (got {args.num_env_threads})")
    if args.num_steps < 1 or args.num_minibatches < 1 or args.update_epochs < 1:
        raise UsageError("--num-steps, --num-minibatches and --update-epochs must be at least 1")
    if args.batch_size % args.num_minibatches != 0:
        raise UsageError(
            f"the batch --num-envs x --num-steps = {args.batch_size} is not divisible by --num-minibatches {args.num_minibatches}"
        )
    if not args.alpha >= 0:
        raise UsageError(f"--alpha must be >= 0 (got {args.alpha})")
    if args.z_dim < 1:
        raise UsageError(f"--z-dim must be at least 1 (got {args.z_dim})")
    if args.wm_epochs < 1 or args.wm_num_minibatches < 1 or args.batch_size % args.wm_num_minibatches != 0:
        raise UsageError(f"--wm-epochs must be >= 1 and --wm-num-minibatches must divide the batch of {args.batch_size}")
    if args.total_timesteps < args.batch_size:
        raise UsageError(f"--total-timesteps {args.total_timesteps} is smaller than one batch ({args.batch_size} steps)")
    if not 0 < args.init_action_std < math.inf:
        raise UsageError(f"--init-action-std must be a positive number (got {args.init_action_std})")
    if args.critic_width < 1:
        raise UsageError(f"--critic-width must be at least 1 (got {args.critic_width})")
    if args.eval_episodes < 1:
        raise UsageError(f"--eval-episodes must be at least 1 (got {args.eval_episodes})")
    if min(args.eval_interval, args.checkpoint_interval - 1, args.video_interval - 1, args.snapshot_interval - 1) < 0:
        raise UsageError("--eval-interval must be >= 0; --checkpoint-interval, --video-interval, --snapshot-interval >= 1")
    if args.compile and not (args.cuda and torch.cuda.is_available()):
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
        except Exception:
            raise UsageError("--compile needs a C++ compiler (g++, or the one named by $CXX): torch.compile builds its CPU kernels with it") from None
    if args.env_id not in gym.registry:
        raise UsageError(f"unknown --env-id {args.env_id!r}: not a registered Gymnasium environment")
    env = gym.make(args.env_id)
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise UsageError(f"--env-id {args.env_id} has a {type(space).__name__} action space; this script needs continuous (Box) actions")


def make_env(env_id, render=False):
    if render:  # the MuJoCo tasks' "track" camera follows the agent; the default one loses a good walker after ~100 steps
        return lambda: gym.make(env_id, render_mode="rgb_array", camera_name="track")
    return lambda: gym.make(env_id)


def make_envs(env_id, num_envs, num_threads):
    # Same-step autoreset: every step is a real transition, and the true final observation is in the info.
    sizes = [len(s) for s in np.array_split(np.arange(num_envs), num_threads)]
    return [gym.vector.SyncVectorEnv([make_env(env_id)] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP) for n in sizes]


def reset_envs(env_groups, seed):
    offsets = np.cumsum([0] + [g.num_envs for g in env_groups])
    return np.concatenate([g.reset(seed=seed + int(o))[0] for g, o in zip(env_groups, offsets)])


def step_envs(env_groups, actions, pool):
    """Steps the env groups in parallel threads. Returns obs (reset obs where an episode ended), rewards,
    terminations, truncations and next_obs, the true next observation of each transition (final obs where it ended)."""
    parts = np.split(actions, np.cumsum([g.num_envs for g in env_groups])[:-1])
    futures = [pool.submit(g.step, a) for g, a in zip(env_groups[1:], parts[1:])]
    results = [env_groups[0].step(parts[0])] + [f.result() for f in futures]
    obs, rewards, terminations, truncations = (np.concatenate([r[k] for r in results]) for k in range(4))
    next_obs = obs.copy()
    offset = 0
    for r in results:
        ended = r[4].get("_final_obs")
        if ended is not None and ended.any():
            next_obs[offset + np.flatnonzero(ended)] = np.stack(r[4]["final_obs"][ended])
        offset += len(r[0])
    return obs, rewards, terminations, truncations, next_obs


class RunningMeanStd:
    def __init__(self, shape=()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x):
        batch_mean, batch_var, batch_count = x.mean(0), x.var(0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        self.var = (self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total
        self.count = total

    def state_dict(self):
        return {"mean": torch.as_tensor(self.mean), "var": torch.as_tensor(self.var), "count": float(self.count)}

    def load_state_dict(self, state):
        if tuple(state["mean"].shape) != self.mean.shape:
            raise ValueError(f"normalization statistics of shape {tuple(state['mean'].shape)}, expected {self.mean.shape}")
        self.mean, self.var, self.count = state["mean"].double().numpy(), state["var"].double().numpy(), state["count"]


class Normalizer:
    """CleanRL's NormalizeObservation and NormalizeReward wrappers (clip 10), batched over all envs in one place so
    the statistics are part of the agent: saved in checkpoints and frozen for evaluation."""

    def __init__(self, obs_shape, num_envs, gamma, clip=10.0, epsilon=1e-8):
        self.obs_rms, self.return_rms = RunningMeanStd(obs_shape), RunningMeanStd(())
        self.returns, self.gamma, self.clip, self.epsilon = np.zeros(num_envs), gamma, clip, epsilon

    def obs(self, obs, update=True):
        if update:
            self.obs_rms.update(obs)
        normalized = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        return np.clip(normalized, -self.clip, self.clip).astype(np.float32)

    def reward(self, reward, done):
        self.returns = self.returns * self.gamma + reward
        self.return_rms.update(self.returns)
        self.returns[done] = 0.0
        return np.clip(reward / np.sqrt(self.return_rms.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    def state_dict(self):
        return {"obs_rms": self.obs_rms.state_dict(), "return_rms": self.return_rms.state_dict()}

    def load_state_dict(self, state):
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.return_rms.load_state_dict(state["return_rms"])


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim, out_dim, out_std, width=64):
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, width)), nn.Tanh(), layer_init(nn.Linear(width, width)), nn.Tanh(), layer_init(nn.Linear(width, out_dim), std=out_std)
    )


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim, init_action_std=1.0, critic_width=64):
        super().__init__()
        self.critic = mlp(obs_dim, 1, out_std=1.0, width=critic_width)
        self.actor_mean = mlp(obs_dim, act_dim, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), math.log(init_action_std)))

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def log_prob(self, action, mean):
        # diagonal Gaussian written out: building torch.distributions.Normal every step costs more than the MLP
        return (-0.5 * ((action - mean) / self.actor_logstd.exp()) ** 2 - self.actor_logstd - 0.5 * math.log(2 * math.pi)).sum(-1)

    def act(self, x):
        noise = torch.randn_like(self.actor_logstd.expand(x.shape[0], -1))
        action = self.actor_mean(x) + self.actor_logstd.exp() * noise
        # log_prob(action) written with the noise, (action - mean) / std, that drew it
        logprob = (-0.5 * noise**2 - self.actor_logstd - 0.5 * math.log(2 * math.pi)).sum(-1)
        return action, logprob

    def evaluate(self, x, action):
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.actor_logstd).sum(-1).expand(x.shape[0])
        return self.log_prob(action, self.actor_mean(x)), entropy, self.get_value(x)


def policy_input(obs, encoder):
    # z carries no PPO gradient: the encoder is trained by the world-model loss only
    with torch.no_grad():
        return torch.cat([obs, encoder(obs)], -1)


def train_world_model(encoder, dynamics, wm_optimizer, b_obs, b_actions, b_next_obs, perms, minibatch_size):
    """One epoch of minibatch SGD per permutation in perms; returns the last minibatch's (loss, latent_loss, obs_loss)."""
    for b_inds in perms:
        for start in range(0, len(b_inds), minibatch_size):
            mb_inds = b_inds[start : start + minibatch_size]
            wm_loss, wm_latent_loss, wm_obs_loss = world_model_loss(encoder, dynamics, b_obs[mb_inds], b_actions[mb_inds], b_next_obs[mb_inds])
            wm_optimizer.zero_grad()
            wm_loss.backward()
            wm_optimizer.step()
    return wm_loss.detach(), wm_latent_loss.detach(), wm_obs_loss.detach()


def world_model_process(conn, trainer_conn, encoder, dynamics, wm_optimizer, obs, actions, next_obs, action_low, action_high, minibatch_size, torch_threads):
    """Trains the world model in a child process, one request per rollout. In a second thread it would contend with the
    PPO update for the GIL (benchmark/wm_cost_probe.py: the update then took 11-19 ms longer per iteration; next to a
    process, 1-3 ms). encoder, dynamics and the rollout buffers are in shared memory, shared with the trainer: the pipe carries
    each iteration's shuffles and losses, and the optimizer's state, which lives here, when the trainer checkpoints."""
    trainer_conn.close()  # the trainer's end, inherited by a fork: closed, so that the trainer's exit ends our reads
    torch.set_num_threads(torch_threads)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # Ctrl-C and Slurm signal every process: the trainer finishes its iteration, then closes the pipe
    obs_dim, act_dim = next_obs.shape[-1], actions.shape[-1]
    try:
        for request, perms in iter(conn.recv, None):
            if request == "state":
                conn.send(wm_optimizer.state_dict())
                continue
            losses = train_world_model(
                encoder, dynamics, wm_optimizer, obs[..., :obs_dim].reshape((-1, obs_dim)), actions.reshape((-1, act_dim)).clamp(action_low, action_high),
                next_obs.reshape((-1, obs_dim)), torch.from_numpy(perms).to(obs.device), minibatch_size,
            )
            conn.send([loss.item() for loss in losses])
    except (EOFError, OSError):
        pass  # the trainer has exited


def receive(conn):
    try:
        return conn.recv()
    except (EOFError, OSError):
        raise RuntimeError("the world-model process died (its error is printed above)") from None


def compute_gae(rewards, values, next_values, terminations, dones, gamma, gae_lambda):
    """GAE over a (num_steps, num_envs) rollout. next_values[t] is V of the true next state of transition t, so a
    truncated episode bootstraps from its final observation; a terminated one does not; the sum stops at any end."""
    deltas = rewards + gamma * next_values * (1.0 - terminations) - values
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        lastgaelam = deltas[t] + gamma * gae_lambda * (1.0 - dones[t]) * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def ppo_loss(agent, args, obs, actions, logprobs, advantages, returns, values):
    """PPO's clipped loss on one minibatch, and the ratio statistics that are logged: CleanRL's inline loop body, a
    function so that --compile can fuse it, forward and backward, into a few kernels."""
    newlogprob, entropy, newvalue = agent.evaluate(obs, actions)
    logratio = newlogprob - logprobs
    ratio = logratio.exp()

    with torch.no_grad():
        ratio_dev = (ratio - 1.0).abs().max()
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # Policy loss
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    # Value loss
    if args.clip_vloss:
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = values + torch.clamp(newvalue - values, -args.clip_coef, args.clip_coef)
        v_loss_clipped = (v_clipped - returns) ** 2
        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, pg_loss, v_loss, entropy_loss, (old_approx_kl, approx_kl, clipfrac, ratio_dev)


def save_atomic(state, path):
    # write beside the target and rename: a crash during the write leaves the previous file intact
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, env_id=None):
    """Loads tensors and plain containers only (weights_only=True): a checkpoint never unpickles arbitrary objects."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__})") from None
    script = ckpt.get("script") if isinstance(ckpt, dict) else None
    if script != SCRIPT:
        raise UsageError(f"checkpoint {path} was written by {script or 'something else'}.py, not {SCRIPT}.py: load it with that script")
    if env_id is not None and ckpt["args"]["env_id"] != env_id:
        raise UsageError(f"checkpoint {path} is for {ckpt['args']['env_id']}, not --env-id {env_id}")
    return ckpt


def checkpoint_state(args, parts, counters):
    """Everything needed to resume: parts are the networks, optimizers and normalizer (anything with a state_dict)."""
    state = {"script": SCRIPT, "args": dataclasses.asdict(args), "counters": dict(counters), "torch_rng": torch.get_rng_state()}
    return state | {name: part.state_dict() for name, part in parts.items()}


def restore_state(ckpt, parts, rng=True):
    try:
        for name, part in parts.items():
            part.load_state_dict(ckpt[name])
        if rng:
            torch.set_rng_state(ckpt["torch_rng"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UsageError(f"checkpoint does not fit this agent: {str(e).splitlines()[0]}") from None
    return dict(ckpt["counters"])


def evaluate(policy, normalizer, env_id, num_episodes, seed, device, video_path=None, snapshot_dir=None, snapshot_interval=50):
    """policy maps normalized obs to the deterministic (mean) action; normalization is frozen. Episodes run in parallel, one per env; env 0 is
    rendered when a video or snapshots are asked for. Returns the raw episodic returns."""
    render = video_path is not None or snapshot_dir is not None
    envs = gym.vector.SyncVectorEnv(
        [make_env(env_id, render=render and i == 0) for i in range(num_episodes)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    obs, _ = envs.reset(seed=seed)
    returns, finished, frames, t = np.zeros(num_episodes), np.zeros(num_episodes, dtype=bool), [], 0
    while not finished.all():
        x = torch.from_numpy(normalizer.obs(obs, update=False)).to(device)
        with torch.no_grad():
            action = policy(x).cpu().numpy()
        if render and not finished[0]:
            frames.append(envs.envs[0].render())
        obs, reward, terminations, truncations, info = envs.step(np.clip(action, envs.single_action_space.low, envs.single_action_space.high))
        if snapshot_dir is not None and not finished[0] and t % snapshot_interval == 0:
            save_snapshot(snapshot_dir, t, frames[-1], reward[0], action[0], info)
        returns += reward * ~finished
        finished |= terminations | truncations
        t += 1
    envs.close()
    if video_path is not None:
        save_video(frames, video_path, fps=envs.metadata.get("render_fps", 30))
    return returns


def save_video(frames, path, fps):
    from moviepy import ImageSequenceClip

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path[: -len(".mp4")] + ".part.mp4"
    ImageSequenceClip(frames, fps=fps).write_videofile(tmp, logger=None)
    os.replace(tmp, path)


def save_snapshot(snapshot_dir, t, frame, reward, action, info):
    import imageio.v2 as imageio

    os.makedirs(snapshot_dir, exist_ok=True)
    imageio.imwrite(os.path.join(snapshot_dir, f"step{t:06d}.png"), frame)
    meta = {"step": t, "reward": float(reward), "action": [float(a) for a in action], "info_keys": sorted(k for k in info if not k.startswith("_"))}
    with open(os.path.join(snapshot_dir, f"step{t:06d}.json"), "w") as f:
        json.dump(meta, f)


class ProgressLog:
    """progress.csv (one row per iteration), training_status.log and the console line."""

    def __init__(self, run_dir, columns, status_interval, resume_step=None):
        self.path, self.columns, self.status_interval = os.path.join(run_dir, "progress.csv"), columns, status_interval
        if resume_step is not None:  # drop rows logged after the checkpoint, so no step is duplicated
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["global_step"]) <= resume_step]
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(rows)
        else:
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, columns).writeheader()
        self.status = open(os.path.join(run_dir, "training_status.log"), "a")
        self.tty, self.last_status = sys.stdout.isatty(), 0.0

    def row(self, values):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: ("" if v is None else v) for k, v in values.items()})

    def console(self, line, total_fraction, final=False):
        now = time.time()
        if self.tty:
            bar = "#" * int(30 * total_fraction)
            print(f"\r[{bar:<30}] {line}", end="\n" if final else "", flush=True)
        if final or now - self.last_status >= self.status_interval:
            self.last_status = now
            self.status.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.status.flush()
            if not self.tty:
                print(line, flush=True)

    def close(self):
        self.status.close()


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def run_eval_checkpoint(args, argv):
    ckpt = load_checkpoint(args.eval_checkpoint, env_id=args.env_id if flag_given(argv, "--env-id") else None)
    env_id = ckpt["args"]["env_id"]
    env = gym.make(env_id)
    obs_shape, act_dim = env.observation_space.shape, env.action_space.shape[0]
    env.close()
    agent = Agent(obs_shape[0] + ckpt["args"]["z_dim"], act_dim, critic_width=ckpt["args"].get("critic_width", 64))
    encoder = Encoder(obs_shape[0], ckpt["args"]["z_dim"])
    normalizer = Normalizer(obs_shape, 1, ckpt["args"]["gamma"])
    restore_state(ckpt, {"agent": agent, "encoder": encoder, "normalizer": normalizer}, rng=False)
    out_dir = os.path.dirname(os.path.abspath(args.eval_checkpoint))
    name = os.path.basename(args.eval_checkpoint)[: -len(".pt")]
    returns = evaluate(
        lambda x: agent.actor_mean(policy_input(x, encoder)), normalizer, env_id, args.eval_episodes, ckpt["counters"]["eval_seed"], torch.device("cpu"),
        video_path=os.path.join(out_dir, "videos", f"eval-{name}.mp4") if args.capture_video else None,
        snapshot_dir=os.path.join(out_dir, "snapshots", f"eval-{name}") if args.save_snapshot else None,
        snapshot_interval=args.snapshot_interval,
    )
    for i, r in enumerate(returns):
        print(f"episode {i}: return {r:.2f}")
    print(f"eval_return_mean={returns.mean():.6f} eval_return_std={returns.std():.6f}")
    return 0


def train(args, argv):
    ckpt = None
    if args.resume is not None:
        ckpt_path = os.path.join(args.resume, "checkpoint.pt")
        if not os.path.isdir(args.resume) or not os.path.isfile(ckpt_path):
            raise UsageError(f"--resume {args.resume}: no run with a checkpoint.pt there")
        ckpt = load_checkpoint(ckpt_path, env_id=args.env_id if flag_given(argv, "--env-id") else None)
        total_timesteps = args.total_timesteps if flag_given(argv, "--total-timesteps") else ckpt["args"]["total_timesteps"]
        args = Args(**{**ckpt["args"], "resume": args.resume, "total_timesteps": total_timesteps})
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // max(args.num_minibatches, 1)
    args.num_iterations = args.total_timesteps // max(args.batch_size, 1)
    check_args(args)

    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    env_groups = make_envs(args.env_id, args.num_envs, args.num_env_threads)
    single_obs_space, single_action_space = env_groups[0].single_observation_space, env_groups[0].single_action_space
    obs_dim, act_dim = single_obs_space.shape[0], single_action_space.shape[0]
    agent = Agent(obs_dim + args.z_dim, act_dim, args.init_action_std, args.critic_width).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=device.type == "cpu")
    encoder = Encoder(obs_dim, args.z_dim).to(device)
    dynamics = Dynamics(args.z_dim, act_dim, obs_dim).to(device)
    wm_params = list(encoder.parameters()) + list(dynamics.parameters())
    wm_optimizer = torch.optim.Adam(wm_params, lr=args.wm_learning_rate, fused=device.type == "cpu")
    normalizer = Normalizer(single_obs_space.shape, args.num_envs, args.gamma)
    intrinsic_return_rms = RunningMeanStd(())
    ppo_loss_fn = ppo_loss
    if args.compile:
        from torch._inductor import config as inductor_config

        inductor_config.compile_threads = 1  # compile in this process: a pool of workers would each import torch again
        ppo_loss_fn = torch.compile(ppo_loss, dynamic=False)  # every minibatch has the same shape: one compilation
    parts = {"agent": agent, "optimizer": optimizer, "encoder": encoder, "dynamics": dynamics, "wm_optimizer": wm_optimizer, "normalizer": normalizer,
             "intrinsic_return_rms": intrinsic_return_rms}
    counters = {"global_step": 0, "iteration": 0, "wall_time": 0.0, "num_evals": 0, "best_eval_return": None, "eval_seed": args.seed + 100_000,
                "recent_returns": []}
    if ckpt is not None:
        counters = restore_state(ckpt, parts)
        if counters["iteration"] >= args.num_iterations:
            print(f"{args.resume} already finished {counters['global_step']} steps; pass a larger --total-timesteps to extend it")
            return 0
        run_dir = args.resume
    else:
        run_dir = os.path.join(args.runs_dir, f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
        os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(args), f, indent=2)

    # everything below may write files: bad input has been rejected above
    writer = SummaryWriter(run_dir, purge_step=counters["global_step"] + 1 if ckpt else None)
    if ckpt is None:
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
    columns = ["global_step", "iteration", "episodic_return", "episodic_length", "episodes", "return_last100", "eval_return", "sps", "wall_time",
               "rollout_time", "update_time",
               "learning_rate", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "first_ratio_dev",
               "wm_loss", "wm_latent_loss", "wm_obs_loss", "z_effective_rank", "z_std",
               "intrinsic_reward", "intrinsic_reward_scaled"]
    log = ProgressLog(run_dir, columns, args.status_interval, resume_step=counters["global_step"] if ckpt else None)

    # storage, preallocated once
    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim + args.z_dim), device=device)  # policy inputs [obs, z]
    next_obs_buf = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)
    actions = torch.zeros((args.num_steps, args.num_envs, act_dim), device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminations = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    action_low, action_high = single_action_space.low, single_action_space.high
    action_low_t, action_high_t = torch.as_tensor(action_low, device=device), torch.as_tensor(action_high, device=device)

    # the world model trains in a child process (world_model_process), on these buffers and weights in shared memory.
    # Forked where possible: the child then shares this process's pages (torch alone is 220 MB); CUDA and macOS need spawn.
    for buffer in (obs, actions, next_obs_buf):
        buffer.share_memory_()
    encoder.share_memory()
    dynamics.share_memory()
    wm_conn, child_conn = mp.Pipe()
    start_method = "fork" if sys.platform.startswith("linux") and device.type == "cpu" else "spawn"
    wm_process = mp.get_context(start_method).Process(target=world_model_process, args=(
        child_conn, wm_conn, encoder, dynamics, wm_optimizer, obs, actions, next_obs_buf, action_low_t, action_high_t,
        args.batch_size // args.wm_num_minibatches, args.torch_threads,
    ))
    wm_process.start()
    child_conn.close()  # so that a crash of the child ends our reads with an error instead of a hang
    atexit.register(wm_conn.close)  # however this process exits, the child sees the pipe close and exits too

    def fetch_wm_optimizer_state():  # the world model's optimizer steps in the child: its state is copied here to checkpoint it
        wm_conn.send(("state", None))
        wm_optimizer.load_state_dict(receive(wm_conn))

    stop_signal = []

    def request_stop(signum, frame):
        stop_signal.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    # episodes in flight at a checkpoint restart on resume, from a reset seeded by the iteration
    raw_obs = reset_envs(env_groups, seed=args.seed + counters["iteration"] * args.num_envs)
    next_obs = torch.from_numpy(normalizer.obs(raw_obs)).to(device)
    episode_return, episode_length = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=np.int64)
    intrinsic_returns = np.zeros(args.num_envs)
    # torch.set_num_threads is per OS thread (OpenMP): torch ops in a pool thread left at the default use every core and round differently
    pool = ThreadPoolExecutor(max_workers=max(args.num_env_threads - 1, 1), initializer=torch.set_num_threads, initargs=(args.torch_threads,))
    start_time, start_step, start_wall = time.time(), counters["global_step"], counters["wall_time"]

    for iteration in range(counters["iteration"] + 1, args.num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        finished_returns, finished_lengths = [], []
        rollout_start = time.time()
        for step in range(args.num_steps):
            x = policy_input(next_obs, encoder)
            obs[step] = x  # stored, so the update sees exactly the inputs the actions were taken with
            with torch.no_grad():
                action, logprob = agent.act(x)
            actions[step], logprobs[step] = action, logprob

            raw_obs, raw_reward, term, trunc, raw_next_obs = step_envs(env_groups, np.clip(action.cpu().numpy(), action_low, action_high), pool)
            done = term | trunc
            episode_return += raw_reward
            episode_length += 1
            finished_returns += episode_return[done].tolist()
            finished_lengths += episode_length[done].tolist()
            episode_return[done], episode_length[done] = 0.0, 0

            rewards[step] = torch.from_numpy(normalizer.reward(raw_reward, done)).to(device)
            next_obs = torch.from_numpy(normalizer.obs(raw_obs)).to(device)
            # true next observation of each transition (the final obs where an episode ended), same statistics
            next_obs_buf[step] = next_obs
            if done.any():
                next_obs_buf[step, done] = torch.from_numpy(normalizer.obs(raw_next_obs[done], update=False)).to(device)
            terminations[step] = torch.from_numpy(term).to(device)
            dones[step] = torch.from_numpy(done).to(device)
        counters["global_step"] += args.batch_size
        update_start = time.time()  # rollout_time: acting and env steps; update_time: the rest up to logging (GAE, updates)

        # Curiosity: the world model's prediction error on each transition, computed before it trains on them and
        # scaled by a running std of discounted intrinsic returns (as RND), so --alpha means the same on every task.
        # The latents are those of the policy inputs: z stored at acting time, z' computed once for the values below too.
        next_x = policy_input(next_obs_buf, encoder)
        r_int = intrinsic_reward(dynamics, obs[..., obs_dim:], actions.clamp(action_low_t, action_high_t), next_x[..., obs_dim:])
        r_int_np = r_int.cpu().numpy()
        intrinsic_return_buf = np.zeros_like(r_int_np, dtype=np.float64)
        for t in range(args.num_steps):
            intrinsic_returns = intrinsic_returns * args.gamma + r_int_np[t]
            intrinsic_return_buf[t] = intrinsic_returns
        intrinsic_return_rms.update(intrinsic_return_buf.reshape(-1))
        r_int_scaled = args.alpha * r_int / math.sqrt(intrinsic_return_rms.var + 1e-8)
        rewards += r_int_scaled

        # V of the whole rollout in one batched call: the critic has not changed since the actions were taken,
        # and one call on the (num_steps, num_envs) batch costs less than a batch-of-num_envs call every step
        with torch.no_grad():
            values = agent.get_value(obs)
            next_values = agent.get_value(next_x)
        advantages, returns = compute_gae(rewards, values, next_values, terminations, dones, args.gamma, args.gae_lambda)

        # flatten the batch
        b_obs = obs.reshape((-1, obs.shape[-1]))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1, act_dim))
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # World model: minibatch SGD on this rollout's transitions (executed, i.e. clipped, actions; true next obs). It needs
        # nothing from the PPO update (the policy's z were stored at rollout time) and the update needs nothing from it, so it
        # runs in the child process, on the core the update leaves idle, while this process updates PPO; nothing here reads the
        # world model until its losses come back. Both updates' shuffles are drawn here, in the order a serial run draws them
        # (PPO's epochs, then the world model's), so the run does not depend on timing.
        ppo_perms = [torch.randperm(args.batch_size, device=device) for _ in range(args.update_epochs)]
        wm_perms = [torch.randperm(args.batch_size, device=device) for _ in range(args.wm_epochs)]
        wm_conn.send(("train", torch.stack(wm_perms).cpu().numpy()))  # tensors would go through shared-memory files (wm_cost_probe.py)

        # Optimizing the policy and value network
        clipfracs, first_ratio_dev = [], None
        for b_inds in ppo_perms:
            for start in range(0, args.batch_size, args.minibatch_size):
                mb_inds = b_inds[start : start + args.minibatch_size]
                loss, pg_loss, v_loss, entropy_loss, (old_approx_kl, approx_kl, clipfrac, ratio_dev) = ppo_loss_fn(
                    agent, args, b_obs[mb_inds], b_actions[mb_inds], b_logprobs[mb_inds], b_advantages[mb_inds], b_returns[mb_inds], b_values[mb_inds]
                )
                clipfracs.append(clipfrac)
                if first_ratio_dev is None:  # the policy has not changed yet: must be 0 up to float error
                    first_ratio_dev = ratio_dev.item()

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        wm_loss, wm_latent_loss, wm_obs_loss = receive(wm_conn)
        z_effective_rank, z_std = latent_stats(obs[..., obs_dim:].reshape((-1, args.z_dim)))

        rollout_time, update_time = update_start - rollout_start, time.time() - update_start
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        global_step = counters["global_step"]
        counters["iteration"] = iteration
        counters["wall_time"] = start_wall + time.time() - start_time
        sps = int((global_step - start_step) / (time.time() - start_time))
        counters["recent_returns"] = (counters["recent_returns"] + finished_returns)[-100:]  # the score: their mean
        return_last100 = float(np.mean(counters["recent_returns"])) if counters["recent_returns"] else None
        for r, length in zip(finished_returns, finished_lengths):
            writer.add_scalar("charts/episodic_return", r, global_step)
            writer.add_scalar("charts/episodic_length", length, global_step)
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        writer.add_scalar("charts/SPS", sps, global_step)
        writer.add_scalar("wm/loss", wm_loss, global_step)
        writer.add_scalar("wm/latent_loss", wm_latent_loss, global_step)
        writer.add_scalar("wm/obs_loss", wm_obs_loss, global_step)
        writer.add_scalar("wm/z_effective_rank", z_effective_rank, global_step)
        writer.add_scalar("wm/z_std", z_std, global_step)
        writer.add_scalar("intrinsic/reward_raw", r_int.mean().item(), global_step)
        writer.add_scalar("intrinsic/reward_scaled", r_int_scaled.mean().item(), global_step)
        writer.add_scalar("intrinsic/return_std", math.sqrt(intrinsic_return_rms.var), global_step)

        eval_return = None
        last_iteration = iteration == args.num_iterations
        if args.eval_interval > 0 and (iteration % args.eval_interval == 0 or last_iteration):
            counters["num_evals"] += 1
            video = args.capture_video and (counters["num_evals"] - 1) % args.video_interval == 0
            eval_returns = evaluate(
                lambda x: agent.actor_mean(policy_input(x, encoder)), normalizer, args.env_id, args.eval_episodes, counters["eval_seed"], device,
                video_path=os.path.join(run_dir, "videos", f"eval-step{global_step:09d}.mp4") if video else None,
                snapshot_dir=os.path.join(run_dir, "snapshots", f"step{global_step:09d}") if args.save_snapshot and video else None,
                snapshot_interval=args.snapshot_interval,
            )
            eval_return = float(eval_returns.mean())
            writer.add_scalar("charts/eval_return", eval_return, global_step)
            if counters["best_eval_return"] is None or eval_return > counters["best_eval_return"]:
                counters["best_eval_return"] = eval_return
                fetch_wm_optimizer_state()
                save_atomic(checkpoint_state(args, parts, counters), os.path.join(run_dir, "best.pt"))

        log.row({
            "global_step": global_step, "iteration": iteration,
            "episodic_return": float(np.mean(finished_returns)) if finished_returns else None,
            "episodic_length": float(np.mean(finished_lengths)) if finished_lengths else None,
            "episodes": len(finished_returns), "return_last100": return_last100,
            "eval_return": eval_return, "sps": sps, "wall_time": round(counters["wall_time"], 3),
            "rollout_time": round(rollout_time, 4), "update_time": round(update_time, 4),
            "learning_rate": optimizer.param_groups[0]["lr"], "policy_loss": pg_loss.item(), "value_loss": v_loss.item(),
            "entropy": entropy_loss.item(), "approx_kl": approx_kl.item(), "clipfrac": torch.stack(clipfracs).mean().item(),
            "explained_variance": explained_var, "first_ratio_dev": first_ratio_dev,
            "wm_loss": wm_loss, "wm_latent_loss": wm_latent_loss, "wm_obs_loss": wm_obs_loss,
            "z_effective_rank": z_effective_rank, "z_std": z_std,
            "intrinsic_reward": r_int.mean().item(), "intrinsic_reward_scaled": r_int_scaled.mean().item(),
        })
        log.console(
            f"step {global_step:,}/{args.num_iterations * args.batch_size:,} | return(100) {fmt(return_last100)} | best eval "
            f"{fmt(counters['best_eval_return'])} | lr {optimizer.param_groups[0]['lr']:.2e} | {sps:,} sps",
            iteration / args.num_iterations, final=last_iteration,
        )

        if iteration % args.checkpoint_interval == 0 or last_iteration or stop_signal:
            writer.flush()
            fetch_wm_optimizer_state()
            save_atomic(checkpoint_state(args, parts, counters), os.path.join(run_dir, "checkpoint.pt"))
        if stop_signal:
            print(f"\nstopped by signal {stop_signal[0]} at step {global_step:,}; continue with: python {SCRIPT}.py --resume {run_dir}", file=sys.stderr)
            break

    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    pool.shutdown()
    wm_conn.send(None)
    wm_process.join()
    for g in env_groups:
        g.close()
    writer.close()
    log.close()
    return 128 + stop_signal[0] if stop_signal else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = tyro.cli(Args, args=argv)
    try:
        return run_eval_checkpoint(args, argv) if args.eval_checkpoint else train(args, argv)
    except UsageError as e:
        print(f"{SCRIPT}.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
