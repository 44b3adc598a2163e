"""docs/extending.md's worked example, done as the page says: a copy of ppo_wm.py with a new world-model loss term
runs, logs the term, learns it, and at weight 0 reproduces ppo_wm.py row for row."""

import subprocess
import sys

from conftest import ROOT, TINY, read_progress

DOC = (ROOT / "docs" / "extending.md").read_text()

DELTA_LOSS = """def delta_loss(encoder, dynamics, obs, actions, next_obs, mask):
    # the latent predicted one step ahead must decode the change of the observation
    z_next = dynamics(encoder(obs), actions[0])
    return masked_mean((dynamics.delta_decoder(z_next) - (next_obs[0] - obs)) ** 2, mask[0])
"""
FLAG = "    delta_weight: float = 0.5  # weight of the delta-decoder loss\n"
HEAD = """    with torch.random.fork_rng():  # its initial weights leave every later random draw as in ppo_wm.py
        dynamics.delta_decoder = nn.Linear(args.z_dim, obs_dim).to(device)
"""
TRAIN = """                term = delta_loss(encoder, dynamics, mb[0], mb[1], mb[2], mb[5])
                wm_loss = wm_loss + args.delta_weight * term
                wm_stats["wm_delta_loss"] = term.detach()
"""


def make_my_wm(path):
    """Applies the page's four edits to a copy of ppo_wm.py, each at the place the page names."""
    for snippet in (DELTA_LOSS, FLAG.strip(), HEAD, TRAIN):
        assert snippet.strip() in DOC  # the test does what the page says, nothing else
    source = (ROOT / "ppo_wm.py").read_text()
    edits = [
        (
            "from wm_common import Dynamics, Encoder, ema_update,",
            "from wm_common import Dynamics, Encoder, ema_update, masked_mean,",
            "",
        ),
        ("def policy_input(", DELTA_LOSS + "\n\n", "before"),
        ("    wm_target_tau: float", FLAG, "after line"),
        ("    dynamics = Dynamics(", HEAD, "after line"),
        ("                wm_loss, wm_stats = world_model_loss(", TRAIN, "after line"),
    ]
    for anchor, text, where in edits:
        assert source.count(anchor) == 1, anchor
        i = source.index(anchor)
        if where == "":
            source = source.replace(anchor, text)
        elif where == "before":
            source = source[:i] + text + source[i:]
        else:
            end = source.index("\n", i) + 1
            source = source[:end] + text + source[end:]
    path.write_text(source)


def run(script, runs_dir, *flags):
    cmd = [sys.executable, str(script), *TINY, "--total-timesteps", "512", "--runs-dir", str(runs_dir), *flags]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    (run_dir,) = runs_dir.iterdir()
    return read_progress(run_dir)


def checked(copy, tmp_path, *argv):
    """check_copy.py on a copy, as the page's recipe ends: every check passes; the kept runs' rows for more checks."""
    cmd = [sys.executable, str(ROOT / "benchmark" / "check_copy.py"), str(copy), *argv, "--keep", str(tmp_path / "c")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.count("PASS ") == 4, out.stdout + out.stderr
    return {name: read_progress(next((tmp_path / "c" / name).iterdir())) for name in ("twin", "control-original")}


def test_the_worked_example_passes_check_copy_logs_its_term_and_changes_the_run(tmp_path):
    make_my_wm(my_wm := tmp_path / "my_wm.py")
    assert 'python benchmark/check_copy.py my_wm.py --flags "--delta-weight 0.5" --control "--delta-weight 0"' in DOC
    rows = checked(my_wm, tmp_path, "--flags", "--delta-weight 0.5", "--control", "--delta-weight 0")
    half, baseline = rows["twin"], rows["control-original"]
    assert all(float(r["wm_delta_loss"]) > 0 for r in half) and float(half[0]["first_ratio_dev"]) < 1e-5
    assert [r["policy_loss"] for r in half] != [r["policy_loss"] for r in baseline]  # the term changes the run


INFO_NCE = """def info_nce(prediction, target, temperature=0.1):
    # per row: the predicted latent must pick out its own target among the batch's targets
    logits = F.normalize(prediction, dim=-1) @ F.normalize(target, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
"""
NCE_FLAGS = """    latent_term: str = "nce"  # the latent term's error: nce (InfoNCE) or mse (ppo_wm.py's squared error)
    latent_weight: float = 1.0  # weight of the latent term (0: the world model learns from the decoder alone)
"""
NCE_CALL = """                error = info_nce if args.latent_term == "nce" else squared_error
                latent_error = lambda p, t: args.latent_weight * error(p, t)  # noqa: E731
                wm_loss, wm_stats = world_model_loss(
                    encoder, dynamics, *mb, target_encoder, args.wm_reward_weight, latent_error=latent_error
                )
"""


def make_my_nce(path):
    """The page's second example: a copy of ppo_wm.py whose latent term is InfoNCE, passed to world_model_loss."""
    for snippet in (INFO_NCE, NCE_FLAGS, NCE_CALL):
        assert snippet.strip() in DOC
    source = (ROOT / "ppo_wm.py").read_text()
    call = (
        "                wm_loss, wm_stats = world_model_loss("
        "encoder, dynamics, *mb, target_encoder, args.wm_reward_weight)\n"
    )
    for anchor, new in [
        (
            "from wm_common import Dynamics, Encoder, ema_update,",
            "from wm_common import Dynamics, Encoder, ema_update, squared_error,",
        ),
        ("import torch.nn as nn\n", "import torch.nn as nn\nimport torch.nn.functional as F\n"),
        ("def policy_input(", INFO_NCE + "\n\ndef policy_input("),
        ("    wm_target_tau: float", NCE_FLAGS + "    wm_target_tau: float"),
        (call, NCE_CALL),
    ]:
        assert source.count(anchor) == 1, anchor
        source = source.replace(anchor, new)
    path.write_text(source)
    changed = subprocess.run(["diff", str(ROOT / "ppo_wm.py"), str(path)], capture_output=True, text=True).stdout
    return sum(line[:1] in "<>" for line in changed.splitlines() if line)


def test_a_replaced_term_is_one_function_passes_check_copy_and_its_weight_zero_has_no_latent_loss(tmp_path):
    assert make_my_nce(my_nce := tmp_path / "my_nce.py") <= 20  # the term, two flags, the call; not the 35-line loss
    assert 'python benchmark/check_copy.py my_nce.py --control\n"--latent-term mse"' in DOC
    rows = checked(my_nce, tmp_path, "--control", "--latent-term mse")
    nce, baseline = rows["twin"], rows["control-original"]
    assert all(float(r["wm_latent_loss"]) > 0 for r in nce) and nce != baseline
    assert all(float(r["wm_latent_loss"]) == 0 for r in run(my_nce, tmp_path / "none", "--latent-weight", "0"))
