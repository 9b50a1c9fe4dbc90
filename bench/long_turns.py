"""Render a recording of long turns (> 6 s) for the latency benchmark's "> 6 s" bucket.

    python bench/long_turns.py [--turns 44] [--out .cache-bench/long-turns.flac]
    python bench/long_turns.py --turns 40 --min-s 0.8 --max-s 1.9 --out .cache-bench/short-turns.flac

MELD *train* lines (never test) joined into turns of 6.2-7.8 s (or ``--min-s``-``--max-s``:
short lines as they are, for the "<= 2 s" bucket), read by the espeak-ng *validation* voices
(klatt variants left out) in rotation, with 0.8-1.0 s between turns; writes the FLAC and a
``.jsonl`` ground truth next to it (start/end seconds, speaker, text), as the demos have.
Deterministic for a given seed and espeak-ng version; rendered lines are cached in .cache/tts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data.tts import VOICE_SPLITS, speak  # noqa: E402

MELD_TRAIN = Path("/work/shared/data/meld/train_sent_emo.csv")
RATE_HZ = 16000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=44)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-s", type=float, default=6.2, help="shortest turn, seconds of speech")
    ap.add_argument("--max-s", type=float, default=7.8, help="longest turn, seconds of speech")
    ap.add_argument("--out", type=Path, default=Path(".cache-bench/long-turns.flac"))
    args = ap.parse_args(argv)
    if not 0.3 <= args.min_s < args.max_s:
        ap.error(f"--min-s must be at least 0.3 and below --max-s, got {args.min_s} and {args.max_s}")
    lo, hi = int(args.min_s * RATE_HZ), int(args.max_s * RATE_HZ)
    from streamer.text_encoder import normalize_text

    with open(MELD_TRAIN, encoding="utf-8") as f:
        rows = [normalize_text(r["Utterance"]) for r in csv.DictReader(f)]
    rows = [r for r in rows if len(r.split()) >= (4 if args.min_s >= 2 else 2)]
    rng = np.random.default_rng(args.seed)
    voices = [v for v in VOICE_SPLITS["validation"] if "klatt" not in v.name]
    parts, truth, pos = [np.zeros(int(0.6 * RATE_HZ), np.float32)], [], int(0.6 * RATE_HZ)
    while len(truth) < args.turns:
        i = int(rng.integers(len(rows) - 8))
        voice = voices[len(truth) % len(voices)]
        text, audio = "", np.zeros(0, np.float32)
        for j in range(i, i + 8):  # join lines until the turn is long enough
            text = f"{text} {rows[j]}".strip()
            audio = speak(voice, text)
            if len(audio) >= lo:
                break
        if not lo <= len(audio) <= hi:
            continue
        audio = audio / max(1e-3, float(np.abs(audio).max())) * 0.7
        truth.append(
            {
                "start_s": round(pos / RATE_HZ, 3),
                "end_s": round((pos + len(audio)) / RATE_HZ, 3),
                "speaker": "ABCDEFGH"[voices.index(voice)],  # one letter per voice
                "text": text,
            }
        )
        gap = np.zeros(int(rng.uniform(0.8, 1.0) * RATE_HZ), np.float32)
        parts += [audio.astype(np.float32), gap]
        pos += len(audio) + len(gap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, np.concatenate(parts), RATE_HZ, subtype="PCM_16")
    with open(args.out.with_suffix(".jsonl"), "w") as f:
        for row in truth:
            f.write(json.dumps(row) + "\n")
    print(f"{args.out}: {len(truth)} turns, {pos / RATE_HZ:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
