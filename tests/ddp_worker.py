"""Run by tests/test_ddp.py under torchrun: train a tiny model with DDP (gloo, CPU)."""

import json
import sys

import torch
import torch.distributed as dist

import models
from models import ContextConfig
from tests.test_trainer import synthetic
from training.trainer import TrainConfig, predict, train

out = sys.argv[1]
torch.manual_seed(0)
model = models.build(
    "bclstm", context=ContextConfig("online", 4), audio_dim=6, text_dim=5, num_classes=3, hidden=16, fusion_hidden=16
)
res = train(model, synthetic(40, 0), synthetic(10, 1), TrainConfig(max_epochs=8, batch_size=4, lr=3e-3, patience=8))
rank, world = dist.get_rank(), dist.get_world_size()
logits, y = predict(model, synthetic(10, 1))
checksum = float(sum(p.double().sum() for p in model.parameters()))
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(
        {
            "world": world,
            "checksum": checksum,
            "accuracy": float((logits.argmax(1) == y).mean()),
            "history": res.history,
        },
        f,
    )
dist.destroy_process_group()
