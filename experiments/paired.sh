#!/usr/bin/env bash
# The paired-data comparison of docs/results.md. Usage: [ONLY="bclstm mcfn"] bash experiments/paired.sh [SEEDS...]
# ONLY restricts the run to the named rows (their --name). PY=... picks the interpreter (default .venv/bin/python).
# EXTRA adds flags to every row, e.g. EXTRA="--epochs 2" caps the epochs (docs/results.md says where that was done).
# Every row uses the compact recipe (`--recipe compact`: Adam lr 5e-4, L2 3e-4, 32 dialogues a batch, patience 6,
# at most 40 epochs, and each model's compact widths, see training/recipes.py) so that the whole table trains on a
# 2-core CPU; each paper's own settings are `--recipe paper`, the default of `python -m training train`.
# HBAF rows pin speaker_state=False: the rows of the first table ran before per-speaker GRU_i became the default,
# and a corrected row must differ from its old row by the fix alone. hbaf-speakers measures the per-speaker state.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=("${@:-0 1 2}")
COMMON=(--dataset paired --recipe compact --context online --window 8 --seeds ${SEEDS[@]} --quiet
        --runs-dir runs/paired)
HBAF=(--model hbaf --set speaker_state=False)
T() {
  local args=("$@") name="" i
  for ((i = 0; i < ${#args[@]} - 1; i++)); do [[ ${args[i]} == --name ]] && name=${args[i + 1]}; done
  if [[ -n ${ONLY:-} && " ${ONLY} " != *" ${name} "* ]]; then return 0; fi
  # shellcheck disable=SC2086
  "$PY" -m training train "$@" "${COMMON[@]}" ${EXTRA:-}
}

T --model text --name text
T --model audio --name audio
T --model bclstm --name bclstm
T "${HBAF[@]}" --name hbaf
for block in audio_context fusion bimodal_attention filter_gate residual contrastive; do
  T "${HBAF[@]}" --name "hbaf-no-${block}" --ablate "$block"
done
T "${HBAF[@]}" --name hbaf-audio-only --set modalities=audio
T "${HBAF[@]}" --name hbaf-text-only --set modalities=text
T --model hbaf --name hbaf-speakers --set speaker_state=True
T --model bcaf --name bcaf
T --model gca --name gca                                     # the paper's GCA: frames and tokens of each utterance
T --model gca --name gca-dialogue --set level=dialogue       # ours: GCA's blocks over the dialogue's utterances
T --model mcfn --name mcfn                                   # additive co-attention (the paper's), the default now
T --model mcfn --name mcfn-eq3 --set coattention_score=eq3   # the co-attention of the first table
[[ -n ${ONLY:-} ]] || "$PY" -m training compare runs/paired/* --split validation
