"""Where PPO's update spends its time, op by op, and what a cheaper tanh would save.

    python benchmark/update_probe.py --repeats 15

The update is overlap_probe.py's (the scripts' losses and default minibatches, without logging) on a random
batch of Walker2d-v4's sizes, with ppo_continuous.py's Agent. First the torch profiler's top ops of one update by
self CPU time; then the update timed, in alternating order, with the Agent's nn.Tanh and with tanh written as
2 * sigmoid(2x) - 1 (the same function; at most 3e-7 apart in float32, so runs would no longer be bit-identical to
those made with nn.Tanh). Medians over --repeats. With --critic-widths W ..., also the update of an Agent whose
critic is W wide (the scripts' --critic-width), in the same alternating order. With --layouts ExM ..., also the
scripts' Agent updated for E epochs of M minibatches (the scripts' --update-epochs and --num-minibatches), to see
what more epochs or fewer, larger minibatches would cost.
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
from torch.profiler import profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from overlap_probe import EPOCHS, LEARNING_RATE, MINIBATCH, ppo_epochs  # noqa: E402  (the benchmark folder is on the path when run as a script)
from ppo_continuous import Agent  # noqa: E402

OBS_DIM, ACT_DIM, BATCH = 17, 6, 2048


class TanhViaSigmoid(nn.Module):
    def forward(self, x):
        return 2.0 * torch.sigmoid(2.0 * x) - 1.0


def with_sigmoid_tanh(agent):
    """A copy of agent (same weights) whose nn.Tanh layers compute 2 * sigmoid(2x) - 1."""
    agent = copy.deepcopy(agent)
    for net in (agent.actor_mean, agent.critic):
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Tanh):
                net[i] = TanhViaSigmoid()
    return agent


def probe_agents(critic_widths):
    """The agents to time, by name: the scripts' Agent, the same weights with tanh via sigmoid, and one Agent per
    critic width asked for (the scripts' --critic-width)."""
    agents = {"nn.Tanh (the scripts)": Agent(OBS_DIM, ACT_DIM)}
    agents["2 * sigmoid(2x) - 1"] = with_sigmoid_tanh(agents["nn.Tanh (the scripts)"])
    for width in critic_widths:
        agents[f"a {width}-wide critic"] = Agent(OBS_DIM, ACT_DIM, critic_width=width)
    return agents


def parse_layout(text):
    """'15x2' -> (15 epochs, 2 minibatches); the batch must split evenly."""
    epochs, _, minibatches = text.partition("x")
    if not (epochs.isdigit() and minibatches.isdigit()) or int(epochs) < 1 or int(minibatches) < 1 or BATCH % int(minibatches):
        raise argparse.ArgumentTypeError(f"a layout is EPOCHSxMINIBATCHES with both at least 1 and {BATCH} divisible by MINIBATCHES, e.g. 15x2 (got {text!r})")
    return int(epochs), int(minibatches)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--top", type=int, default=8, help="ops to list from the profile")
    parser.add_argument("--critic-widths", type=int, nargs="*", default=[], help="also time the update with critics this wide")
    parser.add_argument("--layouts", type=parse_layout, nargs="*", default=[], help="also time EPOCHSxMINIBATCHES updates, e.g. 15x4 15x2")
    args = parser.parse_args()
    if args.repeats < 1 or args.top < 1 or min(args.critic_widths, default=1) < 1:
        parser.error("--repeats, --top and --critic-widths must be at least 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # obs, actions, old log-probs, advantages, returns, values
    batch = (torch.randn(BATCH, OBS_DIM), torch.rand(BATCH, ACT_DIM) * 2 - 1, torch.randn(BATCH) - 8, *torch.randn(3, BATCH))
    agents = probe_agents(args.critic_widths)
    layouts = {name: (EPOCHS, MINIBATCH) for name in agents}
    for epochs, minibatches in args.layouts:
        name = f"{epochs} epochs of {minibatches} minibatches"
        agents[name], layouts[name] = copy.deepcopy(agents["nn.Tanh (the scripts)"]), (epochs, BATCH // minibatches)
    optimizers = {name: torch.optim.Adam(a.parameters(), lr=LEARNING_RATE, eps=1e-5, fused=True) for name, a in agents.items()}

    def update(name):
        start = time.perf_counter()
        ppo_epochs(agents[name], optimizers[name], *batch, *layouts[name])
        return 1000 * (time.perf_counter() - start)

    for name in agents:
        update(name)  # warm-up
    with profile() as prof:
        update("nn.Tanh (the scripts)")
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_ms = sum(e.self_cpu_time_total for e in ops) / 1000
    print(f"one update ({EPOCHS * BATCH // MINIBATCH} minibatches of {MINIBATCH}), self CPU {total_ms:.1f} ms; top ops:")
    for e in ops[: args.top]:
        print(f"  {e.key:<40} {e.self_cpu_time_total / 1000:6.1f} ms  {100 * e.self_cpu_time_total / 1000 / total_ms:4.1f}%  {e.count} calls")

    times = {name: [] for name in agents}
    for r in range(args.repeats):
        for name in (list(agents) if r % 2 == 0 else list(agents)[::-1]):
            times[name].append(update(name))
    for name, ms in times.items():
        print(f"update with {name}: {statistics.median(ms):.1f} ms (median of {len(ms)}; {min(ms):.1f}-{max(ms):.1f})")


if __name__ == "__main__":
    main()
