"""Speaker embedding + assignment per utterance: the cost the speaker stage adds (budget: 30 ms p95).

    touch /tmp/ser-quiet; python bench/speakers_bench.py [--repeats 3]; rm /tmp/ser-quiet

Every utterance of the mono demos is cut by the live segmenter, then embedded
(:class:`streamer.speakers.VoiceEmbedder`, GE2E over at most two 1.6 s partials) and
assigned (:class:`streamer.speakers.SpeakerTracker`) as the pipeline does, in the calling
thread with torch's default threads (``--threads 1``: one, steadier on a busy CPU).
Milliseconds by utterance length, p50 and p95.
The embedding runs with ASR while the segmenter waits out the end of speech, so it is
hidden like ASR; the assignment (microseconds) is what is left at the decision.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--demos", nargs="+", default=["demo-kitchen", "demo-office", "demo-story"])
    args = ap.parse_args(argv)

    import torch

    from streamer.audio import load_audio
    from streamer.speakers import SpeakerTracker, VoiceEmbedder
    from training.speakers import cut

    if args.threads:
        torch.set_num_threads(args.threads)
    embedder = VoiceEmbedder()
    utts = [u.audio for name in args.demos for u in cut(load_audio(ROOT / "recordings" / f"{name}.flac"))]
    embedder.embed(utts[0])  # warm-up
    rows: dict[str, list[tuple[float, float]]] = {"< 2 s": [], "2-6 s": [], "> 6 s": [], "all": []}
    for _ in range(args.repeats):
        tracker = SpeakerTracker()
        for audio in utts:
            t0 = time.perf_counter()
            emb, partials = embedder.embed(audio)
            t1 = time.perf_counter()
            tracker.push(emb, partials)
            t2 = time.perf_counter()
            seconds = len(audio) / 16000
            bucket = "< 2 s" if seconds < 2 else "2-6 s" if seconds <= 6 else "> 6 s"
            for key in (bucket, "all"):
                rows[key].append(((t1 - t0) * 1000, (t2 - t1) * 1000))
    print("| utterances | n | embed min ms | embed p50 ms | embed p95 ms | assign p95 ms | total p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, values in rows.items():
        if not values:
            continue
        x = np.array(values)
        total = x.sum(axis=1)
        print(
            f"| {key} | {len(x)} | {x[:, 0].min():.1f} | {np.median(x[:, 0]):.1f} | {np.percentile(x[:, 0], 95):.1f} | "
            f"{np.percentile(x[:, 1], 95):.3f} | {np.percentile(total, 95):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
