"""HBAF's contrastive and total losses against hand computations in numpy."""

import math

import numpy as np
import pytest
import torch

from models import collate
from tests.conftest import make_dialogues, tiny
from training.losses import compute_loss, cross_entropy, hbaf_loss, info_nce, inter_modal_loss


def np_info_nce(anchor, other, tau):
    a = anchor / np.linalg.norm(anchor, axis=1, keepdims=True)
    o = other / np.linalg.norm(other, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(a)):
        pos = math.exp(a[i] @ o[i] / tau)
        neg = sum(math.exp(a[i] @ o[k] / tau) for k in range(len(a)) if k != i)
        total += -math.log(pos / (pos + neg))
    return total / len(a)


def test_info_nce_matches_eq_18_by_hand():
    rng = np.random.default_rng(0)
    a, o = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    got = info_nce(torch.tensor(a), torch.tensor(o), 0.1).item()
    assert got == pytest.approx(np_info_nce(a, o, 0.1), rel=1e-9)


def test_info_nce_is_small_for_aligned_pairs_and_zero_without_negatives():
    x = torch.eye(4)
    assert info_nce(x, x, 0.05).item() < 1e-6
    assert info_nce(x[:1], x[:1], 0.1).item() == 0.0


def test_inter_modal_loss_weights_eq_21():
    rng = np.random.default_rng(1)
    h_a, h_l, z_m = (rng.normal(size=(6, 3)) for _ in range(3))
    parts = inter_modal_loss(*(torch.tensor(x) for x in (h_a, h_l, z_m)), tau=0.5, lambdas=(1.0, 2.0, 0.5))
    expected = np_info_nce(h_a, z_m, 0.5) + 2.0 * np_info_nce(h_l, z_m, 0.5) + 0.5 * np_info_nce(h_a, h_l, 0.5)
    assert parts["inter"].item() == pytest.approx(expected, rel=1e-9)


def test_cross_entropy_ignores_unlabelled():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    labels = torch.tensor([[0, 1, -100]])
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = math.exp(1) / (math.exp(1) + 1)
    assert cross_entropy(logits, labels).item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)


def test_total_loss_is_eq_23():
    torch.manual_seed(0)
    m = tiny("hbaf", "offline", window=4, mu=0.3, tau=0.2)
    b = collate(make_dialogues((4, 3)))
    y = torch.where(b.mask, torch.randint(0, 7, b.mask.shape), torch.full(b.mask.shape, -100))
    out = m(b)
    parts = hbaf_loss(m, out, y, b)
    keep = b.mask
    inter = inter_modal_loss(out.reps["h_a"][keep], out.reps["h_l"][keep], out.reps["z_m"][keep], 0.2, (1, 1, 1))
    expected = cross_entropy(out.logits, y) + 0.3 * inter["inter"]
    torch.testing.assert_close(parts["total"], expected)
    assert compute_loss(m, out, y, b).keys() == parts.keys()


def test_a_batch_without_labels_gives_zero_not_nan():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    loss = cross_entropy(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)
