"""A long session: hours of conversation replayed at max speed through the real pipeline,
reporting resident memory and latency over time.

    python bench/long_session.py --minutes 120 [--model CKPT] [--every-min 10] [--ui]

The input loops the demo conversations (with the speakers' lines in a different order each
pass, so the dialogue context keeps changing) from memory, as a source object: a 2-hour
file decoded up front would itself take ~460 MB. Memory is the process's resident set
(VmRSS) after each simulated ``--every-min`` minutes. ``--ui`` runs the session inside the
Textual app (headless, rendering as usual), so the timeline and its bounds are measured too.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class LoopSource:
    """Blocks of 16 kHz audio: the demo recordings cut at their pauses and shuffled per pass."""

    channels = 1
    dropped_blocks = 0
    description = "looped demos"

    def __init__(self, minutes: float, block_ms: int = 100, seed: int = 0) -> None:
        from streamer.audio import load_audio

        self.total = int(minutes * 60 * 16000)
        self.block = 16 * block_ms
        self.pieces = []
        for name in ("demo-kitchen", "demo-office", "demo-story"):
            audio = load_audio(ROOT / "recordings" / f"{name}.flac")
            quiet = np.flatnonzero(np.convolve(np.abs(audio) > 1e-4, np.ones(8000), "same") == 0)
            cuts = [0] + [int(q) for q in quiet[np.flatnonzero(np.diff(quiet) > 1)]] + [len(audio)]
            self.pieces += [audio[a:b] for a, b in zip(cuts, cuts[1:]) if b - a > 8000]
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        sent = 0
        buf = np.zeros(0, np.float32)
        while sent < self.total:
            while len(buf) < self.block:
                buf = np.concatenate([buf, self.pieces[self.rng.integers(len(self.pieces))]])
            yield buf[: self.block]
            buf = buf[self.block :]
            sent += self.block

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=120)
    ap.add_argument("--every-min", type=float, default=10)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--ui", action="store_true", help="run inside the Textual app (headless)")
    args = ap.parse_args(argv)

    from streamer.cli import _quiet_libraries, build_parser, build_pipeline
    from streamer.events import UtteranceEvent
    from streamer.pipeline import LivePipeline

    _quiet_libraries(False)
    argv2 = ["--replay", str(ROOT / "recordings" / "demo-office.flac"), "--speed", "max", "--no-ui"]
    if args.model:
        argv2 += ["--model", str(args.model)]
    built, _ = build_pipeline(build_parser().parse_args(argv2))
    pipeline = LivePipeline(LoopSource(args.minutes), built.processor, built.segmenter_config, built.config)
    start_rss = rss_mb()
    rows = []
    window: list[float] = []
    next_mark = args.every_min * 60
    t0 = time.perf_counter()

    def emit(event) -> None:
        nonlocal next_mark, window
        if isinstance(event, UtteranceEvent):
            window.append(event.latency_ms.get("total", float("nan")))
            if event.end_s >= next_mark:
                rows.append(
                    (
                        next_mark / 60,
                        rss_mb(),
                        float(np.median(window)),
                        float(np.percentile(window, 95)),
                        time.perf_counter() - t0,
                    )
                )
                print(
                    f"| {rows[-1][0]:.0f} | {rows[-1][1]:.1f} | {rows[-1][2]:.0f} | {rows[-1][3]:.0f} | "
                    f"{rows[-1][4]:.0f} |",
                    flush=True,
                )
                next_mark += args.every_min * 60
                window = []

    where = "in the Textual app (headless)" if args.ui else "without UI"
    print(f"# {args.minutes:.0f} min of audio at max speed {where}; RSS after loading the models: {start_rss:.1f} MB")
    print("| audio minutes | RSS MB | latency p50 ms | latency p95 ms | wall s |\n|---:|---:|---:|---:|---:|")
    if args.ui:
        from replay_bench import run_in_app  # same folder

        run_in_app(pipeline, emit)
    else:
        pipeline.run(emit, threading.Event(), threading.Event())
    if len(rows) > 1:
        print(
            f"\nRSS growth from the first mark to the last: {rows[-1][1] - rows[0][1]:+.1f} MB; "
            f"real-time factor {(time.perf_counter() - t0) / (args.minutes * 60):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
