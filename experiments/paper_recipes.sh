#!/usr/bin/env bash
# Each paper's own recipe (`--recipe paper`, training/recipes.py), one seed each: the rows of docs/results.md,
# "Each paper's own recipe". CPU-hours each on one core (GCA's 50 epochs at batch 2 most); every run saves its
# state after each epoch, so re-running this script continues an interrupted run (--resume) and skips finished ones.
#   bash experiments/paper_recipes.sh                # bcaf hbaf mcfn gca
#   ONLY="gca" bash experiments/paper_recipes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for model in ${ONLY:-bcaf hbaf mcfn gca}; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m training train --model "$model" --name "$model-paper" --dataset paired \
    --recipe paper --context online --window 8 --seeds 0 --runs-dir runs/paired-paper --resume
done
