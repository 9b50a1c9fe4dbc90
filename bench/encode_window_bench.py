"""Whisper's encoder window: WER against time per utterance length (the encode policy's measurement).

    python bench/encode_window_bench.py [--lines 120] [--windows 30 20 15 10 0] [--out docs/encode-window.json]
    python bench/encode_window_bench.py --windows 15 --compute-types int8 int16 float32   # weights' precision

Utterances: the demo conversations' lines (cut from the recordings by their ground
truth) and MELD *train* lines read by the training/validation espeak-ng voices, with
consecutive lines of one speaker joined into long turns so that every length bucket
(<= 2 s, 2-6 s, > 6 s) is filled. Each is transcribed by tiny.en with every encode
policy (a window of at least W seconds, or the utterance + 1 s for W = 0), plus
faster-whisper's own ``transcribe`` (30 s window, the pipeline before the policy).
Reports WER and the encoder + decoder time per length bucket.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.asr import EncodePolicy, Transcriber  # noqa: E402
from streamer.audio import load_audio  # noqa: E402
from training.data.tts import VOICE_SPLITS, speak  # noqa: E402
from training.e2e import read_truth, word_error_rate  # noqa: E402

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
MELD_TRAIN = Path("../shared/data/meld/train_sent_emo.csv")
BUCKETS = (("<=2s", 0, 2), ("2-6s", 2, 6), (">6s", 6, 1e9))


def demo_lines() -> list[tuple[np.ndarray, str]]:
    out = []
    for name in ("demo-kitchen", "demo-office", "demo-story"):
        audio = load_audio(RECORDINGS / f"{name}.flac")
        for seg in read_truth(RECORDINGS / f"{name}.jsonl"):
            a = audio[int((seg.start_s - 0.2) * 16000) : int((seg.end_s + 0.1) * 16000)]
            out.append((a, seg.text))
    return out


def meld_lines(n: int, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    from streamer.text_encoder import normalize_text

    with open(MELD_TRAIN, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    voices = VOICE_SPLITS["train"] + VOICE_SPLITS["validation"]
    out = []
    starts = rng.choice(len(rows) - 4, size=n, replace=False)
    for k, i in enumerate(starts):
        # a third are long turns: 3-4 consecutive lines joined
        take = 1 if k % 3 else int(rng.integers(3, 5))
        text = normalize_text(" ".join(rows[j]["Utterance"] for j in range(i, i + take)))
        if not text.strip():
            continue
        voice = voices[int(rng.integers(len(voices)))]
        out.append((speak(voice, text), text))
    return out


def bucket(seconds: float) -> str:
    return next(name for name, lo, hi in BUCKETS if lo < seconds <= hi or (lo == 0 and seconds <= hi))


def run(lines, windows: list[float], threads: int, compute_type: str = "int8") -> dict:
    results = {}
    for w in ["faster-whisper", *windows]:
        policy = EncodePolicy(min_window_s=30.0, pad_s=0.0) if w == "faster-whisper" else (
            EncodePolicy(min_window_s=1.0, pad_s=1.0) if w == 0 else EncodePolicy(min_window_s=float(w), pad_s=1.0)
        )
        asr = Transcriber("tiny.en", device="cpu", compute_type=compute_type, cpu_threads=threads, policy=policy)
        asr.transcribe(lines[0][0])  # warm up
        refs, hyps, rows = [], [], []
        for audio, ref in lines:
            t0 = time.perf_counter()
            if w == "faster-whisper":
                hyp = " ".join(s.text.strip() for s in asr._segments(audio, False) if s.text.strip())
                enc_ms = float("nan")
            else:
                enc = asr.encode(audio)
                t1 = time.perf_counter()
                hyp = asr.transcribe(audio, enc)
                enc_ms = (t1 - t0) * 1000
            total = (time.perf_counter() - t0) * 1000
            refs.append(ref)
            hyps.append(hyp)
            rows.append((len(audio) / 16000, total, enc_ms))
        by = {}
        for name, _, _ in BUCKETS:
            sel = [r for r in rows if bucket(r[0]) == name]
            idx = [k for k, r in enumerate(rows) if bucket(r[0]) == name]
            if not sel:
                continue
            t = np.array([r[1] for r in sel])
            by[name] = {
                "n": len(sel),
                "wer": word_error_rate(" ".join(refs[k] for k in idx), " ".join(hyps[k] for k in idx)),
                "ms_p50": float(np.percentile(t, 50)),
                "ms_p95": float(np.percentile(t, 95)),
                "encode_ms_p50": float(np.nanmedian([r[2] for r in sel])) if w != "faster-whisper" else None,
            }
        label = w if w == "faster-whisper" else (f">= {w:g} s" if w else "utterance + 1 s")
        label = label if compute_type == "int8" else f"{label}, {compute_type}"
        results[str(label)] = {
            "wer": word_error_rate(" ".join(refs), " ".join(hyps)),
            "ms_p50": float(np.percentile([r[1] for r in rows], 50)),
            "ms_p95": float(np.percentile([r[1] for r in rows], 95)),
            "buckets": by,
        }
        logging.info("%s: WER %.3f p50 %.0f ms", label, results[str(label)]["wer"], results[str(label)]["ms_p50"])
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=120, help="MELD train lines rendered (a third joined into long turns)")
    p.add_argument("--windows", type=float, nargs="+", default=[30, 20, 15, 10, 0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compute-types", nargs="+", default=["int8"], help="CTranslate2 compute types, each run")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    lines = demo_lines() + meld_lines(args.lines)
    results = {}
    for compute_type in args.compute_types:
        results |= run(lines, args.windows, args.threads, compute_type)
    print("| window | WER | ms p50 | ms p95 | " + " | ".join(f"{b[0]} n / WER / p95 ms" for b in BUCKETS) + " |")
    for label, r in results.items():
        cells = [
            f"{r['buckets'][b]['n']} / {r['buckets'][b]['wer']:.3f} / {r['buckets'][b]['ms_p95']:.0f}"
            if b in r["buckets"] else "-"
            for b, _, _ in BUCKETS
        ]
        print(f"| {label} | {r['wer']:.3f} | {r['ms_p50']:.0f} | {r['ms_p95']:.0f} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
