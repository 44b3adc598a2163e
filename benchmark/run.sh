#!/usr/bin/env bash
# E1 on this machine (3 scripts x Walker2d/Hopper/HalfCheetah x seeds 1-10 x 1M steps), then the report in
# benchmark/results/E1/. Every flag goes to benchmark/runner.py: --experiment E2|E3|...|E10 (each with
# its own variants, tasks and seeds), --dry-run, --env-ids, --seeds, --total-timesteps, --workers, --slurm,
# --report-only; see `benchmark/run.sh --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmark/runner.py "$@"
