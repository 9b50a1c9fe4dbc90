#!/usr/bin/env bash
# The MELD-dev and voice-chains rows of docs/results.md. Usage: bash experiments/other.sh [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=("${@:-0 1 2}")
COMMON=(--context online --window 8 --epochs 40 --patience 6 --lr 5e-4 --seeds ${SEEDS[@]} --quiet --workers 2)
HBAF=(--set d_model=128 --set lstm_hidden=64 --set transformer_ff=256 --set gru_hidden=128 --set ffn_dim=256)
T() { .venv/bin/python -m training train "$@" "${COMMON[@]}"; }

T --model text --dataset meld --name text --runs-dir runs/meld                 # text only: no clips here
T --model hbaf --dataset meld --name hbaf-text-only --runs-dir runs/meld --set modalities=text "${HBAF[@]}"
T --model audio --dataset voice-chains --name audio --runs-dir runs/chains
T --model hbaf --dataset voice-chains --name hbaf --runs-dir runs/chains "${HBAF[@]}"
.venv/bin/python -m training compare runs/meld/* --split validation
.venv/bin/python -m training compare runs/chains/* --split validation
