"""Whisper's decoder with and without timestamp tokens: decode time and WER, same encoder states.

    python bench/timestamp_tokens.py recordings/demo-{kitchen,office,story}.flac .cache-bench/long-turns.flac

The live decode prompts tiny.en with ``<|startoftranscript|>`` only, so it also writes a timestamp
token at each segment's start and end, which the transcript then drops. ``<|notimestamps|>`` in the
prompt asks for the words alone. Each utterance of each ``<recording>.jsonl`` (its truth span, 0.2 s
before and 0.1 s after) is encoded once under the live policy, then decoded greedily both ways, each
twice; decode time (the ``generate`` call alone), tokens per utterance and WER over all words.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.asr import MAX_TOKENS, SAMPLE_RATE_HZ, TOKENS_PER_S, Transcriber  # noqa: E402
from streamer.audio import load_audio  # noqa: E402
from training.e2e import word_error_rate  # noqa: E402


def utterances(recordings: list[Path]) -> list[tuple[np.ndarray, str]]:
    out = []
    for rec in recordings:
        audio = load_audio(rec)
        for line in rec.with_suffix(".jsonl").read_text().splitlines():
            row = json.loads(line)
            a = audio[max(0, int((row["start_s"] - 0.2) * SAMPLE_RATE_HZ)) : int((row["end_s"] + 0.1) * SAMPLE_RATE_HZ)]
            out.append((np.ascontiguousarray(a, dtype=np.float32), row["text"]))
    return out


def decode_all(tr: Transcriber, items, encoded, prompt: list[int]) -> tuple[list[float], float, float]:
    tok = tr._tokenizer
    times, errors, tokens = [], 0.0, 0
    for (audio, ref), enc in zip(items, encoded):
        limit = len(prompt) + min(MAX_TOKENS, int(len(audio) / SAMPLE_RATE_HZ * TOKENS_PER_S) + 16)
        t = time.perf_counter()
        result = tr.model.model.generate(
            enc.states, [prompt], beam_size=1, max_length=limit, suppress_blank=True,
            suppress_tokens=tr._suppress, max_initial_timestamp_index=50,
        )[0]  # fmt: skip
        times.append((time.perf_counter() - t) * 1000)
        ids = result.sequences_ids[0]
        tokens += len(ids)
        hyp = " ".join(tok.decode([i for i in ids if i < tok.eot]).split())
        errors += word_error_rate(ref, hyp) * len(ref.split())
    words = sum(len(ref.split()) for _, ref in items)
    return times, errors / words, tokens / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--asr-model", default="tiny.en")
    args = ap.parse_args()
    tr = Transcriber(args.asr_model)
    tok = tr._tokenizer
    items = utterances(args.recordings)
    encoded = [tr.encode(a) for a, _ in items]
    print(f"{len(items)} utterances; | prompt | run | decode p50 ms | p95 ms | tokens / utterance | WER |")
    for name, prompt in (
        ("<|startoftranscript|> (live today)", list(tok.sot_sequence)),
        ("+ <|notimestamps|>", [*tok.sot_sequence, tok.no_timestamps]),
    ):
        for run in (1, 2):
            times, wer, tokens = decode_all(tr, items, encoded, prompt)
            p50, p95 = np.percentile(times, [50, 95])
            print(f"| {name} | {run} | {p50:.0f} | {p95:.0f} | {tokens:.1f} | {wer:.3f} |", flush=True)


if __name__ == "__main__":
    main()
