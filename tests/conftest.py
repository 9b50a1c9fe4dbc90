"""Shared test helpers: tiny random dialogues for the model tests."""

from __future__ import annotations

import pytest
import torch

from models.batch import collate


def make_dialogues(lengths, audio_dim=10, text_dim=8, speakers=2, seed=0, present=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        d = []
        for t in range(n):
            u = {
                "audio": torch.randn(audio_dim, generator=g),
                "text": torch.randn(text_dim, generator=g),
                "speaker": t % speakers,
            }
            if present:
                u["audio_present"] = bool(t % 3 != 1)
                u["text_present"] = bool(t % 4 != 2)
            d.append(u)
        out.append(d)
    return out


@pytest.fixture
def dialogues():
    return make_dialogues((6, 3, 1))


@pytest.fixture
def batch(dialogues):
    return collate(dialogues)
