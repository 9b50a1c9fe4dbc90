"""GCA: shapes, gradients, causality, streaming, checkpoints, switches and eqs. 3-4, 6 and 8 by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import models
import training.losses.gca as gca_losses
from models import ContextConfig, FeaturePipeline, StreamingClassifier, collate
from models.gca import GatedFilter, GCAConfig
from tests.conftest import make_dialogues
from training.losses import compute_loss, gca_loss
from training.losses.gca import margin_loss

TINY = dict(audio_dim=10, text_dim=8, d_model=16, heads=2, ffn_dim=24, layers=2, shared_dim=6, dropout=0.0)
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def tiny(mode="online", window=3, seed=0, **extra):
    torch.manual_seed(seed)
    return models.build("gca", context=ContextConfig(mode, window), **{**TINY, **extra}).eval()


def labels_for(batch, seed=1, classes=7):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, batch.mask.shape, generator=g)
    return torch.where(batch.mask, y, torch.full_like(y, -100))


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_shapes_and_padding(mode, batch):
    m = tiny(mode)
    out = m(batch)
    assert out.logits.shape == (3, 6, 7)
    assert torch.isfinite(out.logits).all()
    assert set(out.reps) == {"x_f", "com_a", "com_t"}
    for value in out.reps.values():
        assert value.shape[:2] == (3, 6)
    assert out.reps["com_a"].shape[-1] == out.reps["com_t"].shape[-1] == 6
    alone = m(collate(make_dialogues((6, 3, 1))[1:2]))
    torch.testing.assert_close(alone.logits[0, :3], out.logits[1, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [{}, {"gate": False, "text_gru": False}, {"classify_common": False}],
    ids=["default", "no-gate-no-gru", "margin-only-shared"],
)
def test_gradients_reach_every_parameter(extra):
    m = tiny("offline", **extra).train()
    b = collate(make_dialogues((5, 4), present=True))
    parts = compute_loss(m, m(b), labels_for(b, classes=3), b)
    assert parts["margin"].item() > 0
    parts["total"].backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"no gradient reaches {dead}"


def test_online_is_causal():
    m = tiny("online", window=4)
    dlg = make_dialogues((6,))[0]
    base = m(collate([dlg]))
    for t in range(5):
        changed = [dict(u) for u in dlg]
        changed[t + 1]["audio"] = changed[t + 1]["audio"] + 5.0
        changed[t + 1]["text"] = changed[t + 1]["text"] - 3.0
        out = m(collate([changed]))
        torch.testing.assert_close(out.logits[0, : t + 1], base.logits[0, : t + 1], atol=1e-6, rtol=0)
        for key, value in out.reps.items():
            torch.testing.assert_close(value[0, : t + 1], base.reps[key][0, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out.logits[0, t + 1], base.logits[0, t + 1])


def test_offline_sees_the_future():
    m = tiny("offline")
    dlg = make_dialogues((4,))
    base = m(collate(dlg)).logits
    dlg[0][3]["text"] = dlg[0][3]["text"] + 5.0
    assert not torch.allclose(m(collate(dlg)).logits[0, 0], base[0, 0])


@pytest.mark.parametrize("window", [1, 3, 8])
def test_streaming_equals_batch(window):
    m = tiny("online", window=window)
    dlg = make_dialogues((7,), seed=3)[0]
    expected = torch.softmax(m(collate([dlg])).logits[0], -1)
    stream = StreamingClassifier(m)
    got = torch.stack([stream.push(u) for u in dlg])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_checkpoint_round_trip(tmp_path, batch):
    m = tiny(margin=0.35, margin_weight=0.5, gate=False)
    path = models.save(tmp_path / "gca.pt", m, LABELS, FeaturePipeline())
    ck = models.load(path, device="cpu")
    assert isinstance(ck.model.config, GCAConfig) and ck.model.config == m.config
    assert ck.model.config.margin == 0.35 and ck.model.config.margin_weight == 0.5
    out, ref = ck.model(batch), m(batch)
    torch.testing.assert_close(out.logits, ref.logits, atol=0, rtol=0)
    for key in ref.reps:
        torch.testing.assert_close(out.reps[key], ref.reps[key], atol=0, rtol=0)


def test_missing_modality_uses_learned_vector():
    m = tiny("offline")
    dlg = make_dialogues((4,), present=True)
    out = m(collate(dlg)).logits
    for u in dlg[0]:
        if not u["audio_present"]:
            u["audio"] = u["audio"] * 100  # ignored: the audio is marked absent
    torch.testing.assert_close(m(collate(dlg)).logits, out)


def _copy_shared_weights(src, dst):
    own = dst.state_dict()
    own.update({k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape})
    dst.load_state_dict(own)


def _param_shapes(m):
    return {(n, tuple(p.shape)) for n, p in m.named_parameters()}


@pytest.mark.parametrize(
    "switch",
    [{"gate": False}, {"homogeneous": False}, {"classify_common": False}, {"text_gru": False}, {"layers": 3}],
    ids=lambda s: next(iter(s)),
)
def test_each_block_switch_changes_parameters_and_output(switch, batch):
    full, cut = tiny("offline"), tiny("offline", seed=1, **switch)
    assert _param_shapes(full) != _param_shapes(cut)
    _copy_shared_weights(full, cut)
    assert not torch.allclose(full(batch).logits, cut(batch).logits)


def test_homogeneous_off_drops_the_margin_loss(batch):
    m = tiny("offline", homogeneous=False)
    parts = gca_loss(m, m(batch), labels_for(batch), batch)
    assert "margin" not in parts and "com_a" not in m(batch).reps
    torch.testing.assert_close(parts["total"], parts["ce"])


@pytest.mark.parametrize("switch", [{"margin": 0.9}, {"margin_weight": 3.0}], ids=lambda s: next(iter(s)))
def test_each_loss_switch_changes_the_loss(switch, batch):
    y = labels_for(batch, classes=3)
    full, other = tiny("offline"), tiny("offline", **switch)
    other.load_state_dict(full.state_dict())
    assert not torch.isclose(
        gca_loss(full, full(batch), y, batch)["total"], gca_loss(other, other(batch), y, batch)["total"]
    )


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GCAConfig(d_model=10, heads=4)
    with pytest.raises(ValueError, match="non-negative"):
        GCAConfig(margin=-0.1)
    with pytest.raises(ValueError, match="layers must be positive"):
        GCAConfig(layers=0)


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


def np_ce(logits, labels):
    total, count = 0.0, 0
    for row, y in zip(logits, labels):
        if y == -100:
            continue
        total += math.log(sum(math.exp(v) for v in row)) - row[y]
        count += 1
    return total / count


def test_total_loss_is_eq_8():
    m = tiny("online", margin=0.25, margin_weight=0.7)
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
