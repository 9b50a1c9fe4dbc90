"""Whisper and openSMILE one after the other vs side by side, on the demo utterances.

    python bench/overlap_bench.py [--repeats 2]

The live pipeline runs openSMILE in a second thread while Whisper transcribes the same
audio (``PipelineConfig.overlap``). This measures what that buys on this machine: each
demo line is cut from its recording (with 100 ms after it, like the segmenter's postroll)
and prepared both ways; medians per demo in milliseconds.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--demos", nargs="+", default=["demo-office", "demo-story"])
    args = ap.parse_args(argv)

    from streamer.asr import Transcriber
    from streamer.audio import load_audio
    from streamer.features import OpenSmileExtractor
    from training.e2e import read_truth

    asr = Transcriber()
    smile = OpenSmileExtractor()
    pool = ThreadPoolExecutor(1)
    print("| demo | Whisper ms | openSMILE ms | one after the other ms | side by side ms |\n|---|---:|---:|---:|---:|")
    for name in args.demos:
        audio = load_audio(ROOT / "recordings" / f"{name}.flac")
        lines = read_truth(ROOT / "recordings" / f"{name}.jsonl")
        clips = [audio[int(t.start_s * 16000) : int((t.end_s + 0.1) * 16000)] for t in lines]
        asr.transcribe(clips[0]), smile(clips[0])  # warm-up
        whisper, opensmile, sequential, overlapped = [], [], [], []
        for clip in clips:
            for _ in range(args.repeats):
                t = time.perf_counter()
                asr.transcribe(clip)
                whisper.append(time.perf_counter() - t)
                t = time.perf_counter()
                smile(clip)
                opensmile.append(time.perf_counter() - t)
                sequential.append(whisper[-1] + opensmile[-1])
                t = time.perf_counter()
                ahead = pool.submit(smile, clip)
                asr.transcribe(clip)
                ahead.result()
                overlapped.append(time.perf_counter() - t)
        cells = " | ".join(f"{1000 * np.median(x):.0f}" for x in (whisper, opensmile, sequential, overlapped))
        print(f"| {name} | {cells} |")
    pool.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
