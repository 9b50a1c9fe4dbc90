"""Replay recordings through the real live pipeline and report latency and speed.

    python bench/replay_bench.py recordings/demo-kitchen.flac recordings/demo-office.flac \
        [--model CKPT] [--asr-model tiny.en] [--speed realtime|max]

Latency per utterance is measured by the pipeline itself, from the moment the
segmenter decided the utterance had ended to the event being emitted, per stage
(ASR, openSMILE, text encoder, model). With ``--speed max`` the real-time factor
is wall time / audio duration of the whole run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--asr-model", default="tiny.en")
    ap.add_argument("--speed", choices=("realtime", "max"), default="max")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    from streamer.audio import load_audio
    from streamer.cli import _quiet_libraries, build_parser, build_pipeline
    from streamer.events import UtteranceEvent

    _quiet_libraries(False)
    events: list[UtteranceEvent] = []
    audio_s = wall_s = 0.0
    description = {}
    for _ in range(args.repeats):
        for rec in args.recordings:
            argv2 = ["--replay", str(rec), "--speed", args.speed, "--asr-model", args.asr_model, "--no-ui"]
            if args.model:
                argv2 += ["--model", str(args.model)]
            pipeline, _ = build_pipeline(build_parser().parse_args(argv2))
            description = pipeline.describe()
            got: list = []
            t0 = time.perf_counter()
            pipeline.run(got.append, threading.Event(), threading.Event())
            wall_s += time.perf_counter() - t0
            audio_s += len(load_audio(rec)) / 16000
            events += [e for e in got if isinstance(e, UtteranceEvent) and e.error is None]
    print(f"# {platform.machine()} {platform.processor()}; model {description.get('model')} on "
          f"{description.get('device')}; ASR {args.asr_model}; speed {args.speed}; {len(events)} utterances, "
          f"{audio_s:.1f} s of audio")
    stages = sorted({k for e in events for k in e.latency_ms})
    print("| stage | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for stage in stages:
        vals = [e.latency_ms[stage] for e in events if stage in e.latency_ms]
        print(f"| {stage} | {percentile(vals, 50):.1f} | {percentile(vals, 95):.1f} | {max(vals):.1f} |")
    if args.speed == "max":
        print(f"\nreal-time factor: {wall_s / audio_s:.3f} (wall {wall_s:.1f} s for {audio_s:.1f} s of audio)")
    lengths = [e.end_s - e.start_s for e in events]
    print(f"utterance length: median {statistics.median(lengths):.2f} s, max {max(lengths):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
