"""GCA: the axis its blocks run along, its reps, block/loss switches and eqs. 3-4, 6 and 8 by hand (the model
contract is in test_models.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import models
import training.losses.gca as gca_losses
from models import FeaturePipeline, collate
from models.gca import GatedFilter
from tests.conftest import assert_switch_changes_model, labels_for, make_dialogues, np_ce, tiny
from training.losses import compute_loss, gca_loss
from training.losses.gca import margin_loss


@pytest.fixture
def batch():
    """Dialogues with utterance vectors (dialogue level) and frames and tokens of varying length (utterance level)."""
    return collate(make_dialogues((6, 3, 1), sequences=True))


@pytest.mark.parametrize("level", ["utterance", "dialogue"])
@pytest.mark.parametrize("mode", ["online", "offline"])
def test_reps(mode, level, batch):
    out = tiny("gca", mode, level=level)(batch)
    assert set(out.reps) == {"x_f", "com_a", "com_t"}
    assert out.reps["com_a"].shape[-1] == out.reps["com_t"].shape[-1] == 6


def test_paper_gca_attends_over_frames_and_tokens_inside_each_utterance(batch):
    """Issue 14.3: the A-GRU, self and cross attention see one utterance's frames (queries) and tokens (keys)."""
    m = tiny("gca", "offline")
    assert m.config.level == "utterance" and m.inputs == ("frames", "tokens") and not m.uses_context
    seen = {}

    def keep(name):
        def hook(module, args, out):
            seen.setdefault(name, (tuple(args[0].shape), tuple(args[1].shape)))

        return hook

    m.blocks[0].cross.attention.register_forward_hook(keep("cross"))
    m.text_gru.attention.register_forward_hook(keep("self"))
    m(batch)
    n = int(batch.mask.sum())  # one row per real utterance
    frames = int(batch.frame_mask.sum(-1).max())
    tokens = int(batch.token_mask.sum(-1).max())
    d = m.config.d_model
    assert seen["cross"] == ((n, math.ceil(frames / 2), d), (n, tokens, d))  # Q: frames at stride 2, K/V: tokens
    assert seen["self"] == ((n, tokens, d), (n, tokens, d))


def test_paper_gca_classifies_each_utterance_from_its_own_inputs(batch):
    """Offline too, another utterance's frames and tokens change nothing; its own frames and tokens do."""
    m = tiny("gca", "offline")
    dlg = make_dialogues((4,), sequences=True)[0]
    base = m(collate([dlg])).logits[0]
    g = torch.Generator().manual_seed(3)
    other = dict(dlg[2], frames=torch.randn(7, 6, generator=g), tokens=torch.randn(2, 8, generator=g))
    changed = m(collate([dlg[:2] + [other] + dlg[3:]])).logits[0]
    torch.testing.assert_close(changed[[0, 1, 3]], base[[0, 1, 3]], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(changed[2], base[2])
    for key in ("frames", "tokens"):
        u = dict(dlg[2], **{key: other[key]})
        assert not torch.allclose(m(collate([dlg[:2] + [u] + dlg[3:]])).logits[0, 2], base[2]), key


def test_paper_gca_uses_learned_frame_and_token_for_an_absent_modality():
    m = tiny("gca", "offline")
    dlg = make_dialogues((4,), sequences=True, present=True)
    out = m(collate(dlg)).logits
    for u in dlg[0]:
        if not u["audio_present"]:
            u["frames"] = u["frames"] * 100  # ignored: marked absent
    torch.testing.assert_close(m(collate(dlg)).logits, out)
    for param in (m.audio_missing, m.text_missing):
        with torch.no_grad():
            param.fill_(2.0)
        assert not torch.allclose(m(collate(dlg)).logits, out)
        out = m(collate(dlg)).logits


def test_a_checkpoint_from_before_the_level_switch_loads_as_the_dialogue_variant(tmp_path, batch):
    old = tiny("gca", "online", level="dialogue")
    path = models.save(tmp_path / "old.pt", old, [f"c{i}" for i in range(7)], FeaturePipeline())
    payload = torch.load(path, weights_only=True)
    for key in ("level", "frame_dim", "token_dim", "frame_stride"):  # fields the old GCAConfig did not have
        del payload["config"][key]
    torch.save(payload, path)
    ck = models.load(path, device="cpu")
    assert ck.model.config.level == "dialogue" and ck.model.inputs == ("audio", "text")
    torch.testing.assert_close(ck.model(batch).logits, old(batch).logits, atol=0, rtol=0)


@pytest.mark.parametrize(
    "switch",
    [
        {"gate": False},
        {"homogeneous": False},
        {"classify_common": False},
        {"text_gru": False},
        {"layers": 3},
        {"level": "dialogue"},
    ],
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
    b = collate(make_dialogues((5, 3), present=True, sequences=True))
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
