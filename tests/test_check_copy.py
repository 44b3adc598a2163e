"""benchmark/check_copy.py on the copies a researcher makes: docs/extending.md's frame-stacking example passes every
check; the same idea with the stack not saved, a control that draws one random number more, and a module no checkpoint
saves each fail the check that should catch them, with the line that says where."""

import importlib.util
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmark"))
import check_copy  # noqa: E402

DOC = (ROOT / "docs" / "extending.md").read_text()

FLAG = "    frame_stack: int = 4  # the policy sees the last K normalized observations (1: ppo_continuous.py)\n"
PUSH_FRAME = """def push_frame(stack, frame, starts=None):
    # the last K frames side by side, the newest last; an episode that starts fills its stack with its first frame
    stack = torch.cat([stack[:, frame.shape[-1] :], frame], -1)
    if starts is not None:
        stack[starts] = frame[starts].repeat(1, stack.shape[-1] // frame.shape[-1])
    return stack


"""
POLICY = """def make_agent(obs_dim, act_dim, args, device="cpu"):
    # (its docstring stays)
    agent = Agent(obs_dim * args.frame_stack, act_dim).to(device)
    stack = None  # the evaluated episodes' last frames

    def policy(obs, starts):
        nonlocal stack
        stack = push_frame(obs.repeat(1, args.frame_stack) if stack is None else stack, obs, starts)
        return agent.actor_mean(stack)

    return {"agent": agent}, policy
"""
NEXT_STACK_BUF = (
    "    next_stack_buf = torch.zeros((args.num_steps, args.num_envs, obs_dim * args.frame_stack), device=device)\n"
)
RESTORE = (
    "    # state carried through an episode: restored from the checkpoint's episodes in flight, saved with them below\n"
    '    stack = episodes["stack"].to(device) if episodes else next_obs.repeat(1, args.frame_stack)\n'
)
PUSH = """            next_stack_buf[step] = push_frame(stack, next_obs_buf[step])  # the critic's true next input
            stack = push_frame(stack, next_obs, torch.from_numpy(done).to(device))
"""
SAVE = """        episodes["stack"] = stack\n"""


def edit(source, anchor, text, where):
    """text before the anchor, after the anchor's line, or instead of the anchor."""
    assert source.count(anchor) == 1, anchor
    i = source.index(anchor)
    if where == "before":
        return source[:i] + text + source[i:]
    if where == "after line":
        end = source.index("\n", i) + 1
        return source[:end] + text + source[end:]
    return source.replace(anchor, text)


def make_my_stack(path, saved=True):
    """docs/extending.md's frame-stacking example as the page says; saved=False: the stack started afresh at set-up and
    left out of the episodes in flight (the other obvious way to write it)."""
    for snippet in (FLAG, PUSH_FRAME, POLICY, NEXT_STACK_BUF, RESTORE, PUSH, SAVE):
        assert snippet.strip() in DOC, snippet
    source = (ROOT / "ppo_continuous.py").read_text()
    buffer = "    obs = torch.zeros((args.num_steps, args.num_envs, obs_dim), device=device)\n"
    edits = [
        ("    target_kl: float", FLAG, "after line"),
        ("def make_agent(", PUSH_FRAME, "before"),
        (
            '    agent = Agent(obs_dim, act_dim).to(device)\n    return {"agent": agent}, lambda obs, starts: '
            "agent.actor_mean(obs)\n",
            POLICY.split("\n", 2)[2],  # the function's body: the page shows it whole
            "instead",
        ),
        (buffer, buffer.replace("obs_dim)", "obs_dim * args.frame_stack)") + NEXT_STACK_BUF, "instead"),
        ("    pool = ThreadPoolExecutor(", RESTORE if saved else RESTORE.splitlines()[0] + "\n" + FRESH, "before"),
        ("            obs[step] = next_obs\n", "            obs[step] = stack\n", "instead"),
        ("action, logprob = agent.act(next_obs)", "action, logprob = agent.act(stack)", "instead"),
        ("                next_obs_buf[step, done] = ", PUSH, "after line"),
        ("next_values = agent.get_value(next_obs_buf)", "next_values = agent.get_value(next_stack_buf)", "instead"),
    ]
    edits += [('        episodes |= {"episode_return"', SAVE, "after line")] if saved else []
    for anchor, text, where in edits:
        source = edit(source, anchor, text, where)
    path.write_text(source)
    return path


FRESH = "    stack = next_obs.repeat(1, args.frame_stack)\n"


def test_the_frame_stacking_example_passes_every_check_in_one_command(tmp_path):
    my_stack = make_my_stack(tmp_path / "my_stack.py")
    cmd = [sys.executable, str(ROOT / "benchmark" / "check_copy.py"), str(my_stack)]
    cmd += ["--flags", "--frame-stack 4", "--control", "--frame-stack 1", "--keep", str(tmp_path / "check")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout + out.stderr
    assert [line.split(":")[0] for line in lines[:4]] == [
        "PASS control",
        "PASS saved parts",
        "PASS resume",
        "PASS evaluation",
    ]
    assert "equal ppo_continuous.py's" in lines[0] and lines[-1].startswith("4 of 4 checks passed")
    # the stack is in the checkpoint's episodes in flight, 4 frames of Hopper's 11 numbers per env
    (run_dir,) = (tmp_path / "check" / "killed").iterdir()
    stack = torch.load(run_dir / "checkpoint.pt", weights_only=True)["rollout"]["stack"]
    assert stack.shape == (4, 44)


def test_a_stack_left_out_of_the_checkpoint_fails_the_resume_check_at_its_first_step_after_it(tmp_path):
    my_stack = make_my_stack(tmp_path / "my_stack.py", saved=False)
    task = ["--env-id", "Hopper-v4", "--frame-stack", "4"]
    assert "every trained parameter" in check_copy.start_twins(str(my_stack), task, str(tmp_path))
    (run_dir,) = (tmp_path / "killed").iterdir()
    at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["iteration"]  # where it was killed
    with pytest.raises(check_copy.Failed) as e:
        check_copy.check_resume(str(my_stack), str(tmp_path))
    first_after = (at + 1) * check_copy.BATCH
    assert str(e.value).startswith(f"step {first_after}, column ") and "(uninterrupted) != " in str(e.value)


def test_a_control_that_draws_one_random_number_more_fails_at_its_first_row(tmp_path):
    source = (ROOT / "ppo_wm.py").read_text()
    source = edit(
        source, "    dynamics = Dynamics(", "    scale = torch.rand(1)  # drawn even when the idea is off\n", "before"
    )
    (copy := tmp_path / "my_wm.py").write_text(source)
    assert check_copy.original_of(str(copy), None) == str(ROOT / "ppo_wm.py")
    with pytest.raises(check_copy.Failed) as e:
        check_copy.check_control(str(copy), str(ROOT / "ppo_wm.py"), ["--env-id", "Hopper-v4"], [], str(tmp_path))
    assert str(e.value).startswith(f"step {check_copy.BATCH}, column ") and "(ppo_wm.py) != " in str(e.value)


def test_a_module_no_checkpoint_saves_fails_saved_parts_and_skips_the_rest(tmp_path):
    source = edit(
        (ROOT / "ppo_continuous.py").read_text(),
        "    optimizer = torch.optim.Adam(agent.parameters()",
        "    head = nn.Linear(3, 3)\n"
        "    optimizer = torch.optim.Adam(list(agent.parameters()) + list(head.parameters())",
        "instead",
    )
    (copy := tmp_path / "my_head.py").write_text(source)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmark" / "check_copy.py"), str(copy), "--keep", str(tmp_path / "kept")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 1 and lines[0].startswith("FAIL saved parts: the copy exited 2: ")
    assert "a parameter of shape (3, 3) is trained but saved by no checkpoint part" in lines[0]
    assert lines[1:3] == [
        "SKIP resume: the copy did not start with --flags",
        "SKIP evaluation: the copy did not start with --flags",
    ]
    assert lines[3].startswith("0 of 3 checks passed") and f"runs kept in {tmp_path / 'kept'}" in lines[3]


def test_the_frame_stacking_policy_restarts_its_stack_where_an_episode_starts(tmp_path):
    spec = importlib.util.spec_from_file_location("my_stack", make_my_stack(tmp_path / "my_stack.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    acting, policy = module.make_agent(2, 1, module.Args(frame_stack=3))
    seen = []
    acting["agent"].actor_mean.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    a, b, c = (torch.full((2, 2), float(v)) for v in (1, 2, 3))
    policy(a, torch.tensor([True, True]))
    policy(b, torch.tensor([False, True]))  # env 1's episode starts again here
    policy(c, torch.tensor([False, False]))
    assert seen[0].tolist() == [[1] * 6, [1] * 6]
    assert seen[1].tolist() == [[1, 1, 1, 1, 2, 2], [2] * 6]
    assert seen[2].tolist() == [[1, 1, 2, 2, 3, 3], [2, 2, 2, 2, 3, 3]]
    policy(c, torch.tensor([True, True]))  # the next evaluation starts every episode afresh
    assert seen[3].tolist() == [[3] * 6, [3] * 6]


def test_check_copy_refuses_its_own_flags_and_a_missing_script_in_one_line(tmp_path, capsys):
    for argv, says in [
        ([str(ROOT / "ppo_wm.py"), "--flags", "--seed 5"], "--seed: check_copy sets it"),
        ([str(tmp_path / "nothing.py")], "not a Python script here"),
        ([str(ROOT / "ppo_wm.py"), "--original", "ppo_nothing"], "--original ppo_nothing: name one of"),
    ]:
        with pytest.raises(SystemExit) as e:
            check_copy.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("check_copy.py: error: ") and says in err[0]
