"""Turns run directories into a Markdown summary and PNG figures (rliable's statistics: Agarwal et al. 2021).

    python benchmark/report.py benchmark/results/E1 runs/benchmark/ppo runs/benchmark/ppo_wm runs/benchmark/ppo_wm_aux

Score of a run: mean raw return of its last 100 training episodes (`return_last100` of the last progress.csv row).
Per task and variant: mean +- std over seeds, interquartile mean (IQM) with a 95% stratified-bootstrap confidence
interval, probability of improvement over the baseline variant, score at 200k / 500k / 1M (2M, 3M, ...) steps that the
runs reached and the probability of improvement at each of them (does a difference last?), per-seed scores at the end
and at 1M, 2M, ... steps before it, wall time and steps/s. Runs that stopped short of the requested steps, and runs
that diverged, are listed and left out of every statistic; with fewer than 5 seeds the intervals are not shown. Two
runs of one variant, task and seed stop the report, and so does a report with fewer runs than the one it would replace
(unless --force).
"""

import argparse
import csv
import glob
import gzip
import hashlib
import io
import json
import os
import re
import warnings
import zlib

import numpy as np

CHECKPOINTS = (200_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 5_000_000, 10_000_000)  # those a run reaches
MIN_SEEDS = 5  # fewer seeds per variant: intervals too wide to mean anything, not shown


DATA = "runs.csv.gz"  # a report's run data, beside its summary.md: the report is made again from it without the runs
RUN_FIELDS = ["run", "variant", "env_id", "seed", "batch_size", "code", "diverged_step", "diverged_nonfinite", "damage"]
RUN_FIELDS += ["last_step"]
# the progress.csv columns the report reads
ROW_FIELDS = ["global_step", "return_last100", "wall_time", "z_drift", "z_effective_rank"]


class ReportError(Exception):
    """The report would be wrong or would replace a fuller one: one line, nothing written."""


def write_whole(path, write, mode="w"):
    """write(file) into a file beside path, synced, then renamed over it: a crash leaves the old file or the new one.
    The temporary file is this process's own: two runners writing one pool's variant.json never share it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path, keys):
    """A JSON object with these keys, or a ReportError naming the file and what is wrong with it."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or "not valid JSON"
        raise ReportError(f"{path} cannot be read ({why}): restore it, or move {os.path.dirname(path)} aside") from None
    if not isinstance(value, dict) or (missing := [k for k in keys if k not in value]):
        what = (
            f"lacks {missing[0]!r}" if isinstance(value, dict) else f"is a JSON {type(value).__name__}, not an object"
        )
        raise ReportError(f"{path} {what}: restore it, or move {os.path.dirname(path)} aside")
    return value


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def iqm(x):
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean(x, 0.25), as rliable)."""
    x = np.sort(np.asarray(x, dtype=float))
    n = len(x)
    lo = int(np.floor(n * 0.25))
    return float(x[lo : n - lo].mean())


def mean_std(x):
    """ "mean ± std" over seeds (sample std; 0 for one seed)."""
    return f"{x.mean():.0f} ± {x.std(ddof=1) if len(x) > 1 else 0:.0f}"


def probability_of_improvement(x, y):
    """P(X > Y) for one task: the Mann-Whitney U statistic over all seed pairs, ties counting one half."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    return float(((x > y) + 0.5 * (x == y)).mean())


def bootstrap_ci(samples, statistic, reps=2000, seed=0, alpha=0.05):
    """Percentile CI of statistic(*resampled) where each array in samples is resampled (with replacement) on its own:
    the stratified bootstrap of rliable, strata being tasks (and variants)."""
    rng = np.random.default_rng(seed)
    stats = [statistic(*[s[rng.integers(0, len(s), len(s))] for s in map(np.asarray, samples)]) for _ in range(reps)]
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def read_progress(run_dir):
    """(rows, damage) of a run's progress.csv: its complete rows, and None or what is damaged: a row cut short (a crash
    while writing: no newline) or with missing fields, or a file that cannot be read. A missing file has no rows."""
    try:
        with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return [], None
    except OSError as e:
        return [], f"progress.csv cannot be read ({e.strerror})"
    rows = []
    for i, row in enumerate(csv.DictReader(lines)):
        if None in row or None in row.values() or not row["global_step"].isdigit() or not lines[i + 1].endswith("\n"):
            return rows, f"progress.csv line {i + 2} is damaged (cut short or fields missing)"
        rows.append(row)
    return rows, None


def load_runs(variant_dirs):
    """The runs in these pools (folders of run directories) as the report reads them: a run directory that cannot be
    read is a ReportError, never skipped."""
    runs = []
    for run_dir in sorted(os.path.normpath(d) for pool in variant_dirs for d in glob.glob(os.path.join(pool, "*", ""))):
        config = read_json(os.path.join(run_dir, "config.json"), ["exp_name", "env_id", "seed", "batch_size"])
        rows, damage = read_progress(run_dir)
        diverged = None
        if os.path.isfile(marker := os.path.join(run_dir, "diverged.json")):
            diverged = read_json(marker, ["global_step", "nonfinite"])
        starts = config.get("trained_with", [])
        runs.append(
            {
                "name": os.path.relpath(run_dir, os.path.dirname(os.path.dirname(run_dir))),  # <pool>/<run>
                "variant": config["exp_name"],
                "env_id": config["env_id"],
                "seed": config["seed"],
                "batch_size": config["batch_size"],
                "code": sorted(
                    {
                        s["code_sha256"] + (f" ({', '.join(s['code_files'])})" if "code_files" in s else "")
                        for s in starts
                    }
                ),
                "diverged": diverged,
                "damage": damage,
                "last_step": int(rows[-1]["global_step"]) if rows else 0,
                "rows": [r for r in rows if r["return_last100"]],  # the iterations after the first finished episode
            }
        )
    return runs


def write_data(runs, path):
    """The runs as the report reads them, a line per scored progress.csv row (a run without one: a line without a
    step), gzipped without a timestamp: the same runs give the same bytes. Written beside the report, then renamed."""

    def write(raw):
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, io.TextIOWrapper(gz, newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(RUN_FIELDS + ROW_FIELDS)
            for r in sorted(runs, key=lambda r: r["name"]):
                diverged = r["diverged"] or {}
                head = [r["name"], r["variant"], r["env_id"], r["seed"], r["batch_size"], "; ".join(r["code"])]
                head += [
                    diverged.get("global_step", ""),
                    diverged.get("nonfinite", ""),
                    r["damage"] or "",
                    r["last_step"],
                ]
                writer.writerows(
                    head + [row.get(c, "") for c in ROW_FIELDS] for row in r["rows"] or [dict.fromkeys(ROW_FIELDS, "")]
                )

    write_whole(path, write, "wb")


def read_data(path):
    """The runs of a report's run data (write_data), as load_runs returns them; a ReportError naming the file and
    what is wrong if it is not gzip, is cut short or corrupt, has other columns or a field that is not a number."""
    if os.path.getsize(path) == 0:
        raise ReportError(f"{path} is empty; restore it (git checkout)")
    try:
        with gzip.open(path, "rt", newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
        what = "is cut short" if isinstance(e, EOFError) else f"is corrupt ({e})"
        what = "is not gzip" if str(e).startswith("Not a gzipped file") else what
        raise ReportError(f"{path} {what}; restore it (git checkout)") from None
    if not lines or lines[0] != RUN_FIELDS + ROW_FIELDS:
        raise ReportError(f"{path} holds no run data (no rows, or other columns); restore it (git checkout)")
    runs, numbers = {}, ("seed", "batch_size", "last_step")
    for number, values in enumerate(lines[1:], start=2):
        line = dict(zip(lines[0], values))
        if len(values) != len(lines[0]) or not all(line[k].isdigit() for k in numbers):
            raise ReportError(f"{path} line {number} is damaged (a field missing or not a number); restore it")
        if line["run"] not in runs:
            diverged = {"global_step": int(line["diverged_step"] or 0), "nonfinite": line["diverged_nonfinite"]}
            runs[line["run"]] = {
                "name": line["run"],
                "variant": line["variant"],
                "env_id": line["env_id"],
                "seed": int(line["seed"]),
                "batch_size": int(line["batch_size"]),
                "code": line["code"].split("; ") if line["code"] else [],
                "diverged": diverged if line["diverged_step"] else None,
                "damage": line["damage"] or None,
                "last_step": int(line["last_step"]),
                "rows": [],
            }
        if line["global_step"]:
            runs[line["run"]]["rows"].append({c: line.get(c, "") for c in ROW_FIELDS})
    return list(runs.values())


def scored_in_summary(path):
    """(variant, task, seed) of each run an existing summary.md scores: its per-seed table (none if there is none)."""
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        text = f.read()
    if not (text.startswith("# ") and text.endswith("\n")):  # a report writes it whole: this one was damaged
        raise ReportError(f"{path} is damaged (empty or cut short): restore it (git checkout), or --force replaces it")
    table = text.split("Per-seed scores", 1)[1].split("\n\n", 2)[1] if "Per-seed scores" in text else ""
    cells = [line.split("|")[1:4] for line in table.splitlines()[2:]]
    return {
        (v.strip(), t.strip(), int(seed))
        for t, v, scores in cells
        for seed in re.findall(r"(?:^|, )(\d+): ", scores.strip())
    }


def score_at(rows, step):
    """Mean return of the last 100 episodes as of the last iteration at or before step."""
    before = [r for r in rows if int(r["global_step"]) <= step]
    return float(before[-1]["return_last100"]) if before else None


def at_step(group, step):
    """The scores at step of the runs of group that reached it (a run of fewer steps counts at its last)."""
    at = [score_at(r["rows"], step) for r in group if r["last_step"] >= min(step, r["wanted"])]
    return np.array([a for a in at if a is not None])


def time_to_score(group, threshold):
    """First global step at which the mean over seeds of return_last100 reaches threshold, and the mean wall time
    (seconds) of the seeds at that step; (None, None) if it never does. Runs share their iteration grid."""
    by_step = {}
    for r in group:
        for row in r["rows"]:
            by_step.setdefault(int(row["global_step"]), []).append(
                (float(row["return_last100"]), float(row["wall_time"]))
            )
    for step in sorted(by_step):
        values = by_step[step]
        if len(values) == len(group) and np.mean([v for v, _ in values]) >= threshold:
            return step, float(np.mean([w for _, w in values]))
    return None, None


def curve(rows, grid):
    steps = np.array([int(r["global_step"]) for r in rows])
    values = np.array([float(r["return_last100"]) for r in rows])
    return np.interp(grid, steps, values, left=np.nan, right=np.nan)


def p_cell(x, y, reps):
    """P(x > y) with its interval, or with 'too few seeds' below MIN_SEEDS, or '–' without runs."""
    if not (len(x) and len(y)):
        return "–"
    if min(len(x), len(y)) < MIN_SEEDS:
        return f"{probability_of_improvement(x, y):.2f}, too few seeds"
    lo, hi = bootstrap_ci([x, y], probability_of_improvement, reps)
    return f"{probability_of_improvement(x, y):.2f} [{lo:.2f}, {hi:.2f}]"


def table_at_steps(heading, rows, checkpoints):
    """A table with a cell per step under its heading, or nothing if it has no row (never an empty heading)."""
    if not rows:
        return []
    columns = "| task | variant |" + "".join(f" @{s // 1000}k |" for s in checkpoints)
    return ["", heading, "", columns, "|---|---|" + "---|" * len(checkpoints), *rows]


def write_report(
    variant_dirs,
    out_dir,
    total_timesteps,
    baselines=(),
    reps=2000,
    title=None,
    env_ids=None,
    seeds=None,
    threshold=2000,
    force=False,
    data=None,
    labels=None,
    seed_sets=None,
):
    """variant_dirs: pools of runs, one per variant (with data, a report's run data file: their names in it); env_ids
    and seeds select runs; baselines: the pools the others are compared with; labels: {pool: name to show};
    seed_sets: {name: seeds}, to give P pooled over several seed sets as well as each set's. Raises
    ReportError, before writing anything, on two runs of one seed, an unreadable run, or when out_dir holds a report
    of runs this one does not have (unless force). Writes summary.md, learning_curves.png and the run data it read."""
    pools = [os.path.basename(os.path.normpath(d)) for d in variant_dirs]
    labels = {pool: (labels or {}).get(pool, pool) for pool in pools}
    runs = [
        r
        for r in (read_data(data) if data else load_runs(variant_dirs))
        if r["variant"] in pools and (not env_ids or r["env_id"] in env_ids) and (not seeds or r["seed"] in seeds)
    ]
    by_key = {}
    for r in runs:
        key = (r["variant"], r["env_id"], r["seed"])
        if key in by_key:
            raise ReportError(f"two runs of {' '.join(map(str, key))}: {by_key[key]} and {r['name']}; move one aside")
        by_key[key] = r["name"]
    complete, lists = [], {"diverged": [], "damaged": [], "no episode": [], "incomplete": []}
    for r in runs:
        r["wanted"] = (total_timesteps // r["batch_size"]) * r["batch_size"]
        status = "diverged" if r["diverged"] else "damaged" if r["damage"] else "incomplete"
        status = "no episode" if status == "incomplete" and r["last_step"] >= r["wanted"] and not r["rows"] else status
        (complete if status == "incomplete" and r["last_step"] >= r["wanted"] else lists[status]).append(r)
    summary_path = os.path.join(out_dir, "summary.md")
    missing = scored_in_summary(summary_path) - {(labels[r["variant"]], r["env_id"], r["seed"]) for r in complete}
    if missing and not force:
        v, t, seed = sorted(missing)[0]
        raise ReportError(
            f"{summary_path} scores {len(missing)} runs this report does not have ({v} on {t}, seed {seed}, ...): "
            "nothing written (check --runs-root, the variants and seeds; --force replaces it)"
        )
    os.makedirs(out_dir, exist_ok=True)
    checkpoints = [s for s in CHECKPOINTS if s <= total_timesteps]
    tasks = sorted({r["env_id"] for r in complete})
    variants = sorted(
        {r["variant"] for r in complete},
        key=lambda v: (v not in baselines, list(baselines).index(v) if v in baselines else 0, v),
    )
    baselines = [b for b in baselines if b in variants]
    groups = {(t, v): [r for r in complete if r["env_id"] == t and r["variant"] == v] for t in tasks for v in variants}
    scores = {key: np.array([float(r["rows"][-1]["return_last100"]) for r in group]) for key, group in groups.items()}
    earlier = {key: {step: at_step(group, step) for step in checkpoints} for key, group in groups.items()}

    lines = [
        f"# {title or os.path.basename(os.path.normpath(out_dir))}: {total_timesteps:,} steps per run",
        "",
        "Score: mean raw return of the last 100 training episodes of a run. "
        "IQM and probability of improvement with 95% "
        f"stratified-bootstrap confidence intervals ({reps} resamples of seeds).",
        "",
    ]
    header = "| task | variant | seeds | mean ± std | IQM [95% CI] |" + "".join(
        f" P(> {labels[b]}) [95% CI] |" for b in baselines
    )
    header += (
        "".join(f" @{s // 1000}k |" for s in checkpoints)
        + f" mean passes {threshold}: step (wall min) | wall min | steps/s |"
    )
    lines += [header, "|" + "---|" * (header.count("|") - 1)] if complete else ["No run has reached its steps."]
    for t in tasks:
        for v in variants:
            s, group = scores[(t, v)], groups[(t, v)]
            if len(s) == 0:
                continue
            lost = sum(r["env_id"] == t and r["variant"] == v for r in lists["diverged"])
            ci = f"[{', '.join(f'{c:.0f}' for c in bootstrap_ci([s], iqm, reps))}]" if len(s) >= MIN_SEEDS else "–"
            seeds_cell = f"{len(s)}" + (f" (+{lost} diverged)" if lost else "")
            row = f"| {t} | {labels[v]} | {seeds_cell} | {mean_std(s)} | {iqm(s):.0f} {ci} |"
            row += "".join(" – |" if v == b else f" {p_cell(s, scores[(t, b)], reps)} |" for b in baselines)
            row += "".join(f" {np.mean(at):.0f} |" if len(at) else " – |" for at in earlier[(t, v)].values())
            step, wall = time_to_score(group, threshold)
            row += f" {step:,} ({wall / 60:.1f}) |" if step else " never |"
            walls = [float(r["rows"][-1]["wall_time"]) for r in group]
            sps = [int(r["rows"][-1]["global_step"]) / float(r["rows"][-1]["wall_time"]) for r in group]
            lines.append(row + f" {np.mean(walls) / 60:.1f} | {np.mean(sps):,.0f} |")
    for b in baselines if len(checkpoints) > 1 else []:  # does a difference last, or only come earlier?
        rows = [
            f"| {t} | {labels[v]} |"
            + "".join(f" {p_cell(earlier[(t, v)][step], earlier[(t, b)][step], reps)} |" for step in checkpoints)
            for t in tasks
            for v in variants
            if v != b and groups[(t, v)] and groups[(t, b)]
        ]
        heading = f"P(variant > {labels[b]}) [95% CI] at each step (the scores at that step, as in @ columns):"
        lines += table_at_steps(heading, rows, checkpoints)
    # per seed, so a result can be checked and compared seed by seed without the runs
    for step in [None] + [s for s in checkpoints[:-1] if s >= 1_000_000]:  # the end, and the lengths of shorter runs
        rows = []
        for (t, v), group in [(key, group) for key, group in groups.items() if group]:
            by_seed = sorted(group, key=lambda r: r["seed"])
            at = [score_at(r["rows"], step) if step else float(r["rows"][-1]["return_last100"]) for r in by_seed]
            rows += [f"| {t} | {labels[v]} | " + ", ".join(f"{r['seed']}: {a:.0f}" for r, a in zip(by_seed, at)) + " |"]
        if rows:
            lines += ["", f"Per-seed scores{f' at {step // 1000}k steps' if step else ''} (seed: score):", ""]
            lines += ["| task | variant | scores |", "|---|---|---|", *rows]
    for b in baselines if seed_sets and len(seed_sets) > 1 else []:
        rows = []
        for (t, v), group in groups.items():
            if v == b or not group or not groups.get((t, b)):
                continue
            cells = []
            for step in checkpoints:
                # P within each seed set, and their mean: the sets are strata, each arm resampled within each set
                arms = [
                    [at_step([r for r in groups[(t, arm)] if r["seed"] in seeds], step) for seeds in seed_sets.values()]
                    for arm in (v, b)
                ]
                if not all(len(x) for arm in arms for x in arm):
                    cells.append("–")
                    continue
                k = len(seed_sets)

                def pooled(*x):
                    return float(np.mean([probability_of_improvement(x[i], x[k + i]) for i in range(k)]))

                lo, hi = bootstrap_ci(arms[0] + arms[1], pooled, reps)
                each = ", ".join(
                    f"{name} {probability_of_improvement(x, y):.2f}" for name, x, y in zip(seed_sets, *arms)
                )
                cells.append(f"{pooled(*arms[0], *arms[1]):.2f} [{lo:.2f}, {hi:.2f}] ({each})")
            rows.append(f"| {t} | {labels[v]} | " + " | ".join(cells) + " |")
        heading = (
            f"P(variant > {labels[b]}) pooled over the seed sets {', '.join(seed_sets)} [95% CI] (each set's P): the "
            "mean of each set's P, which pairs runs within a set only; the P above pairs every run with every run, "
            "across the sets too, so the two may differ a little:"
        )
        lines += table_at_steps(heading, rows, checkpoints)
    few = sorted({t for (t, v), s in scores.items() if 0 < len(s) < MIN_SEEDS})
    if few:
        lines += [
            "",
            f"Too few seeds: {', '.join(few)} has fewer than {MIN_SEEDS} seeds per variant; intervals that wide mean "
            "nothing, so none is shown there (and no average over tasks).",
        ]
    for b in baselines if len(tasks) > 1 and not few else []:
        averages = []
        for v in variants:
            if v == b or not all(len(scores[(t, v)]) and len(scores[(t, b)]) for t in tasks):
                continue
            samples, k = [scores[(t, v)] for t in tasks] + [scores[(t, b)] for t in tasks], len(tasks)

            def avg_poi(*s):
                return float(np.mean([probability_of_improvement(s[i], s[k + i]) for i in range(k)]))

            lo, hi = bootstrap_ci(samples, avg_poi, reps)
            averages.append(f"- {labels[v]}: {avg_poi(*samples):.2f} [{lo:.2f}, {hi:.2f}]")
        if averages:
            lines += [
                "",
                f"Average probability of improvement over {labels[b]} across tasks (rliable's aggregate):",
                "",
                *averages,
            ]
    said = {
        "diverged": (
            "Diverged runs (a loss, a parameter or an observation became NaN or infinite), not scored:",
            lambda r: f"{r['diverged']['nonfinite']} at step {r['diverged']['global_step']:,}",
        ),
        "damaged": (
            "Damaged runs, not scored (resume one that has not finished: the damaged rows go; else train it again):",
            lambda r: r["damage"],
        ),
        "no episode": (
            "Runs that finished without finishing an episode, so without a score:",
            lambda r: f"no episode ended in its {r['last_step']:,} steps",
        ),
        "incomplete": (
            "Incomplete runs, left out of every number above:",
            lambda r: f"{r['last_step']:,} of {r['wanted']:,} steps",
        ),
    }
    for status, (heading, what) in said.items():
        if lists[status]:
            lines += ["", heading, "", *[f"- {r['name']}: {what(r)}" for r in lists[status]]]
    versions = {}
    for r in complete:
        versions.setdefault(r["variant"], {}).setdefault("; ".join(r["code"]) or "not recorded", []).append(r)
    if any(code != "not recorded" for by_code in versions.values() for code in by_code):
        lines += [
            "",
            "Code the scored runs were trained with (config.json's trained_with: sha256 of the files named):",
            "",
        ]
        lines += [
            f"- {labels[v]}: " + "; ".join(f"{code} ({len(rs)} runs)" for code, rs in by_code.items())
            for v, by_code in versions.items()
        ]
    lines += drift_section(complete, tasks, variants, labels, total_timesteps, out_dir)
    if complete:
        plot_curves(
            complete, tasks, variants, labels, total_timesteps, os.path.join(out_dir, "learning_curves.png"), reps
        )
        lines += [
            "",
            "![learning curves](learning_curves.png)",
            "",
            "Curves: mean over seeds of the last-100-episode return, band = 95% bootstrap CI of the mean.",
        ]
    write_whole(summary_path, lambda f: f.write("\n".join(lines) + "\n"))
    write_data(runs, os.path.join(out_dir, DATA))
    print("\n".join(lines))
    return scores, [r for status in lists.values() for r in status]


def spearman(x, y):
    """Spearman's rank correlation (no ties expected among continuous values)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def drift_section(runs, tasks, variants, labels, total_timesteps, out_dir):
    """For the world-model runs (progress.csv's z_drift): how far z moved late in the run and how many directions it
    used (z_effective_rank), per seed, beside how the score changed over the same steps, and the drift curves
    (z_drift.png). Late: after 1M steps in a longer run, else the second half."""
    start = 1_000_000 if total_timesteps > 1_000_000 else total_timesteps // 2
    lines, curves = [], {}
    for t in tasks:
        for v in variants:
            group = sorted((r for r in runs if r["env_id"] == t and r["variant"] == v), key=lambda r: r["seed"])
            late = {
                key: [
                    [float(row[key]) for row in r["rows"] if int(row["global_step"]) > start and row.get(key)]
                    for r in group
                ]
                for key in ("z_drift", "z_effective_rank")
            }
            if not group or not all(late["z_drift"]) or not all(late["z_effective_rank"]):
                continue
            drift = np.array([np.mean(d) for d in late["z_drift"]])
            rank = np.array([np.mean(k) for k in late["z_effective_rank"]])
            change = np.array([float(r["rows"][-1]["return_last100"]) - score_at(r["rows"], start) for r in group])
            per_seed = ", ".join(
                f"{r['seed']}: {d:.3f} / {k:.1f} / {c:+.0f}" for r, d, k, c in zip(group, drift, rank, change)
            )
            rho = [f"{spearman(x, change):+.2f}" if len(group) >= 3 else "–" for x in (drift, rank)]
            lines.append(
                f"| {t} | {labels[v]} | {drift.mean():.3f} | {rank.mean():.1f} | {change.mean():+.0f} "
                f"| {rho[0]} | {rho[1]} | {per_seed} |"
            )
            curves[(t, v)] = group
    if not lines:
        return []
    plot_drift(curves, labels, variants, total_timesteps, os.path.join(out_dir, "z_drift.png"))
    return [
        "",
        f"The latent after {start // 1000}k steps (z_drift: how far z moves per iteration for fixed inputs, relative "
        "to its spread; z_effective_rank: how many directions z uses; docs/world-model.md) beside the score's change "
        f"from {start // 1000}k to the end, with Spearman's ρ over seeds between each and the change:",
        "",
        "| task | variant | late z_drift (mean) | late z_effective_rank (mean) | score change (mean) "
        "| ρ (drift, change) | ρ (rank, change) | per seed: drift / rank / change |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        "![z drift](z_drift.png)",
    ]


def plot_drift(curves, labels, variants, total_timesteps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, total_timesteps, 101)[1:]
    warnings.filterwarnings("ignore", "Mean of empty slice")  # grid points before a run's first logged drift
    tasks = sorted({t for t, _ in curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for (task, v), group in curves.items():
            if task == t:
                rows = [[row for row in r["rows"] if row.get("z_drift")] for r in group]
                drift = [
                    np.interp(grid, [int(x["global_step"]) for x in rs], [float(x["z_drift"]) for x in rs], left=np.nan)
                    for rs in rows
                ]
                color = f"C{variants.index(v) % 10}"  # as in learning_curves.png
                ax.plot(grid, np.nanmean(drift, 0), color=color, label=f"{labels[v]} (n={len(group)})")
        ax.set_yscale("log")
        ax.set_title(t)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("z_drift (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_whole(path, lambda f: fig.savefig(f, dpi=110, format="png"), "wb")
    plt.close(fig)


def plot_curves(runs, tasks, variants, labels, total_timesteps, path, reps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, total_timesteps, 101)[1:]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    rng = np.random.default_rng(0)
    warnings.filterwarnings("ignore", "Mean of empty slice|All-NaN slice")  # grid points before a run's first iteration
    for ax, t in zip(axes[0], tasks):
        for v in variants:
            curves = np.array([curve(r["rows"], grid) for r in runs if r["env_id"] == t and r["variant"] == v])
            if len(curves) == 0:
                continue
            mean = np.nanmean(curves, 0)
            boots = np.array(
                [np.nanmean(curves[rng.integers(0, len(curves), len(curves))], 0) for _ in range(min(reps, 500))]
            )
            color = f"C{variants.index(v) % 10}"  # a variant keeps its colour in every figure of the report
            ax.plot(grid, mean, color=color, label=f"{labels[v]} (n={len(curves)})")
            ax.fill_between(
                grid, np.nanquantile(boots, 0.025, 0), np.nanquantile(boots, 0.975, 0), facecolor=color, alpha=0.2
            )
        ax.set_title(t)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (last 100 episodes)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    write_whole(path, lambda f: fig.savefig(f, dpi=110, format="png"), "wb")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where summary.md and the figures go")
    parser.add_argument("variant_dirs", nargs="+", help="one folder of runs per variant, e.g. runs/benchmark/ppo")
    parser.add_argument("--total-timesteps", type=int, default=1_000_000, help="steps each run should have reached")
    parser.add_argument(
        "--baselines", nargs="+", help="variants the others are compared with (default: the first folder's)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="report only these seeds (default: all in the folders)")
    parser.add_argument("--env-ids", nargs="+", help="report only these tasks (default: all in the folders)")
    parser.add_argument("--force", action="store_true", help="replace a report of more runs than this one")
    args = parser.parse_args(argv)
    for d in args.variant_dirs:
        if not os.path.isdir(d):
            parser.error(f"{d} is not a folder")
    try:
        write_report(
            args.variant_dirs,
            args.out_dir,
            args.total_timesteps,
            args.baselines or [os.path.basename(os.path.normpath(args.variant_dirs[0]))],
            env_ids=args.env_ids,
            seeds=args.seeds,
            force=args.force,
        )
    except ReportError as e:
        parser.exit(2, f"report.py: error: {e}\n")
    except OSError as e:  # the report's folder cannot be written
        parser.exit(4, f"report.py: error: cannot write {e.filename or 'a file'} ({e.strerror})\n")


if __name__ == "__main__":
    main()
