"""Interim words offline: when the right word would reach the screen under an interim policy.

The real-time benchmark (``bench/replay_bench.py --modes interim``) measures the shipped policy
in the app, in 12 minutes of wall time a run, on a quiet machine only. This replays the same
long turns through the live segmenter in 100 ms blocks and decodes the utterance in progress
whenever a policy says so, on the audio clock: a decode started at audio time t is taken to be
on screen at t + ``--decode-s`` (the measured interim decode, ~0.3 s on this CPU), and no
other decode starts before then (one worker). Word delays are scored by the benchmark's own
``word_delays`` against Whisper's word times on the finished utterance. For the shipped policy
it comes within 0.2 s of the app's wall-clock numbers (docs/benchmarks.md); it is meant for
comparing policies with each other.

    python experiments/interim_sim.py .cache-bench/long-turns.flac --out runs/interim-sim.json   # ~30 min
    python experiments/interim_sim.py .cache-bench/long-turns.flac --policies shipped "every 1 s"  # two of them

docs/runs/session21/interim-sim.json has the session-21 numbers (without the per-word delays).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay_bench import _norm, word_delays  # noqa: E402
from streamer.asr import Transcriber  # noqa: E402
from streamer.audio import load_audio  # noqa: E402
from streamer.interim import INTERIM_POLICY  # noqa: E402
from streamer.segmenter import Segmenter  # noqa: E402

RATE = 16000
BLOCK = RATE // 10


def quiet_end(audio: np.ndarray, look_s: float) -> int:
    """The sample to decode up to: the quietest 30 ms frame in the last ``look_s`` seconds (its
    middle), so the decode does not end inside a word. ``look_s`` 0: all of it."""
    n = 480
    frames = len(audio) // n
    k = min(frames, int(round(look_s * RATE / n)))
    if k < 2:
        return len(audio)
    tail = audio[(frames - k) * n : frames * n].reshape(k, n)
    energy = (tail.astype(np.float64) ** 2).mean(axis=1)
    return (frames - k + int(np.argmin(energy))) * n + n // 2


def simulate(audio, asr, policy: dict, decode_s: float) -> tuple[list[dict], int]:
    """Decode rows of every > 6 s utterance under ``policy`` (after_s, every_s, look_s), scored,
    and how many interim decodes the policy made over the whole recording (its CPU cost)."""
    seg = Segmenter()
    busy_until = -1.0
    last_at = -1e9
    rows: list[tuple[float, list[str], float]] = []
    out = []
    decodes = 0
    for b in range(0, len(audio), BLOCK):
        now = (b + BLOCK) / RATE
        for utt in seg.push(audio[b : b + BLOCK]):
            if utt.end_s - utt.start_s > 6.0:
                final_t = utt.decided_at_s + decode_s / 2  # the final row: end decision + about its ASR time
                text = asr.transcribe(utt.audio)  # the final row's text, on the live policy's window
                _, words = asr.transcribe_words(utt.audio)  # word times only (as the benchmark takes them)
                out += word_delays(
                    utt.start_s,
                    [(w.word, w.end_s) for w in words],
                    [*rows, (final_t, _norm(text), utt.end_s)],
                    final_t,
                    0.0,
                )
            rows = []  # rows belong to the utterance in progress: none yet for the next one
            last_at = -1e9
        if not seg.in_speech or now < busy_until or now - last_at < policy["every_s"]:
            continue
        utt = seg.in_progress()
        if utt is None or utt.end_s - utt.start_s < policy["after_s"]:
            continue
        upto = quiet_end(utt.audio, policy["look_s"])
        clip = np.ascontiguousarray(utt.audio[:upto])
        text = asr.transcribe(clip, asr.encode(clip, policy.get("window", INTERIM_POLICY)))
        cost = policy.get("decode_s", decode_s)
        last_at, busy_until = now, now + cost
        decodes += 1
        rows.append((now + cost, _norm(text), utt.start_s + upto / RATE))
    return out, decodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--decode-s", type=float, default=0.3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--policies", nargs="*", help="only the policies whose names contain one of these")
    args = ap.parse_args()
    asr = Transcriber(device="cpu", cpu_threads=1)
    policies = {
        "shipped (1.5 s, every 1 s)": {"after_s": 1.5, "every_s": 1.0, "look_s": 0.0},
        "quiet end in last 0.3 s": {"after_s": 1.5, "every_s": 1.0, "look_s": 0.3},
        "final's window (15 s), 0.4 s a decode": {
            "after_s": 1.5,
            "every_s": 1.0,
            "look_s": 0.0,
            "window": None,
            "decode_s": 0.4,
        },
        "every 0.6 s": {"after_s": 1.5, "every_s": 0.6, "look_s": 0.0},
        "from 1.0 s, every 1 s": {"after_s": 1.0, "every_s": 1.0, "look_s": 0.0},
        "from 1.0 s, every 0.7 s": {"after_s": 1.0, "every_s": 0.7, "look_s": 0.0},
    }
    if args.policies:
        policies = {k: v for k, v in policies.items() if any(p in k for p in args.policies)}
    report = {}
    for name, policy in policies.items():
        delays, decodes = [], 0
        for rec in args.recordings:
            d, n = simulate(load_audio(rec), asr, policy, args.decode_s)
            delays, decodes = delays + d, decodes + n
        right = np.array([d["delay_s"] for d in delays])
        anyw = np.array([d["any_delay_s"] for d in delays])
        report[name] = {
            "words": len(delays),
            "right p50": round(float(np.percentile(right, 50)), 2),
            "right p95": round(float(np.percentile(right, 95)), 2),
            "any p50": round(float(np.percentile(anyw, 50)), 2),
            "any p95": round(float(np.percentile(anyw, 95)), 2),
            "by final": sum(d["by_final"] for d in delays),
            "interim decodes": decodes,
            "delays": delays,
        }
        print(name, {k: v for k, v in report[name].items() if k != "delays"}, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
