"""Damage is one line, never a new number: shipped run data that is cut short, corrupt, not gzip, empty or edited; a
report whose data does not ship; state files of the wrong shape or cut short; flags the runner sets itself; a variant
name it cannot use; Ctrl-C while it starts. Each ends in one line and exit code 2 (130 for Ctrl-C), nothing written."""

import gzip
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, make_run

sys.path.insert(0, str(ROOT / "benchmark"))
import report  # noqa: E402
import runner  # noqa: E402

E2 = ROOT / "benchmark" / "results" / "E2"


def one_line(capsys, code, got, says):
    err = capsys.readouterr().err.strip().splitlines()
    assert got == code and len(err) == 1 and err[0].startswith("runner.py: error: ") and says in err[0], (got, err)
    return err[0]


def report_only(tmp_path, *argv):
    return runner.main(
        [*argv, "--report-only", "--runs-root", str(tmp_path / "no-runs"), "--results-dir", str(tmp_path)]
    )


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def damaged(data):
    """The shipped data five ways wrong: cut short, a byte flipped, not gzip, empty, edited by hand and re-gzipped."""
    lines = gzip.decompress(data).decode().splitlines(keepends=True)
    run = lines[1].split(",")[0]
    edited = [line for line in lines if not line.startswith(run + ",")] + [
        line for line in lines if line.startswith(run + ",")
    ][:-3]  # one run's last rows dropped
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    return {
        "cut short": data[: len(data) // 2],
        "a byte flipped": bytes(flipped),
        "not gzip": gzip.decompress(data),
        "empty": b"",
        "edited": gzip.compress("".join(edited).encode(), mtime=0),
    }


@pytest.mark.parametrize(
    "how, says",
    [
        ("cut short", "is cut short"),
        ("a byte flipped", "is corrupt (CRC check failed"),
        ("not gzip", "is not gzip"),
        ("empty", "is empty"),
        ("edited", "is not the run data that ships (sha256 "),
    ],
)
def test_damaged_shipped_data_is_one_line_and_changes_no_file(how, says, tmp_path, capsys):
    shutil.copytree(E2, tmp_path / "E2")
    (tmp_path / "E2" / "runs.csv.gz").write_bytes(damaged(E2.joinpath("runs.csv.gz").read_bytes())[how])
    before = files(tmp_path / "E2")
    for force in ([], ["--force"]):  # --force replaces a fuller report; it never makes damaged data whole
        line = one_line(capsys, 2, report_only(tmp_path, "--experiment", "E2", *force), says)
        assert f"{tmp_path / 'E2' / 'runs.csv.gz'} {says}" in line and "restore it (git checkout)" in line
    assert files(tmp_path / "E2") == before


def test_the_data_format_is_checked_where_no_index_records_it(tmp_path):
    # a researcher's own report: no sha256 in the index, but gzip, the columns and the fields are checked
    data = damaged(E2.joinpath("runs.csv.gz").read_bytes())
    for how in ("cut short", "not gzip", "empty"):
        (path := tmp_path / f"{how}.csv.gz").write_bytes(data[how])
        with pytest.raises(report.ReportError) as e:
            report.read_data(str(path))
        assert str(path) in str(e.value)
    lines = gzip.decompress(E2.joinpath("runs.csv.gz").read_bytes()).decode().splitlines(keepends=True)
    fields = lines[1].split(",")
    lines[1] = ",".join(fields[:3] + ["x"] + fields[4:])  # the seed of the first run
    (path := tmp_path / "bad.csv.gz").write_bytes(gzip.compress("".join(lines).encode()))
    with pytest.raises(report.ReportError, match="line 2 is damaged"):
        report.read_data(str(path))


def test_another_results_dir_reads_the_data_that_ships(tmp_path, capsys):
    assert report_only(tmp_path, "--experiment", "E2") == 0  # nothing of E2 in tmp_path: the shipped data
    assert files(tmp_path / "E2") == files(E2)
    out = capsys.readouterr().out
    assert (
        f"reporting from its run data, {E2 / 'runs.csv.gz'}" in out
        and f"sha256 {report.sha256(E2 / 'runs.csv.gz')}" in out
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--experiment", "E5"],
        ["--experiment", "E5", "--variants", "ppo_wm", "ppo_wm_mrq_ema", "ppo_wm_aux_mrq_ema"],
        ["--experiment", "E1", "--env-ids", "Hopper-v4"],
    ],
)
def test_a_report_whose_data_does_not_ship_is_one_line_in_any_form(argv, tmp_path, capsys):
    one_line(capsys, 2, report_only(tmp_path, *argv), "are gone and its run data does not ship")
    assert list(tmp_path.iterdir()) == []  # no report folder, no empty report


def test_a_report_of_nothing_is_one_line(tmp_path, capsys):
    argv = ["--experiment", "mine", "--variants", "ppo", "ppo_wm", "--env-ids", "Hopper-v4"]
    one_line(capsys, 2, report_only(tmp_path, *argv), "no run of this report under")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_summary_is_never_replaced_by_a_smaller_report(tmp_path):
    for seed in range(1, 7):
        make_run(tmp_path / "runs", "ppo", "Hopper-v4", seed, 1000.0 + seed)
    pools, out = [str(tmp_path / "runs" / "ppo")], tmp_path / "out"
    report.write_report(pools, str(out), 1_000_000, ["ppo"], reps=100)
    shutil.rmtree(next((tmp_path / "runs" / "ppo").glob("Hopper-v4__ppo__6__*")))  # a report of 5 runs would shrink it
    for text in ("", (out / "summary.md").read_text()[:500]):  # empty, or cut short by another tool
        (out / "summary.md").write_text(text)
        with pytest.raises(report.ReportError, match="is damaged \\(empty or cut short\\)"):
            report.write_report(pools, str(out), 1_000_000, ["ppo"], reps=100)
        assert (out / "summary.md").read_text() == text


@pytest.mark.parametrize(
    "name, text, says",
    [
        ("config.json", "[]", "config.json is a JSON list, not an object"),
        ("config.json", "{}", "config.json lacks 'exp_name'"),
        ("config.json", '{"exp_name": "ppo"', "config.json cannot be read (not valid JSON)"),
        ("variant.json", '{"scr', "variant.json cannot be read (not valid JSON)"),
        ("variant.json", '{"path": "ppo_continuous.py"}', "variant.json lacks 'script'"),
    ],
)
def test_state_files_of_the_wrong_shape_are_one_line_naming_the_file_and_key(name, text, says, tmp_path, capsys):
    run_dir = make_run(tmp_path / "runs", "ppo", "Hopper-v4", 1, 1000.0)
    (tmp_path / "runs" / "ppo" / "variant.json").write_text(json.dumps({"script": "ppo_continuous.py"}))
    (run_dir / "checkpoint.pt").write_bytes(b"")
    target = run_dir / name if name == "config.json" else tmp_path / "runs" / "ppo" / name
    target.write_text(text)
    argv = ["--experiment", "E1", "--variants", "ppo", "--env-ids", "Hopper-v4", "--seeds", "1", "--dry-run"]
    one_line(capsys, 2, runner.main([*argv, "--runs-root", str(tmp_path / "runs")]), says)


def test_a_cut_diverged_json_is_named_in_the_report_never_a_traceback(tmp_path):
    run_dir = make_run(tmp_path, "ppo", "Hopper-v4", 1, 1000.0)
    (run_dir / "diverged.json").write_text('{"global_step": 20')
    with pytest.raises(report.ReportError, match="diverged.json cannot be read"):
        report.write_report([str(tmp_path / "ppo")], str(tmp_path / "out"), 1_000_000, ["ppo"])
    assert runner.divergence(run_dir).startswith("diverged; ") and "diverged.json" in runner.divergence(run_dir)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--extra", "--seed 5"], "--extra sets --seed, which the runner sets for every run: use --seeds"),
        (
            ["--extra", "--env-id=Walker2d-v4"],
            "--extra sets --env-id, which the runner sets for every run: use --env-ids",
        ),
        (["--extra", "--total-timesteps 4096"], "use --total-timesteps"),
        (["--extra", "--runs-dir elsewhere"], "use --runs-root"),
        (["--variants", "ppo", f"mine={ROOT / 'ppo_wm.py'} --seed 3"], "variant mine sets --seed"),
        (["--variants", "ppo", f"mine={ROOT / 'ppo_wm.py'} --exp-name x"], "use the variant's name"),
    ],
)
def test_the_runner_owns_its_flags(argv, says, tmp_path, capsys):
    common = ["--experiment", "mine", "--env-ids", "Hopper-v4", "--seeds", "1", "--runs-root", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        runner.main([*common, *(["--variants", "ppo"] if "--variants" not in argv else []), *argv])
    one_line(capsys, 2, e.value.code, says)
    assert list(tmp_path.iterdir()) == []


def test_a_variant_name_with_characters_the_runner_cannot_use_says_which(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        runner.main(["--experiment", "mine", "--variants", "ppo", f"my var={ROOT / 'ppo_wm.py'}", "--dry-run"])
    one_line(capsys, 2, e.value.code, "variant name 'my var': use letters, digits, _ - . only, not ' '")


@pytest.mark.parametrize("when", [0.5, 1.5, "running"])
def test_ctrl_c_at_any_moment_of_the_runner_is_one_line(when, tmp_path):
    # while it imports and plans (0.5 s), while it checks the pools (1.5 s on a busy machine), or with runs in training
    cmd = [sys.executable, str(ROOT / "benchmark" / "runner.py"), "--experiment", "mine", "--variants", "ppo", "ppo_wm"]
    cmd += ["--env-ids", "Hopper-v4", "--seeds", "1", "2", "--total-timesteps", "100000", "--runs-root", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if when == "running":
        assert proc.stdout.readline().startswith("4 runs: ")
        time.sleep(1)
    else:
        time.sleep(when)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1 and lines[0].startswith("runner.py: stopped by"), err
    assert not (tmp_path / "reports").exists()  # no report of a stopped runner


def test_a_report_file_is_the_old_one_or_the_new_one_never_half(tmp_path):
    path = tmp_path / "summary.md"
    report.write_whole(str(path), lambda f: f.write("# old\n"))

    def half(f):
        f.write("# new, half of it")
        raise KeyboardInterrupt("killed during the write")

    with pytest.raises(KeyboardInterrupt):
        report.write_whole(str(path), half)
    assert path.read_text() == "# old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.md"]
