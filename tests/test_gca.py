"""GCA: its reps, block/loss switches and eqs. 3-4, 6 and 8 by hand (the model contract is in test_models.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import training.losses.gca as gca_losses
from models import collate
from models.gca import GatedFilter
from tests.conftest import assert_switch_changes_model, labels_for, make_dialogues, np_ce, tiny
from training.losses import compute_loss, gca_loss
from training.losses.gca import margin_loss


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_reps(mode, batch):
    out = tiny("gca", mode)(batch)
    assert set(out.reps) == {"x_f", "com_a", "com_t"}
    assert out.reps["com_a"].shape[-1] == out.reps["com_t"].shape[-1] == 6


@pytest.mark.parametrize(
    "switch",
    [{"gate": False}, {"homogeneous": False}, {"classify_common": False}, {"text_gru": False}, {"layers": 3}],
    ids=lambda s: next(iter(s)),
)
def test_each_block_switch_changes_parameters_and_output(switch, batch):
    assert_switch_changes_model("gca", switch, batch)


def test_homogeneous_off_drops_the_margin_loss(batch):
    m = tiny("gca", "offline", homogeneous=False)
    parts = gca_loss(m, m(batch), labels_for(batch), batch)
    assert "margin" not in parts and "com_a" not in m(batch).reps
    torch.testing.assert_close(parts["total"], parts["ce"])


@pytest.mark.parametrize("switch", [{"margin": 0.9}, {"margin_weight": 3.0}], ids=lambda s: next(iter(s)))
def test_each_loss_switch_changes_the_loss(switch, batch):
    y = labels_for(batch, classes=3)
    full, other = tiny("gca", "offline"), tiny("gca", "offline", **switch)
    other.load_state_dict(full.state_dict())
    assert not torch.isclose(
        gca_loss(full, full(batch), y, batch)["total"], gca_loss(other, other(batch), y, batch)["total"]
    )


# ---- hand computations -----------------------------------------------------------------------


def np_cos(x, y):
    return float(x @ y) / (math.sqrt(float(x @ x)) * math.sqrt(float(y @ y)))


def np_margin(features, modality, label, margin):
    """Eq. 6 by enumerating every triple."""
    total, count = 0.0, 0
    n = len(features)
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if modality[i] != modality[j] and modality[i] == modality[k] and label[i] == label[j] != label[k]:
                    total += max(0.0, margin - np_cos(features[i], features[j]) + np_cos(features[i], features[k]))
                    count += 1
    return total / count if count else 0.0


def test_margin_loss_is_eq_6():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(9, 4))
    modality = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    label = np.array([0, 1, 1, 2, 0, 1, 0, 2, 2])
    for margin in (0.0, 0.3, 2.0):
        got = margin_loss(torch.tensor(feats), torch.tensor(modality), torch.tensor(label), margin).item()
        assert got == pytest.approx(np_margin(feats, modality, label, margin), rel=1e-9)


def test_margin_loss_is_deterministic_and_order_free():
    rng = np.random.default_rng(1)
    feats = torch.tensor(rng.normal(size=(12, 5)))
    modality = torch.tensor([0] * 6 + [1] * 6)
    label = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 1])
    a = margin_loss(feats, modality, label, 0.4)
    assert margin_loss(feats, modality, label, 0.4).item() == a.item()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert margin_loss(feats[perm], modality[perm], label[perm], 0.4).item() == pytest.approx(a.item(), rel=1e-12)


def test_margin_loss_without_triples_is_zero():
    feats = torch.randn(4, 3, requires_grad=True)
    same_label = margin_loss(feats, torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 2, 2]), 0.5)
    one_modality = margin_loss(feats, torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 0, 1]), 0.5)
    for loss in (same_label, one_modality):
        assert loss.item() == 0.0 and loss.requires_grad


def test_chunked_margin_loss_matches_one_chunk(monkeypatch):
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(14, 3))
    modality = torch.tensor([0] * 7 + [1] * 7)
    label = torch.tensor(rng.integers(0, 3, size=14))
    whole = torch.tensor(feats, requires_grad=True)
    loss_whole = margin_loss(whole, modality, label, 0.5)
    loss_whole.backward()
    monkeypatch.setattr(gca_losses, "_CHUNK_ENTRIES", 7)  # one anchor per chunk
    chunked = torch.tensor(feats, requires_grad=True)
    loss_chunked = margin_loss(chunked, modality, label, 0.5)
    loss_chunked.backward()
    assert loss_chunked.item() == pytest.approx(loss_whole.item(), rel=1e-12)
    torch.testing.assert_close(chunked.grad, whole.grad)


def test_total_loss_is_eq_8():
    m = tiny("gca", "online", margin=0.25, margin_weight=0.7)
    b = collate(make_dialogues((5, 3), present=True))
    y = labels_for(b, classes=3)
    y[0, 2] = -100
    out = m(b)
    parts = gca_loss(m, out, y, b)
    r = {k: v.detach().double().numpy() for k, v in out.reps.items()}
    logits = out.logits.detach().double().numpy()
    mask, ap, tp, yy = b.mask.numpy(), b.audio_present.numpy(), b.text_present.numpy(), y.numpy()
    cells = [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]
    ce = np_ce([logits[i, t] for i, t in cells], [yy[i, t] for i, t in cells])
    feats, modality, label = [], [], []
    for i, t in cells:
        if yy[i, t] == -100:
            continue
        for mod, (present, key) in enumerate(((ap, "com_a"), (tp, "com_t"))):
            if present[i, t]:
                feats.append(r[key][i, t])
                modality.append(mod)
                label.append(yy[i, t])
    mar = np_margin(np.array(feats), modality, label, 0.25)
    assert mar > 0
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert parts["margin"].item() == pytest.approx(mar, rel=1e-5)
    assert parts["total"].item() == pytest.approx(ce + 0.7 * mar, rel=1e-5)
    assert compute_loss(m, out, y, b).keys() == parts.keys()


def test_gated_filter_is_eqs_3_4():
    torch.manual_seed(0)
    gate = GatedFilter(3).double()
    rng = np.random.default_rng(3)
    attended, own = rng.normal(size=(1, 2, 3)), rng.normal(size=(1, 2, 3))
    got = gate(torch.tensor(attended), torch.tensor(own)).detach().numpy()
    w, bias = gate.fc.weight.detach().numpy(), gate.fc.bias.detach().numpy()
    for t in range(2):
        x = np.concatenate([attended[0, t], own[0, t]])
        for c in range(3):
            p = 1.0 / (1.0 + math.exp(-(sum(w[c, q] * x[q] for q in range(6)) + bias[c])))
            assert got[0, t, c] == pytest.approx(p * attended[0, t, c] + (1 - p) * own[0, t, c], rel=1e-12)
