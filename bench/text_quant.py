"""Dynamic int8 quantisation of the bundled text encoder: speed, vector drift, MELD dev text-only F1.

    python bench/text_quant.py [--layers intermediate,output.dense,attention]   # substrings of Linear names

Quantises the Linear layers whose names contain one of ``--layers`` (all of them by default) with
``torch.ao.quantization.quantize_dynamic``, then: time one MELD dev line at a time (150 lines), the
cosine of each line's vector to the fp32 one, and the bundled model's MELD dev weighted F1 with
the audio withheld, on fp32 and on int8 vectors (no retraining). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from streamer.text_encoder import TextEncoder  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import checkpoint_dialogues  # noqa: E402
from training.extract import ExtractConfig  # noqa: E402
from training.trainer import predict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="", help="comma-separated substrings of the Linear layers to quantise")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    ck = models.load("streamer/assets/default.pt", device="cpu")
    enc = TextEncoder.from_pipeline(ck.pipeline.text, device="cpu")
    lines = [u.text for u in load_dataset("meld", "dev", None, audio=False).utterances()]
    wanted = [k for k in args.layers.split(",") if k]
    names = {
        n
        for n, m in enc.model.named_modules()
        if isinstance(m, torch.nn.Linear) and (not wanted or any(k in n for k in wanted))
    }
    quant = copy.copy(enc)
    quant.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(enc.model), names, dtype=torch.qint8)
    vectors = {"fp32": enc.embed(lines), "int8": quant.embed(lines)}
    a, b = vectors["fp32"], vectors["int8"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"{len(names)} Linear layers quantised; cosine to fp32: mean {cos.mean():.4f}, min {cos.min():.4f}")
    dialogues = checkpoint_dialogues(ck, "meld", "dev", None, {"audio": False}, ExtractConfig())
    for name, e in (("fp32", enc), ("int8", quant)):
        ms = []
        for line in lines[:150]:
            t = time.perf_counter()
            e.embed([line])
            ms.append((time.perf_counter() - t) * 1000)
        d2, i = copy.deepcopy(dialogues), 0
        for d in d2:
            for u in d.utterances:
                u["text"] = torch.from_numpy(vectors[name][i])
                i += 1
        logits, y = predict(ck.model, d2, 32, "cpu")
        f1 = f1_score(y, logits.argmax(1), average="weighted")
        print(
            f"{name}: one line p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms; "
            f"MELD dev text-only weighted F1 {f1:.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
