#!/usr/bin/env bash
# E10 on this machine (4 scripts x Walker2d/Hopper/HalfCheetah/Ant x seeds 1-10 x 1M steps), then the report in
# benchmark/results/E10/ (the README's table; --report-only makes it again from the run data that ships). Every flag
# goes to benchmark/runner.py: --experiment E1|E2|...|E9 (each with its own variants, tasks and seeds), --dry-run,
# --env-ids, --seeds, --total-timesteps, --workers, --slurm, --report-only; see `benchmark/run.sh --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmark/runner.py "$@"
