"""Text stage time per utterance: the frozen line-only encoder vs encoders reading the dialogue.

    python bench/text_bench.py [--encoders minilm .cache/all-mpnet-base-v2] [--lines 200] [--context-turns 2]
    python bench/text_bench.py --checkpoint streamer/assets/default.pt   # the bundle's own text stage
    ... --runtimes torch onnx     # each encoder on PyTorch and on ONNX Runtime (default: both)

Lines come from MELD dev (each with its past turns, untagged as in live mono input), one
at a time as the live pipeline encodes them, after a warm-up. Reports p50/p95 ms per
utterance and the mean tokens in the input. Take it on a quiet machine (touch
a file named by $SER_LIVE_PAUSE_FILE pauses text-tune jobs started with it).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from streamer.text_context import Turn, dialogue_contexts
from streamer.text_encoder import TextEncoder
from training.data.shared import DEFAULT_ROOT, meld_dialogues


def lines(n: int, context_turns: int) -> list[tuple[str, str | None]]:
    _, dev = meld_dialogues("test", DEFAULT_ROOT)
    out = []
    for d in dev:
        turns = [Turn(None, u.text or "") for u in d.utterances]
        out += [(t.text, c) for t, c in zip(turns, dialogue_contexts(turns, context_turns))]
        if len(out) >= n:
            break
    return out[:n]


def bench(enc: TextEncoder, items: list[tuple[str, str | None]], use_context: bool) -> dict:
    for text, ctx in items[:10]:
        enc.embed([text], [ctx if use_context else None])
    times, tokens = [], []
    for text, ctx in items:
        c = ctx if use_context else None
        t = time.perf_counter()
        enc.embed([text], [c])
        times.append((time.perf_counter() - t) * 1000)
        tokens.append(int(enc.tokenize([text], [c])[0]["attention_mask"].sum()))
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)), "tokens": np.mean(tokens)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["minilm"])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--context-turns", type=int, default=2)
    ap.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"# {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    items = lines(args.lines, args.context_turns)
    print("| encoder | input | runtime | p50 ms | p95 ms | tokens |")
    print("|---|---|---|---:|---:|---:|")
    if args.checkpoint is not None:
        import models

        spec = models.load(args.checkpoint, device="cpu").pipeline.text
        what = f"{spec.context_turns} past turns" if spec.context_turns else "line"
        name = f"{args.checkpoint.name} ({spec.pooling})"
        for runtime in args.runtimes:
            enc = TextEncoder.from_pipeline(spec, "cpu", runtime)
            r = bench(enc, lines(args.lines, spec.context_turns), spec.context_turns > 0)
            print(f"| {name} | {what} | {runtime} | {r['p50']:.1f} | {r['p95']:.1f} | {r['tokens']:.0f} |")
        return
    for name in args.encoders:
        for runtime in args.runtimes:
            frozen = TextEncoder(None if name == "minilm" else name, 128, "cpu", runtime=runtime)
            ctx = TextEncoder(None if name == "minilm" else name, 128, "cpu", pooling="utterance_last", runtime=runtime)
            for enc, use, what in ((frozen, False, "line"), (ctx, True, f"line + {args.context_turns} past turns")):
                r = bench(enc, items, use)
                print(f"| {name} | {what} | {runtime} | {r['p50']:.1f} | {r['p95']:.1f} | {r['tokens']:.0f} |")


if __name__ == "__main__":
    main()
