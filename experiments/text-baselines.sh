#!/usr/bin/env bash
# Frozen-encoder baselines of the text branch (logistic regression, C chosen on validation).
set -e
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/python -m training text-tune --frozen --name minilm-frozen-ctx0 --context-turns 0
.venv/bin/python -m training text-tune --frozen --name minilm-frozen-ctx2 --context-turns 2
.venv/bin/python -m training text-tune --frozen --name mpnet-frozen-ctx2 --context-turns 2 --encoder .cache/all-mpnet-base-v2
