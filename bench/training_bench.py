"""Training-side speed: feature extraction rate (1 and 2 workers) and epoch time.

    python bench/training_bench.py [--clips 80] [--data-root ../shared/data]

Extraction: openSMILE ComParE_2016 functionals of ``--clips`` RAVDESS clips into an empty
cache (so nothing is read back), with 1 and then 2 worker processes. Epoch time: one
training epoch of the bundled model's HBAF configuration (online, K = 8) on the cached
``paired`` training features (run `python -m training extract --dataset paired` first).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=80)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    args = ap.parse_args(argv)

    from training.extract import ExtractConfig, FeatureStore, _opensmile_job, _run_jobs

    clips = sorted((args.data_root / "ravdess").rglob("*.flac"))[: args.clips]
    jobs = [(str(c), None, None, "ComParE_2016") for c in clips]
    _opensmile_job(jobs[0])  # imports and openSMILE's start-up are not the rate
    print("| what | rate |\n|---|---:|")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ExtractConfig(cache_dir=Path(tmp), workers=workers, progress=False)
            store = FeatureStore(Path(tmp) / "x.npz")
            t0 = time.perf_counter()
            done = sum(1 for vec, _ in _run_jobs(jobs, cfg, "", store) if vec is not None)
            rate = done / (time.perf_counter() - t0)
        print(f"| openSMILE extraction, {workers} worker(s) | {rate:.1f} utterances/s |", flush=True)

    import dataclasses

    import models
    from training.data import load_dataset
    from training.experiment import to_dialogues
    from training.extract import extract_split
    from training.trainer import TrainConfig, train

    ck = models.load(Path(__file__).parent.parent / "streamer" / "assets" / "default.pt", device="cpu")
    split = load_dataset("paired", "train", args.data_root)
    val = load_dataset("paired", "validation", args.data_root)
    cfg = ExtractConfig(progress=False)
    data = to_dialogues(split, extract_split(split, cfg), ck.pipeline, ck.labels)
    vdata = to_dialogues(val, extract_split(val, cfg), ck.pipeline, ck.labels)
    model = type(ck.model)(dataclasses.replace(ck.model.config))
    t0 = time.perf_counter()
    train(model, data, vdata, TrainConfig(max_epochs=1, audio_dropout=0.2, text_dropout=0.3))
    n = sum(len(d.labels) for d in data)
    print(
        f"| one epoch, bundled HBAF config, paired train ({n} utterances) + validation | "
        f"{time.perf_counter() - t0:.1f} s |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
