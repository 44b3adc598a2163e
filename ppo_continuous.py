# PPO for continuous control on Gymnasium MuJoCo tasks, CleanRL-style, correct on gymnasium 1.x.
# One file, read top to bottom. docs/architecture.md walks through it; docs/experiments.md explains the defaults.
import contextlib
import csv
import dataclasses
import glob
import hashlib
import importlib.util
import json
import math
import netrc
import os
import shlex
import signal
import sys
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import gymnasium as gym
import imageio.v2 as imageio
import mujoco
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

warnings.filterwarnings("ignore", message=".*is out of date")  # the -v4 tasks are the published benchmarks

SCRIPT = os.path.basename(__file__)[: -len(".py")]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP)  # each stops a run after its iteration
TIMING_COLUMNS = ("sps", "wall_time", "rollout_time", "update_time")  # progress.csv columns that vary by rerun
CODE_FILES = [__file__]  # the code a run trains with: config.json records its hash


@dataclass
class Args:
    exp_name: str = SCRIPT  # the name of this experiment (part of the run name)
    seed: int = 1  # seed of the experiment
    cuda: bool = False  # use CUDA when available
    track: bool = False  # also log metrics, flags and evaluation videos to Weights & Biases (pip install -e ".[track]")
    wandb_project_name: str = "mujoco-lightworld"  # the Weights & Biases project
    wandb_entity: str | None = None  # the Weights & Biases entity (team or user; default: yours)
    runs_dir: str = "runs"  # root folder of run directories

    env_id: str = "Walker2d-v4"  # the id of the Gymnasium environment (continuous actions)
    total_timesteps: int = 1_000_000  # total environment steps of the experiment
    learning_rate: float = 8.5e-4  # the learning rate of the optimizer
    num_envs: int = 16  # the number of parallel environments
    num_env_threads: int = 2  # threads that step the environments (results do not depend on it)
    num_steps: int = 128  # the number of steps to run in each environment per policy rollout
    anneal_lr: bool = True  # toggle learning rate annealing
    gamma: float = 0.99  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda for the general advantage estimation
    num_minibatches: int = 4  # the number of mini-batches
    update_epochs: int = 10  # the K epochs to update the policy
    norm_adv: bool = True  # toggles advantages normalization
    clip_coef: float = 0.2  # the surrogate clipping coefficient
    clip_vloss: bool = True  # toggles whether or not to use a clipped loss for the value function
    ent_coef: float = 0.0  # coefficient of the entropy
    vf_coef: float = 0.5  # coefficient of the value function
    max_grad_norm: float = 0.5  # the maximum norm for the gradient clipping
    target_kl: float | None = None  # the target KL divergence threshold

    eval_interval: int = 50  # evaluate the deterministic policy every this many iterations and at the end; 0: never
    eval_episodes: int = 5  # episodes per evaluation (also for --eval-checkpoint)
    checkpoint_interval: int = 25  # write checkpoint.pt every this many iterations (and at the end)
    capture_video: bool = False  # record evaluation episodes as MP4 in runs/<run-name>/videos/
    video_interval: int = 4  # record a video (and snapshots) every this many evaluations
    save_snapshot: bool = False  # save evaluation frames as PNG with a JSON sidecar in runs/<run-name>/snapshots/
    snapshot_interval: int = 50  # save a snapshot every this many evaluation steps
    resume: str | None = None  # continue the run in this directory (only --total-timesteps may change)
    eval_checkpoint: str | None = None  # evaluate this checkpoint (deterministic policy) and exit

    batch_size: int = 0  # the batch size (computed in runtime)
    minibatch_size: int = 0  # the mini-batch size (computed in runtime)
    num_iterations: int = 0  # the number of iterations (computed in runtime)


def make_env(env_id, render=False):
    if render:  # the "track" camera follows the agent; the default one loses a good walker after ~100 steps
        return lambda: gym.make(env_id, render_mode="rgb_array", camera_name="track")
    return lambda: gym.make(env_id)


def make_envs(env_id, num_envs, num_threads):
    # same-step autoreset: every step is a real transition, and the true final observation is in the info
    sizes = [len(s) for s in np.array_split(np.arange(num_envs), num_threads)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    return [gym.vector.SyncVectorEnv([make_env(env_id)] * n, autoreset_mode=mode) for n in sizes]


def reset_envs(env_groups, seed):
    offsets = np.cumsum([0] + [g.num_envs for g in env_groups])
    return np.concatenate([g.reset(seed=seed + int(o))[0] for g, o in zip(env_groups, offsets)])


def step_envs(env_groups, actions, pool):
    """Steps the env groups in threads (MuJoCo releases the GIL). Returns obs (the reset obs where an episode ended),
    rewards, terminations, truncations, and next_obs: each transition's true next observation."""
    parts = np.split(actions, np.cumsum([g.num_envs for g in env_groups])[:-1])
    futures = [pool.submit(g.step, a) for g, a in zip(env_groups[1:], parts[1:])]
    results = [env_groups[0].step(parts[0])] + [f.result() for f in futures]
    obs, rewards, terminations, truncations = (np.concatenate([r[k] for r in results]) for k in range(4))
    next_obs, offset = obs.copy(), 0
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
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var, self.count = m2 / total, total

    def state_dict(self):
        return {"mean": torch.as_tensor(self.mean), "var": torch.as_tensor(self.var), "count": float(self.count)}

    def load_state_dict(self, state):
        if tuple(state["mean"].shape) != self.mean.shape:
            raise ValueError(f"normalization statistics of shape {tuple(state['mean'].shape)}, not {self.mean.shape}")
        self.mean, self.var, self.count = state["mean"].double().numpy(), state["var"].double().numpy(), state["count"]


class Normalizer:
    """CleanRL's NormalizeObservation and NormalizeReward (clip 10) over all envs; checkpointed, frozen to evaluate."""

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
        scaled = reward / np.sqrt(self.return_rms.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self):
        return {"obs_rms": self.obs_rms.state_dict(), "return_rms": self.return_rms.state_dict()}

    def load_state_dict(self, state):
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.return_rms.load_state_dict(state["return_rms"])


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim, out_dim, out_std):
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, 64)),
        nn.Tanh(),
        layer_init(nn.Linear(64, 64)),
        nn.Tanh(),
        layer_init(nn.Linear(64, out_dim), std=out_std),
    )


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        self.actor_mean = mlp(obs_dim, act_dim, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_value(self, x):
        return self.critic(x).squeeze(-1)

    def act(self, x):
        # a diagonal Gaussian written out: building torch.distributions.Normal every step costs more than the MLP
        noise = torch.randn_like(self.actor_logstd.expand(x.shape[0], -1))
        action = self.actor_mean(x) + self.actor_logstd.exp() * noise
        logprob = (-0.5 * noise**2 - self.actor_logstd - 0.5 * math.log(2 * math.pi)).sum(-1)
        return action, logprob

    def evaluate(self, x, action):
        std = self.actor_logstd.exp()
        logprob = -0.5 * ((action - self.actor_mean(x)) / std) ** 2 - self.actor_logstd - 0.5 * math.log(2 * math.pi)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.actor_logstd).sum(-1).expand(x.shape[0])
        return logprob.sum(-1), entropy, self.get_value(x)


def make_agent(obs_dim, act_dim, args, device="cpu"):
    """The networks that act, named as the checkpoint saves them, and the deterministic policy that is evaluated: one
    function for training and --eval-checkpoint. The policy takes a step's normalized observations and the mask of the
    envs whose episode starts there, where state kept through an episode restarts (docs/extending.md)."""
    agent = Agent(obs_dim, act_dim).to(device)
    return {"agent": agent}, lambda obs, starts: agent.actor_mean(obs)


def compute_gae(rewards, values, next_values, terminations, dones, args):
    """GAE over a (num_steps, num_envs) rollout. next_values[t] is V of transition t's true next state: a truncated
    episode bootstraps from its final observation, a terminated one does not, and the sum stops at any end."""
    deltas = rewards + args.gamma * next_values * (1.0 - terminations) - values
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        lastgaelam = deltas[t] + args.gamma * args.gae_lambda * (1.0 - dones[t]) * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def ppo_loss(agent, args, obs, actions, logprobs, advantages, returns, values):
    """PPO's clipped loss on one minibatch, with the statistics that are logged."""
    newlogprob, entropy, newvalue = agent.evaluate(obs, actions)
    logratio = newlogprob - logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        stats = {
            "ratio_dev": (ratio - 1.0).abs().max(),
            "approx_kl": ((ratio - 1) - logratio).mean(),
            "clipfrac": ((ratio - 1.0).abs() > args.clip_coef).float().mean(),
        }
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

    if args.clip_vloss:
        v_loss_unclipped = (newvalue - returns) ** 2
        v_clipped = values + torch.clamp(newvalue - values, -args.clip_coef, args.clip_coef)
        v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - returns) ** 2).mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    return loss, stats | {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_loss}


def train(args, given):
    args, ckpt, run_dir = setup_run(args, given)
    torch.set_num_threads(1)  # small MLPs: one thread is fastest, and reproducible
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.cuda else "cpu")

    env_groups = make_envs(args.env_id, args.num_envs, args.num_env_threads)
    obs_space, action_space = env_groups[0].single_observation_space, env_groups[0].single_action_space
    obs_dim, act_dim = obs_space.shape[0], action_space.shape[0]
    acting, policy = make_agent(obs_dim, act_dim, args, device)  # policy: the deterministic one, evaluated
    agent = acting["agent"]
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=device.type == "cpu")
    normalizer = Normalizer(obs_space.shape, args.num_envs, args.gamma)
    parts = acting | {"optimizer": optimizer, "normalizer": normalizer}  # what a checkpoint saves
    run = Run(args, ckpt, run_dir, parts)  # restores parts and counters on resume; opens the run's files and logs
    if run.finished:
        return 0
    counters = run.counters

    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)
    next_obs_buf = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)  # rollout storage
    actions = torch.zeros((args.num_steps, args.num_envs, act_dim), device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    terminations = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)

    raw_obs = reset_envs(env_groups, seed=args.seed + counters["iteration"] * args.num_envs)
    if episodes := run.episodes_in_flight(env_groups):  # a resumed run goes on exactly where its checkpoint was
        next_obs, normalizer.returns = episodes["next_obs"].to(device), episodes["reward_returns"].numpy()
        episode_return, episode_length = episodes["episode_return"].numpy(), episodes["episode_length"].numpy()
    else:
        next_obs = torch.from_numpy(normalizer.obs(raw_obs)).to(device)
        episode_return, episode_length = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=np.int64)
    pool = ThreadPoolExecutor(max(args.num_env_threads - 1, 1))

    for iteration in range(counters["iteration"] + 1, args.num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # --- rollout ---
        finished_returns, finished_lengths = [], []
        rollout_start = time.time()
        for step in range(args.num_steps):
            obs[step] = next_obs
            with torch.no_grad():
                action, logprob = agent.act(next_obs)
            actions[step], logprobs[step] = action, logprob

            env_action = np.clip(action.cpu().numpy(), action_space.low, action_space.high)
            raw_obs, raw_reward, term, trunc, raw_next_obs = step_envs(env_groups, env_action, pool)
            done = term | trunc
            episode_return += raw_reward
            episode_length += 1
            finished_returns += episode_return[done].tolist()
            finished_lengths += episode_length[done].tolist()
            episode_return[done], episode_length[done] = 0.0, 0

            rewards[step] = torch.from_numpy(normalizer.reward(raw_reward, done)).to(device)
            next_obs = torch.from_numpy(normalizer.obs(raw_obs)).to(device)
            next_obs_buf[step] = next_obs  # the true next observation: the final one where an episode ended
            if done.any():
                next_obs_buf[step, done] = torch.from_numpy(normalizer.obs(raw_next_obs[done], update=False)).to(device)
            terminations[step] = torch.from_numpy(term).to(device)
            dones[step] = torch.from_numpy(done).to(device)
        counters["global_step"] += args.batch_size
        update_start = time.time()

        # --- advantages: V of all states and true next states, batched (the critic has not changed since acting) ---
        with torch.no_grad():
            values = agent.get_value(obs)
            next_values = agent.get_value(next_obs_buf)
        advantages, returns = compute_gae(rewards, values, next_values, terminations, dones, args)
        b_obs = obs.reshape((-1, obs.shape[-1]))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1, act_dim))
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # --- PPO update ---
        clipfracs, first_ratio_dev = [], None
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(args.batch_size, device=device)
            for start in range(0, args.batch_size, args.minibatch_size):
                mb_inds = b_inds[start : start + args.minibatch_size]
                mb = (b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values)
                loss, stats = ppo_loss(agent, args, *(x[mb_inds] for x in mb))
                clipfracs.append(stats["clipfrac"])
                if first_ratio_dev is None:  # the policy has not changed yet: 0 up to float error
                    first_ratio_dev = stats["ratio_dev"].item()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None and stats["approx_kl"] > args.target_kl:
                break

        # --- metrics ---
        rollout_time, update_time = update_start - rollout_start, time.time() - update_start
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        counters["iteration"] = iteration
        counters["recent_returns"] = (counters["recent_returns"] + finished_returns)[-100:]  # the score: their mean
        metrics = {
            "charts/iteration": iteration,
            "charts/episodic_return": float(np.mean(finished_returns)) if finished_returns else None,
            "charts/episodic_length": float(np.mean(finished_lengths)) if finished_lengths else None,
            "charts/episodes": len(finished_returns),
            "charts/return_last100": float(np.mean(counters["recent_returns"])) if counters["recent_returns"] else None,
            "charts/eval_return": None,
            "charts/sps": run.sps(),
            "charts/wall_time": run.wall_time(),
            "charts/rollout_time": round(rollout_time, 4),
            "charts/update_time": round(update_time, 4),
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            "losses/policy_loss": stats["policy_loss"].item(),
            "losses/value_loss": stats["value_loss"].item(),
            "losses/entropy": stats["entropy"].item(),
            "losses/approx_kl": stats["approx_kl"].item(),
            "losses/clipfrac": torch.stack(clipfracs).mean().item(),
            "losses/explained_variance": np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
            "losses/first_ratio_dev": first_ratio_dev,
        }

        if run.stop_if_diverged(metrics, {"observations": obs, "rewards": rewards}):  # the run's bookkeeping from here
            break
        run.evaluate_if_due(policy, normalizer, device, metrics)
        episodes = {"next_obs": next_obs, "reward_returns": normalizer.returns}
        episodes |= {"episode_return": episode_return, "episode_length": episode_length}
        if run.end_iteration(metrics, env_groups, episodes):  # logged, checkpointed if due; True: a signal came
            break

    pool.shutdown()
    for g in env_groups:
        g.close()
    return run.close()


# ======================================================================================================================
# The algorithm ends here. Below is what a run needs besides it: errors and exit codes (0 done, 2 bad input, 3
# diverged, 4 a file could not be written, 128+N stopped by signal N), the write guard, flag checks, the environments'
# state for exact resume, checkpoints, evaluation and video, the Run (counters, log, checkpoint.pt and best.pt, the
# divergence stop, signals), run set-up, --eval-checkpoint and main().
# ======================================================================================================================


class UsageError(Exception):
    """Bad input: one line on stderr, exit code 2, nothing written."""


class WriteError(Exception):
    """A file of the run could not be written (disk full, permission, not a folder): one line, exit code 4."""


@contextlib.contextmanager
def writing(path, run_dir):
    """A failed write becomes one WriteError that names the file and how to continue the run."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        reason, checkpoint = getattr(e, "strerror", None) or str(e).splitlines()[0], f"{run_dir}/checkpoint.pt"
        then = f"{checkpoint} is intact: python {SCRIPT}.py --resume {shlex.quote(run_dir)} continues the run"
        then = then if os.path.isfile(checkpoint) else "no checkpoint yet"
        raise WriteError(f"cannot write {getattr(e, 'filename', None) or path} ({reason}); {then}") from None


def code_sha256():
    return hashlib.sha256(b"".join(open(path, "rb").read() for path in CODE_FILES)).hexdigest()[:16]


def wandb_login_found():
    """A W&B login that --track can use without asking (wandb would prompt, then fail with a traceback)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return True
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    with contextlib.suppress(OSError, netrc.NetrcParseError):  # `wandb login` writes the key to ~/.netrc
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    return False


def check_args(args):
    positive, at_least_0 = (lambda x: 0 < x < math.inf), (lambda x: 0 <= x < math.inf)  # NaN is neither
    for flag, value, valid, meaning in [
        ("--learning-rate", args.learning_rate, positive(args.learning_rate), "a positive number"),
        ("--gamma", args.gamma, 0 < args.gamma <= 1, "in (0, 1]"),
        ("--gae-lambda", args.gae_lambda, 0 <= args.gae_lambda <= 1, "in [0, 1]"),
        ("--clip-coef", args.clip_coef, positive(args.clip_coef), "a positive number"),
        ("--ent-coef", args.ent_coef, at_least_0(args.ent_coef), "a number at least 0"),
        ("--vf-coef", args.vf_coef, at_least_0(args.vf_coef), "a number at least 0"),
        ("--max-grad-norm", args.max_grad_norm, positive(args.max_grad_norm), "a positive number"),
        ("--target-kl", args.target_kl, args.target_kl is None or positive(args.target_kl), "a positive number"),
        ("--seed", args.seed, args.seed >= 0, "at least 0"),
    ]:
        if not valid:
            raise UsageError(f"{flag} {value}: must be {meaning}")
    if args.cuda and not torch.cuda.is_available():
        raise UsageError("--cuda: torch finds no CUDA device here; leave --cuda off to train on the CPU")
    if args.num_envs < 1 or not 1 <= args.num_env_threads <= args.num_envs:
        raise UsageError("--num-envs must be at least 1 and --num-env-threads between 1 and --num-envs")
    if min(args.num_steps, args.num_minibatches, args.update_epochs, args.eval_episodes) < 1 or args.eval_interval < 0:
        raise UsageError("--num-steps, --num-minibatches, --update-epochs, --eval-episodes must be at least 1")
    if args.batch_size % args.num_minibatches != 0:
        raise UsageError(f"the batch of {args.batch_size} steps is not divisible by --num-minibatches")
    if args.total_timesteps < args.batch_size:
        raise UsageError(f"--total-timesteps is smaller than one batch ({args.batch_size} steps)")
    if min(args.checkpoint_interval, args.video_interval, args.snapshot_interval) < 1:
        raise UsageError("--checkpoint-interval, --video-interval and --snapshot-interval must be at least 1")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise UsageError('--track needs wandb: pip install -e ".[track]"')
    if args.track and not wandb_login_found():
        raise UsageError("--track needs a W&B login: run `wandb login`, or set WANDB_MODE=offline to log locally")
    if args.env_id not in gym.registry:
        raise UsageError(f"unknown --env-id {args.env_id!r}: not a registered Gymnasium environment")
    if not isinstance(space := gym.make(args.env_id).action_space, gym.spaces.Box):
        raise UsageError(f"--env-id {args.env_id} has a {type(space).__name__} action space; this needs a Box")


def get_env_states(env_groups):
    """What each env's next steps and resets depend on: MuJoCo's full state, the body positions that some tasks read
    before stepping (Ant, Humanoid), the time limit's count and the env's generator; None if an env is not MuJoCo."""
    states, kind = [], mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, actuators, controls, warm start, time: all
    for env in (env for g in env_groups for env in g.envs):
        sim = env.unwrapped
        if not isinstance(getattr(sim, "data", None), mujoco.MjData):
            return None
        physics = np.empty(mujoco.mj_stateSize(sim.model, kind))
        mujoco.mj_getState(sim.model, sim.data, physics, kind)
        arrays = {"physics": physics, "xpos": sim.data.xpos.copy(), "xipos": sim.data.xipos.copy()}
        states.append({k: torch.from_numpy(v) for k, v in arrays.items()} | {"rng": sim.np_random.bit_generator.state})
        states[-1]["elapsed_steps"] = env.get_wrapper_attr("_elapsed_steps")
    return states


def set_env_states(env_groups, states):
    for env, state in zip((env for g in env_groups for env in g.envs), states, strict=True):
        sim = env.unwrapped
        mujoco.mj_setState(sim.model, sim.data, state["physics"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
        sim.data.xpos[:], sim.data.xipos[:] = state["xpos"].numpy(), state["xipos"].numpy()
        env.set_wrapper_attr("_elapsed_steps", state["elapsed_steps"])
        sim.np_random.bit_generator.state = state["rng"]


def write_whole(path, run_dir, write, mode="w"):
    """write(file) into a file beside path, synced, then renamed over it: a crash leaves the old file or the new one."""
    try:
        with writing(path, run_dir), open(f"{path}.tmp", mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f"{path}.tmp", path)
    finally:
        if os.path.exists(f"{path}.tmp"):
            os.remove(f"{path}.tmp")


def save_checkpoint(path, args, parts, counters, rollout=None):
    """Everything a resume needs, written whole (write_whole)."""
    state = {"script": SCRIPT, "args": dataclasses.asdict(args), "counters": dict(counters), "rollout": rollout}
    state |= {"torch_rng": torch.get_rng_state()} | {name: part.state_dict() for name, part in parts.items()}
    write_whole(path, os.path.dirname(path), lambda f: torch.save(state, f), "wb")


def load_checkpoint(path, env_id=None):
    """Tensors and plain containers only (weights_only=True): a checkpoint never unpickles arbitrary objects."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__})") from None
    if (script := ckpt.get("script") if isinstance(ckpt, dict) else None) != SCRIPT:
        raise UsageError(f"checkpoint {path} was written by {script or 'something else'}.py, not {SCRIPT}.py")
    if env_id is not None and ckpt["args"]["env_id"] != env_id:
        raise UsageError(f"checkpoint {path} is for {ckpt['args']['env_id']}, not --env-id {env_id}")
    if unknown := sorted(set(ckpt["args"]) - {f.name for f in dataclasses.fields(Args)}):
        raise UsageError(f"checkpoint {path} has flags this {SCRIPT}.py does not know: {', '.join(unknown)}")
    return ckpt


def restore_state(ckpt, parts, rng=True):
    try:
        for name, part in parts.items():
            part.load_state_dict(ckpt[name])
        if rng:
            torch.set_rng_state(ckpt["torch_rng"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UsageError(f"checkpoint does not fit this agent: {str(e).splitlines()[0]}") from None
    return dict(ckpt["counters"])


def evaluate(policy, normalizer, args, seed, device, out_dir=None, name=None):
    """Raw returns of args.eval_episodes parallel episodes of policy (make_agent's). With a name,
    env 0 is rendered to out_dir/videos/<name>.mp4 and out_dir/snapshots/<name>/ (--capture-video, --save-snapshot)."""
    video = os.path.join(out_dir, "videos", f"{name}.mp4") if name and args.capture_video else None
    snapshots = os.path.join(out_dir, "snapshots", name) if name and args.save_snapshot else None
    render = video is not None or snapshots is not None
    env_fns = [make_env(args.env_id, render=render and i == 0) for i in range(args.eval_episodes)]
    envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs, _ = envs.reset(seed=seed)
    # a video frame every few steps, about 30 frames/s: rendering is the slow part (a quarter of it at 125 Hz)
    frame_every = max(1, round(envs.metadata.get("render_fps", 30) / 30))
    returns, finished, frames, t = np.zeros(args.eval_episodes), np.zeros(args.eval_episodes, dtype=bool), [], 0
    starts = torch.ones(args.eval_episodes, dtype=torch.bool, device=device)  # every episode starts at the reset
    while not finished.all():
        with torch.no_grad():
            action = policy(torch.from_numpy(normalizer.obs(obs, update=False)).to(device), starts).cpu().numpy()
        snapshot_now = snapshots is not None and not finished[0] and t % args.snapshot_interval == 0
        if snapshot_now or (video is not None and not finished[0] and t % frame_every == 0):
            frame = envs.envs[0].render()
            frames += [frame] if t % frame_every == 0 else []
        action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, reward, terminations, truncations, info = envs.step(action)
        if snapshot_now:  # a PNG and a JSON sidecar of the step
            with writing(snapshots, out_dir):
                os.makedirs(snapshots, exist_ok=True)
                step = os.path.join(snapshots, f"step{t:06d}")
                write_whole(f"{step}.png", out_dir, lambda f: imageio.imwrite(f, frame, "png"), "wb")
                meta = {"step": t, "reward": float(reward[0]), "action": [float(a) for a in action[0]]}
                meta |= {"info_keys": sorted(k for k in info if not k.startswith("_"))}
                write_whole(f"{step}.json", out_dir, lambda f: json.dump(meta, f))
        returns += reward * ~finished
        finished |= terminations | truncations
        starts = torch.from_numpy(terminations | truncations).to(device)  # same-step autoreset: obs starts the next
        t += 1
    envs.close()
    if video is not None:
        with writing(video, out_dir):  # renamed when complete: no half-written video
            os.makedirs(os.path.dirname(video), exist_ok=True)
            fps = envs.metadata.get("render_fps", 30) / frame_every
            imageio.mimsave(tmp := video[: -len(".mp4")] + ".part.mp4", frames, fps=fps, macro_block_size=8)
            os.replace(tmp, video)
    return returns


class Run:
    """A run's bookkeeping, none of which changes what it learns: counters, config.json, the log (TensorBoard tags are
    the metrics' keys, progress.csv columns their last part; console, training_status.log, W&B), evaluations, best.pt,
    checkpoint.pt, the divergence stop and the signals that stop it after an iteration."""

    def __init__(self, args, ckpt, run_dir, parts):
        self.args, self.ckpt, self.run_dir, self.parts, self.stop_signal = args, ckpt, run_dir, parts, []
        self.diverged, self.columns, self.wandb = None, None, None
        self.counters = {"global_step": 0, "iteration": 0, "wall_time": 0.0, "num_evals": 0, "best_eval_return": None}
        self.counters |= {"eval_seed": args.seed + 100_000, "recent_returns": []}
        if missing := ckpt is not None and sorted(set(self.counters) - set(ckpt["counters"])):
            raise UsageError(f"{run_dir}/checkpoint.pt (an older version's) lacks counters {missing}: cannot resume it")
        if ckpt is not None:
            self.counters = restore_state(ckpt, parts)
        self.resume_rows = self.logged_rows() if ckpt else None  # progress.csv up to the checkpoint
        self.finished = self.counters["iteration"] >= args.num_iterations
        if self.finished:
            print(f"{run_dir} already finished {self.counters['global_step']} steps; give a larger --total-timesteps")
            return
        check_saved(parts)
        # each start of the run: its code and steps (a resume with other steps re-stretches an annealed schedule)
        start = {"code_sha256": code_sha256(), "code_files": [os.path.basename(p) for p in CODE_FILES]}
        start["total_timesteps"] = args.total_timesteps
        self.counters["trained_with"] = self.counters.get("trained_with", []) + [start]
        for sig in STOP_SIGNALS:  # from here on files are written: bad input has been rejected above
            signal.signal(sig, self.request_stop)  # main() puts the previous handlers back
        with writing(run_dir, run_dir):
            self.run_dir = run_dir = run_dir if ckpt else make_run_dir(run_dir)
            config = dataclasses.asdict(args) | {"trained_with": self.counters["trained_with"]}
            write_whole(os.path.join(run_dir, "config.json"), run_dir, lambda f: json.dump(config, f, indent=2))
            # on resume TensorBoard drops what was logged after the checkpoint
            self.writer = SummaryWriter(run_dir, purge_step=self.counters["global_step"] + 1 if ckpt else None)
            self.status = open(os.path.join(run_dir, "training_status.log"), "a")
        self.videos = set(glob.glob(os.path.join(run_dir, "videos", "*.mp4")))  # logged already
        if args.track:  # the run's id comes from its directory, so that --resume continues the same W&B run
            wandb = importlib.import_module("wandb")
            name = os.path.basename(os.path.normpath(run_dir))
            where = {"project": args.wandb_project_name, "entity": args.wandb_entity, "dir": run_dir, "name": name}
            wandb_id, config = hashlib.sha256(name.encode()).hexdigest()[:16], dataclasses.asdict(args)
            self.wandb = wandb.init(**where, id=wandb_id, resume="allow", config=config)
        tensorboard = f"tensorboard --logdir {shlex.quote(os.path.dirname(os.path.normpath(run_dir)))}"
        self.say(f"{'resuming' if ckpt else 'run'} {run_dir} ({tensorboard})")
        self.start = (time.time(), self.counters["global_step"], self.counters["wall_time"])

    def request_stop(self, signum, frame):  # SIGINT, SIGTERM, SIGPIPE, SIGHUP: stop after the iteration
        self.stop_signal.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def logged_rows(self):
        """progress.csv's rows up to the checkpoint's step (a line cut short by a crash dropped); all must be there."""
        path, lines, step = os.path.join(self.run_dir, "progress.csv"), [], self.counters["global_step"]
        with writing(path, self.run_dir), contextlib.suppress(FileNotFoundError), open(path, newline="") as f:
            lines = f.readlines()
        lines = lines if not lines or lines[-1].endswith("\n") else lines[:-1]  # the row being written at a crash
        rows = [r for r in csv.DictReader(lines) if None not in r.values() and r["global_step"].isdigit()]
        rows = [r for r in rows if int(r["global_step"]) <= step]
        if [int(r["global_step"]) for r in rows] != list(range(self.args.batch_size, step + 1, self.args.batch_size)):
            lost = f"{path} lacks rows up to its checkpoint at step {step:,} (damaged or deleted)"
            raise UsageError(f"{lost}: move {self.run_dir} aside and train the run again")
        return rows

    def episodes_in_flight(self, env_groups):
        """The checkpoint's episodes in flight, each env set back to its state then; None: the episodes restart."""
        if self.ckpt and not self.ckpt.get("rollout"):
            print(f"{self.run_dir}: the checkpoint does not hold its episodes in flight; they restart from a reset")
        if rollout := self.ckpt and self.ckpt.get("rollout"):
            try:
                set_env_states(env_groups, rollout["envs"])
            except (KeyError, TypeError, ValueError) as e:
                raise UsageError(f"checkpoint does not fit these environments: {str(e).splitlines()[0]}") from None
        return rollout

    def sps(self):  # this session's rate
        return int((self.counters["global_step"] - self.start[1]) / (time.time() - self.start[0]))

    def wall_time(self):  # of all sessions
        self.counters["wall_time"] = self.start[2] + time.time() - self.start[0]
        return round(self.counters["wall_time"], 3)

    def stop_if_diverged(self, metrics, tensors):
        """True if a tensor, a logged value (explained_variance may be NaN) or a parameter is NaN or infinite: nothing
        of the iteration is logged or saved, diverged.json says what, and one line on stderr."""
        named = tensors | {tag: v for tag, v in metrics.items() if v is not None and tag != "losses/explained_variance"}
        named |= {f"{name} parameters": part for name, part in self.parts.items() if isinstance(part, nn.Module)}
        for name, x in named.items():
            x = torch.cat([p.detach().reshape(-1) for p in x.parameters()]) if isinstance(x, nn.Module) else x
            if not (math.isfinite(x) if isinstance(x, (int, float)) else torch.isfinite(x).all()):
                self.diverged = name
                break
        if self.diverged:
            step, marker = self.counters["global_step"], os.path.join(self.run_dir, "diverged.json")
            where = {"global_step": step, "iteration": self.counters["iteration"], "nonfinite": self.diverged}
            write_whole(marker, self.run_dir, lambda f: json.dump(where, f))
            kept = [f for f in ("checkpoint.pt", "best.pt") if os.path.isfile(os.path.join(self.run_dir, f))]
            kept = f"the last finite state is in {' and '.join(kept)}" if kept else "no checkpoint was written"
            why = f"NaN or infinite (usual causes: a learning rate or a loss weight too high); not logged, {kept}"
            print(f"{SCRIPT}.py: error: diverged at step {step:,}: {self.diverged} is {why}", file=sys.stderr)
        return bool(self.diverged)

    def evaluate_if_due(self, policy, normalizer, device, metrics):
        """Every --eval-interval iterations and at the end: the deterministic policy on frozen normalization, with its
        own seed (the training draws are untouched); the best evaluation so far is kept as best.pt."""
        counters, args = self.counters, self.args
        last = counters["iteration"] == args.num_iterations
        if not args.eval_interval or counters["iteration"] % args.eval_interval and not last:
            return
        counters["num_evals"] += 1
        video = (counters["num_evals"] - 1) % args.video_interval == 0  # with --capture-video, every few evaluations
        name = f"eval-step{counters['global_step']:09d}" if video else None
        returns = evaluate(policy, normalizer, args, counters["eval_seed"], device, self.run_dir, name)
        if counters["best_eval_return"] is None or returns.mean() > counters["best_eval_return"]:
            counters["best_eval_return"] = float(returns.mean())
            save_checkpoint(os.path.join(self.run_dir, "best.pt"), args, self.parts, counters)
        metrics["charts/eval_return"] = float(returns.mean())

    def end_iteration(self, metrics, env_groups, episodes):
        """Logs; checkpoints with the episodes in flight when due, at the end or on a signal; True on a signal."""
        self.log(metrics)
        iteration, args = self.counters["iteration"], self.args
        if iteration % args.checkpoint_interval == 0 or iteration == args.num_iterations or self.stop_signal:
            self.writer.flush()
            rollout = {"envs": get_env_states(env_groups)} | {k: torch.as_tensor(v) for k, v in episodes.items()}
            path, rollout = os.path.join(self.run_dir, "checkpoint.pt"), rollout if rollout["envs"] else None
            save_checkpoint(path, args, self.parts, self.counters, rollout)
        if self.stop_signal:
            resume = f"python {SCRIPT}.py --resume {shlex.quote(self.run_dir)}"
            print(f"stopped by signal {self.stop_signal[0]}; resume: {resume}", file=sys.stderr)
        return bool(self.stop_signal)

    def log(self, metrics):
        step, total = self.counters["global_step"], self.args.num_iterations * self.args.batch_size
        logged = {tag: value for tag, value in metrics.items() if value is not None}
        for tag, value in logged.items():
            self.writer.add_scalar(tag, value, step)
        if self.wandb is not None:
            for video in sorted(set(glob.glob(os.path.join(self.run_dir, "videos", "*.mp4"))) - self.videos):
                self.videos.add(video)
                logged["videos/eval"] = sys.modules["wandb"].Video(video, format="mp4")
            self.wandb.log(logged, step=step)
        row = {"global_step": step} | {tag.split("/")[-1]: value for tag, value in metrics.items()}
        with writing(progress := os.path.join(self.run_dir, "progress.csv"), self.run_dir):
            if self.columns is None:  # the header, and on resume the rows up to the checkpoint; then renamed
                self.columns = list(row)
                with open(f"{progress}.tmp", "w", newline="") as f:
                    csv.DictWriter(f, self.columns).writeheader()
                    csv.DictWriter(f, self.columns, restval="", extrasaction="ignore").writerows(self.resume_rows or [])
                os.replace(f"{progress}.tmp", progress)
            with open(progress, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow({k: "" if v is None else v for k, v in row.items()})
        line = f"step {step:,}/{total:,} | {row['sps']:,} sps"
        line += "".join(f" | {k} {row[k]:.1f}" for k in ("return_last100", "eval_return") if row[k] is not None)
        if row["sps"] > 0:  # at this session's rate, evaluations included
            line += f" | {time.strftime('%H:%M:%S', time.gmtime((total - step) / row['sps']))} left"
        with writing(self.status.name, self.run_dir):
            self.status.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            self.status.flush()
        self.say(line)

    def say(self, line):
        """A line on stdout; if its reader went away (`| head`), the run stops as a signal would stop it."""
        try:
            print(line, flush=True)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to write there
            signal.raise_signal(signal.SIGPIPE)

    def close(self):
        """Closes the log; the run's exit code: 0 done, 3 diverged, 128 + N stopped by signal N."""
        self.writer.close()
        self.status.close()
        if self.wandb is not None:
            self.wandb.finish()
        return 3 if self.diverged else 128 + self.stop_signal[0] if self.stop_signal else 0


def make_run_dir(path):
    """A new run directory at path, or at path-2, path-3, ... if another run started in the same second."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for n in range(1, 100):
        with contextlib.suppress(FileExistsError):
            os.mkdir(new := path if n == 1 else f"{path}-{n}")
            return new
    raise FileExistsError(f"{path}-99 exists")


def check_saved(parts):
    """Every parameter an optimizer trains must belong to a module the checkpoint saves, or resume would restart it."""
    saved = {id(p) for part in parts.values() if isinstance(part, nn.Module) for p in part.parameters()}
    optimizers = [part for part in parts.values() if isinstance(part, torch.optim.Optimizer)]
    for p in (p for opt in optimizers for group in opt.param_groups for p in group["params"] if id(p) not in saved):
        shape = tuple(p.shape)
        raise UsageError(f"a parameter of shape {shape} is trained but saved by no checkpoint part (docs/extending.md)")


def setup_run(args, given):
    """Checks the flags, then returns (args, checkpoint or None, run_dir); --resume takes the run's own flags."""
    ckpt = None
    if args.resume is not None:
        if not os.path.isfile(os.path.join(args.resume, "checkpoint.pt")):
            raise UsageError(f"--resume {args.resume}: no run with a checkpoint.pt there")
        if os.path.isfile(os.path.join(args.resume, "diverged.json")):
            raise UsageError(f"--resume {args.resume}: the run diverged (diverged.json); start one with other flags")
        ckpt, config = load_checkpoint(os.path.join(args.resume, "checkpoint.pt")), None
        with contextlib.suppress(OSError, ValueError), open(os.path.join(args.resume, "config.json")) as f:
            config = json.load(f)
        config, may_change = config if isinstance(config, dict) else {}, ("resume", "total_timesteps", "num_iterations")
        if differ := sorted(k for k, v in ckpt["args"].items() if config.get(k) != v and k not in may_change):
            k = differ[0]  # a checkpoint copied from another run, or a damaged config.json
            why = f"{k} is {ckpt['args'][k]!r} there, {config.get(k, 'missing')!r} in config.json"
            raise UsageError(f"--resume {args.resume}: checkpoint.pt and config.json disagree ({why}): move it aside")
        if ignored := given - {"--resume", "--total-timesteps"}:
            raise UsageError(f"--resume keeps the run's flags: only --total-timesteps may change, not {min(ignored)}")
        steps = args.total_timesteps if "--total-timesteps" in given else ckpt["args"]["total_timesteps"]
        if steps != (made_for := ckpt["args"]["total_timesteps"]) and ckpt["args"]["anneal_lr"]:
            stretch = f"re-stretches the annealed learning rate of a run made for {made_for:,} steps"
            print(f"--total-timesteps {steps:,} {stretch}: it is not what a fresh run would be (config.json says so)")
        args = Args(**{**ckpt["args"], "resume": args.resume, "total_timesteps": steps})
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // max(args.num_minibatches, 1)
    args.num_iterations = args.total_timesteps // max(args.batch_size, 1)
    check_args(args)
    if args.total_timesteps % args.batch_size:
        runs = f"{args.num_iterations * args.batch_size:,} steps will run"
        print(
            f"--total-timesteps {args.total_timesteps:,} is not a multiple of the batch ({args.batch_size:,}): {runs}"
        )
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    return args, ckpt, args.resume or os.path.join(args.runs_dir, run_name)


def run_eval_checkpoint(args, given):
    ckpt = load_checkpoint(args.eval_checkpoint, env_id=args.env_id if "--env-id" in given else None)
    env = gym.make(ckpt["args"]["env_id"])
    obs_shape, act_dim = env.observation_space.shape, env.action_space.shape[0]
    acting, policy = make_agent(obs_shape[0], act_dim, Args(**ckpt["args"]))
    normalizer = Normalizer(obs_shape, 1, ckpt["args"]["gamma"])
    restore_state(ckpt, acting | {"normalizer": normalizer}, rng=False)
    args.env_id, seed = ckpt["args"]["env_id"], ckpt["counters"]["eval_seed"]
    out_dir, name = os.path.split(os.path.abspath(args.eval_checkpoint))
    returns = evaluate(policy, normalizer, args, seed, "cpu", out_dir, name := f"eval-{name[: -len('.pt')]}")
    for i, r in enumerate(returns):
        print(f"episode {i}: return {r:.2f}")
    if args.capture_video:
        print(f"video: {os.path.join(out_dir, 'videos', name + '.mp4')}")
    print(f"eval_return_mean={returns.mean():.6f} eval_return_std={returns.std():.6f}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, given = tyro.cli(Args, args=argv), {a.split("=")[0] for a in argv if a.startswith("--")}
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        return run_eval_checkpoint(args, given) if args.eval_checkpoint else train(args, given)
    except (UsageError, WriteError, MemoryError, ValueError, mujoco.FatalError) as e:  # exit 2: bad input; 4: a write
        if isinstance(e, (ValueError, mujoco.FatalError)) and "allocate" not in str(e):  # how MuJoCo says out of memory
            raise
        why = e if isinstance(e, (UsageError, WriteError)) else f"out of memory ({e!r}); give fewer --num-envs"
        print(f"{SCRIPT}.py: error: {why}", file=sys.stderr)
        return 4 if isinstance(e, WriteError) else 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
