#!/usr/bin/env bash
# Reproduce the bundled model and every number in docs/model-card.md.
#   bash experiments/model_card.sh            # evaluate streamer/assets/default.pt
#   TRAIN=1 bash experiments/model_card.sh    # retrain it first (about 10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-runs/model-card}
mkdir -p "$OUT"
if [ "${TRAIN:-0}" = 1 ]; then
  $PY -m training train --model hbaf --dataset paired --name default-hbaf --window 8 \
    --set d_model=128 --set lstm_hidden=64 --set transformer_ff=256 --set gru_hidden=128 --set ffn_dim=256 \
    --set dropout=0.2 --audio-dropout 0.2 --text-dropout 0.3 --lr 5e-4 --epochs 60 --patience 8 --quiet
  cp runs/default-hbaf-s0/model.pt streamer/assets/default.pt
fi
CK=streamer/assets/default.pt
E() { $PY -m training evaluate "$CK" --quiet "$@"; }
E --dataset paired --split validation --output "$OUT/paired-val.json"
E --dataset paired --split validation --hide audio --output "$OUT/paired-val-text-only.json"
E --dataset paired --split validation --hide text --output "$OUT/paired-val-audio-only.json"
E --dataset paired --split test --output "$OUT/paired-test.json"
E --dataset voice-chains --split validation --output "$OUT/voice-chains-val.json"
E --dataset meld --split dev --option audio=False --output "$OUT/meld-dev-text.json"
$PY -m training make-recordings --dataset voice-chains --split validation --limit 10 --out "$OUT/chains"
$PY -m training e2e recordings/demo-kitchen.flac recordings/demo-office.flac --output "$OUT/e2e-demos.json"
$PY -m training e2e "$OUT"/chains/*.flac --output "$OUT/e2e-chains.json"
