"""WER of the final transcript: pieces cut at pauses (the live default) against one decode
of the whole utterance on the 15 s and the 30 s window, on the same segmented utterances.

    python bench/piece_wer.py recordings/demo-{kitchen,office,story}.flac .cache-bench/long-turns.flac

Each recording is segmented as the live tracker does (the default SegmenterConfig, with
cuts at ``--cut-pause-ms`` pauses, default 200: piecewise finals are off in the product
until this says they pay), every utterance is transcribed three ways, and the WER against ``<recording>.jsonl``
is reported per recording and over all words, with the utterances > 6 s on their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.asr import FULL_WINDOW, Transcriber  # noqa: E402
from streamer.audio import load_audio  # noqa: E402
from streamer.interim import PieceTranscripts  # noqa: E402
from streamer.segmenter import Segmenter, SegmenterConfig  # noqa: E402
from training.e2e import read_truth, truth_path, word_error_rate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--cut-pause-ms", type=int, default=200)
    args = ap.parse_args(argv)
    asr15, asr30 = Transcriber("tiny.en", device="cpu"), Transcriber("tiny.en", device="cpu", policy=FULL_WINDOW)
    ways = {
        "pieces, 15 s": PieceTranscripts(asr15).text,
        "whole, 15 s": lambda u: asr15.transcribe(u.audio),
        "whole, 30 s": lambda u: asr30.transcribe(u.audio),
    }
    totals = {k: [0.0, 0] for k in ways}
    print("| recording | utterances (with cuts) | " + " | ".join(f"WER {k}" for k in ways) + " |")
    print("|---|---:|" + "---:|" * len(ways))
    for rec in args.recordings:
        seg = Segmenter(SegmenterConfig(cut_pause_ms=args.cut_pause_ms))
        utts = seg.push(load_audio(rec)) + seg.flush()
        reference = " ".join(t.text for t in read_truth(truth_path(rec)))
        n = len(reference.split())
        row = []
        for name, way in ways.items():
            wer = word_error_rate(reference, " ".join(way(u) for u in utts))
            totals[name][0] += wer * n
            totals[name][1] += n
            row.append(f"{wer:.3f}")
        print(f"| {rec.name} | {len(utts)} ({sum(bool(u.cuts) for u in utts)}) | " + " | ".join(row) + " |")
    print("| all words | | " + " | ".join(f"{s / n:.3f}" for s, n in totals.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
