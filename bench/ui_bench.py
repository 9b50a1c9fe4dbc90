"""The UI stage as the timeline fills: ms from an event's emission to the refresh that drew it.

    python bench/ui_bench.py [--rows 600] [--max-rows 500] [--every-s 0.15]

Runs the real EmotionApp headless with a scripted pipeline that emits one utterance event
(and the level events between them) every ``--every-s`` seconds, and prints the median UI
stage per 100 rows, so a cost that grows with the number of rows on the timeline shows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--max-rows", type=int, default=500)
    ap.add_argument("--every-s", type=float, default=0.15)
    args = ap.parse_args(argv)

    from replay_bench import run_in_app  # same folder

    from streamer.events import LevelEvent, UtteranceEvent

    class Scripted:
        def describe(self) -> dict[str, str]:
            return {"model": "scripted"}

        def run(self, emit, stop, paused) -> None:
            for i in range(args.rows):
                if stop.is_set():
                    return
                for k in range(3):
                    emit(LevelEvent(2.0 * i + 0.1 * k, -30.0, True))
                label = LABELS[i % len(LABELS)]
                probs = {k: 0.7 if k == label else 0.05 for k in LABELS}
                latency = {"asr": 300.0, "model": 5.0, "total": 320.0}
                text = f"utterance number {i}, a sentence of ordinary length for a conversation"
                emit(UtteranceEvent(i, 2.0 * i, 2.0 * i + 1.5, "AB"[i % 2], text, label, 0.7, probs, latency))
                stop.wait(args.every_s)

    t0 = time.perf_counter()
    shown = run_in_app(Scripted(), lambda event: None, LABELS, max_rows=args.max_rows)
    ms = list(shown.values())
    print(
        f"{args.rows} rows (timeline keeps {args.max_rows}), one every {args.every_s} s; wall "
        f"{time.perf_counter() - t0:.1f} s"
    )
    print("| rows | UI stage p50 ms | p95 ms |\n|---|---:|---:|")
    for i in range(0, len(ms), 100):
        part = ms[i : i + 100]
        print(f"| {i}-{i + len(part) - 1} | {np.median(part):.1f} | {np.percentile(part, 95):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
