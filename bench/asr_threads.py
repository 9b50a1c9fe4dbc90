"""CPU and wall time of one Whisper transcription by thread settings (numpy's BLAS, CTranslate2).

    python bench/asr_threads.py [--lines 46] [--repeats 2]

Transcribes the first dialogue lines of the bundled demos and the long-turns recording
(cut at their scripted times, as the segmenter would) with tiny.en, once per setting, each
setting in its own process: OpenBLAS reads ``OPENBLAS_NUM_THREADS`` when numpy loads, so
the variable must be set before that. Reports per line: wall p50/p95 and CPU (all threads
of the process) per line. ``ser-live`` runs numpy's BLAS on one thread
(:func:`streamer.options.sequential_blas`) and Whisper on half the cores
(:func:`streamer.options.default_asr_threads`: one here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "recordings" / f"demo-{n}.flac" for n in ("kitchen", "office", "story")]
SOURCES.append(ROOT / ".cache-bench" / "long-turns.flac")

CHILD = """
import json, sys, time
import numpy as np, soundfile as sf
from streamer.asr import Transcriber
paths, lines, ct2 = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
asr = Transcriber("tiny.en", device="cpu", cpu_threads=ct2)
clips = []
for p in paths:
    audio, rate = sf.read(p, dtype="float32")
    with open(p.rsplit(".", 1)[0] + ".jsonl") as f:
        for line in f:
            u = json.loads(line)
            clips.append(audio[max(0, int((u["start_s"] - 0.2) * rate)) : int((u["end_s"] + 0.3) * rate)])
clips = clips[:lines]
asr.transcribe(clips[0])  # warm-up
walls, c0 = [], time.process_time()
for x in clips:
    t = time.perf_counter()
    asr.transcribe(x)
    walls.append(time.perf_counter() - t)
cpu = time.process_time() - c0
print(json.dumps({"n": len(clips), "p50": float(np.median(walls)), "p95": float(np.percentile(walls, 95)),
                  "cpu": cpu / len(clips)}))
"""


def measure(openblas: int, ct2: int, lines: int, paths: list[str]) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(openblas), "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(paths), str(lines), str(ct2)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=46, help="dialogue lines to transcribe per setting")
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting, interleaved")
    args = ap.parse_args(argv)
    paths = [str(p) for p in SOURCES if p.is_file() and p.with_suffix(".jsonl").is_file()]
    if not paths:
        raise SystemExit("no recordings with ground truth found: the demos ship in recordings/")
    settings = [(2, 0), (1, 0), (1, 1)]  # (OpenBLAS threads, CTranslate2 threads; 0 = its default)
    rows: dict[tuple[int, int], list[dict]] = {s: [] for s in settings}
    for _ in range(args.repeats):
        for s in settings:
            rows[s].append(measure(*s, args.lines, paths))
    print("| numpy's BLAS threads | CTranslate2 threads | lines | wall p50 ms | wall p95 ms | CPU ms per line |")
    print("|---:|---|---:|---:|---:|---:|")
    for (blas, ct2), runs in rows.items():
        for r in runs:
            print(
                f"| {blas} | {ct2 or 'default'} | {r['n']} | {1000 * r['p50']:.0f} | {1000 * r['p95']:.0f} | "
                f"{1000 * r['cpu']:.0f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
