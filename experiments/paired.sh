#!/usr/bin/env bash
# The paired-data comparison of docs/results.md. Usage: [ONLY="bclstm mcfn"] bash experiments/paired.sh [SEEDS...]
# ONLY restricts the run to the named rows (their --name).
# Every model uses the same compact widths so that the whole table trains on a 2-core CPU;
# the paper-size HBAF (d_model 512) is `python -m training train --model hbaf` with no --set.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=("${@:-0 1 2}")
COMMON=(--dataset paired --context online --window 8 --epochs 40 --patience 6 --lr 5e-4 --seeds ${SEEDS[@]} --quiet
        --runs-dir runs/paired)
HBAF=(--set d_model=128 --set lstm_hidden=64 --set transformer_ff=256 --set gru_hidden=128 --set ffn_dim=256)
T() {
  local args=("$@") name="" i
  for ((i = 0; i < ${#args[@]} - 1; i++)); do [[ ${args[i]} == --name ]] && name=${args[i + 1]}; done
  if [[ -n ${ONLY:-} && " ${ONLY} " != *" ${name} "* ]]; then return 0; fi
  .venv/bin/python -m training train "$@" "${COMMON[@]}"
}

T --model text --name text
T --model audio --name audio
T --model bclstm --name bclstm
T --model hbaf --name hbaf "${HBAF[@]}"
for block in audio_context fusion bimodal_attention filter_gate residual contrastive; do
  T --model hbaf --name "hbaf-no-${block}" --ablate "$block" "${HBAF[@]}"
done
T --model hbaf --name hbaf-audio-only --set modalities=audio "${HBAF[@]}"
T --model hbaf --name hbaf-text-only --set modalities=text "${HBAF[@]}"
T --model bcaf --name bcaf --set d_model=128 --set latent_dim=128 --set heads=4 --set ffn_dim=256 --set attention_layers=1
T --model gca --name gca --set d_model=128 --set ffn_dim=256 --set shared_dim=64
T --model mcfn --name mcfn --set conv_channels=[64,64,64] --set text_width=128
[[ -n ${ONLY:-} ]] || .venv/bin/python -m training compare runs/paired/* --split validation
