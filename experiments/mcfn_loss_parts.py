"""MCFN's validation loss by part after every epoch, BatchNorm on running vs batch statistics.

    python experiments/mcfn_loss_parts.py train --model mcfn --name mcfn-diag --dataset paired \\
        --recipe compact --context online --window 8 --seeds 0 --epochs 3 --runs-dir /tmp/mcfn-runs

The arguments are `python -m training`'s. Every validation pass also prints a ``DIAG`` line: the
mean of each loss part (the three classifiers' cross-entropy, the mutual-adjustment MSE) in eval
mode (running statistics, as validation runs) and with each MaskedBatchNorm on its batch
statistics (running statistics left untouched), to tell which part the validation-loss
explosion of docs/results.md comes from, and whether BatchNorm's running statistics cause it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.trainer as trainer  # noqa: E402
from models.mcfn import MaskedBatchNorm1d  # noqa: E402
from training.cli import main  # noqa: E402
from training.losses import IGNORE, compute_loss  # noqa: E402

_evaluate_loss = trainer.evaluate_loss


def loss_parts(model, data, batch_size: int, batch_stats: bool) -> dict[str, float]:
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, MaskedBatchNorm1d)]
    momenta = [m.momentum for m in norms]
    if batch_stats:
        for m in norms:
            m.train()
            m.momentum = 0.0  # batch statistics, running ones unchanged
    sums: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch, labels = trainer.make_batch(data[i : i + batch_size])
            n = int((labels != IGNORE).sum())
            if n:
                for k, v in compute_loss(model, model(batch), labels, batch).items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                count += n
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
        m.eval()
    return {k: round(v / max(count, 1), 4) for k, v in sums.items()}


def evaluate_loss(model, data, batch_size, device):
    row = {"eval": loss_parts(model, data, batch_size, False), "batch_stats": loss_parts(model, data, batch_size, True)}
    print("DIAG", json.dumps(row), flush=True)
    return _evaluate_loss(model, data, batch_size, device)


if __name__ == "__main__":
    trainer.evaluate_loss = evaluate_loss
    raise SystemExit(main(sys.argv[1:]))
