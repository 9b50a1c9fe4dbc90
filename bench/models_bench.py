"""Parameter counts and per-utterance streaming inference time of every model.

    python bench/models_bench.py [--windows 8 16 32] [--device auto] [--repeats 50]

Each measurement pushes utterances one at a time through
:class:`models.StreamingClassifier` (online mode, window K), exactly as the live
tracker does, after filling the window, and reports the median time per push.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

import models
from models import ContextConfig, StreamingClassifier


def fake_utterance(model, gen: torch.Generator) -> dict:
    cfg = model.config
    u: dict = {}
    if "audio" in model.inputs:
        u["audio"] = torch.randn(getattr(cfg, "audio_dim", getattr(cfg, "input_dim", 512)), generator=gen)
    if "text" in model.inputs:
        u["text"] = torch.randn(getattr(cfg, "text_dim", getattr(cfg, "input_dim", 384)), generator=gen)
    if "frames" in model.inputs:  # 3 s of 10 ms frames
        u["frames"] = torch.randn(300, cfg.frame_dim, generator=gen)
    if "tokens" in model.inputs:
        u["tokens"] = torch.randn(16, cfg.token_dim, generator=gen)
    return u


def bench(name: str, window: int, device: torch.device, repeats: int) -> tuple[int, float, float]:
    if name.endswith(".pt"):  # a trained checkpoint, re-windowed to K
        ck = models.load(name, device="cpu")
        cfg = dataclasses.replace(ck.model.config, context=ContextConfig("online", window))
        model = type(ck.model)(cfg)
        model.load_state_dict(ck.model.state_dict())
        model = model.to(device).eval()
    else:
        model = models.build(name, context=ContextConfig("online", window)).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    stream = StreamingClassifier(model)
    utts = [fake_utterance(model, gen) for _ in range(window + repeats)]
    for u in utts[:window]:
        stream.push(u)
    times = []
    for u in utts[window:]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stream.push(u)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return params, statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument(
        "--models",
        nargs="+",
        default=[*models.MODEL_NAMES, "streamer/assets/default.pt"],
        help="registered model names (default config) or checkpoint paths",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args(argv)
    device = models.resolve_device(args.device)
    cpu = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu}, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    print("| model | parameters | " + " | ".join(f"K={k} p50 / p95 ms" for k in args.windows) + " |")
    print("|---|---:|" + "---:|" * len(args.windows))
    for m in args.models:
        cells, params = [], 0
        for k in args.windows:
            params, p50, p95 = bench(m, k, device, args.repeats)
            cells.append(f"{p50:.2f} / {p95:.2f}")
        print(f"| {m} | {params:,} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
