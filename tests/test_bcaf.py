"""BCAF: shapes, gradients, causality, streaming, checkpoints, switches and eqs. 3, 14 and 18 by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import models
from models import ContextConfig, FeaturePipeline, StreamingClassifier, collate
from models.bcaf import BCAFConfig, JointAttention
from tests.conftest import make_dialogues
from training.losses import bcaf_loss, compute_loss
from training.losses.bcaf import connection_loss

TINY = dict(audio_dim=10, text_dim=8, d_model=16, latent_dim=16, heads=2, ffn_dim=24, attention_layers=2, dropout=0.0)
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def tiny(mode="online", window=3, seed=0, **extra):
    torch.manual_seed(seed)
    return models.build("bcaf", context=ContextConfig(mode, window), **{**TINY, **extra}).eval()


def labels_for(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 7, batch.mask.shape, generator=g)
    return torch.where(batch.mask, y, torch.full_like(y, -100))


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_shapes_and_padding(mode, batch):
    m = tiny(mode)
    out = m(batch)
    assert out.logits.shape == (3, 6, 7)
    assert torch.isfinite(out.logits).all()
    assert {"logits_a", "logits_l", "logits_m", "e_a", "e_l", "d_a", "d_l", "cor_a", "cor_l"} <= set(out.reps)
    for value in out.reps.values():
        assert value.shape[:2] == (3, 6)
    assert out.reps["d_a"].shape[-1] == 10 and out.reps["d_l"].shape[-1] == 8 and out.reps["e_a"].shape[-1] == 16
    torch.testing.assert_close(out.logits, out.reps["logits_m"])
    # padding never reaches a real utterance: the short dialogue alone gives the same output
    alone = m(collate(make_dialogues((6, 3, 1))[1:2]))
    torch.testing.assert_close(alone.logits[0, :3], out.logits[1, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [{}, {"decision": "sum", "bimodal_head_layers": 2}, {"connection": False}, {"self_attention": False}],
    ids=["default", "sum-deep-head", "no-connection", "no-self-attention"],
)
def test_gradients_reach_every_parameter(extra):
    m = tiny("offline", **extra).train()
    b = collate(make_dialogues((5, 4), present=True))
    loss = compute_loss(m, m(b), labels_for(b), b)["total"]
    loss.backward()
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
    dlg[0][3]["audio"] = dlg[0][3]["audio"] + 5.0
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
    m = tiny(decision="sum", bimodal_head_layers=2)
    path = models.save(tmp_path / "bcaf.pt", m, LABELS, FeaturePipeline())
    ck = models.load(path, device="cpu")
    assert isinstance(ck.model.config, BCAFConfig) and ck.model.config == m.config
    out, ref = ck.model(batch), m(batch)
    torch.testing.assert_close(out.logits, ref.logits, atol=0, rtol=0)
    for key in ref.reps:
        torch.testing.assert_close(out.reps[key], ref.reps[key], atol=0, rtol=0)


def test_missing_modality_uses_learned_vector():
    m = tiny("offline")
    dlg = make_dialogues((4,), present=True)
    out = m(collate(dlg)).logits
    for u in dlg[0]:
        if not u["text_present"]:
            u["text"] = u["text"] * 100  # ignored: the text is marked absent
    torch.testing.assert_close(m(collate(dlg)).logits, out)


def _copy_shared_weights(src, dst):
    """Give ``dst`` every weight of ``src`` with the same name and shape, so outputs differ only by the switch."""
    own = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape}
    own.update(shared)
    dst.load_state_dict(own)


def _param_shapes(m):
    return {(n, tuple(p.shape)) for n, p in m.named_parameters()}


@pytest.mark.parametrize(
    "switch",
    [
        {"connection": False},
        {"self_attention": False},
        {"cross_attention": False},
        {"correlative": False},
        {"bimodal_head_layers": 3},
    ],
    ids=lambda s: next(iter(s)),
)
def test_each_block_switch_changes_parameters_and_output(switch, batch):
    full, cut = tiny("offline"), tiny("offline", seed=1, **switch)
    assert _param_shapes(full) != _param_shapes(cut)
    _copy_shared_weights(full, cut)
    assert not torch.allclose(full(batch).logits, cut(batch).logits)


def test_decision_switch_changes_output_only(batch):
    bimodal, summed = tiny("offline"), tiny("offline", decision="sum")
    assert _param_shapes(bimodal) == _param_shapes(summed)
    out = summed(batch)
    expected = sum(torch.log_softmax(out.reps[k], -1) for k in ("logits_a", "logits_l", "logits_m"))
    torch.testing.assert_close(out.logits, expected)
    assert not torch.allclose(bimodal(batch).logits, out.logits)


@pytest.mark.parametrize(
    "switch",
    [
        {"decoder_output_relu": True},
        {"connection_gram": "utterance", "decoder_term": "none"},
        {"connection_reduction": "sum"},
        {"decoder_term": "subtract"},
        {"decoder_term": "none"},
        {"alpha": 0.5},
        {"beta": 0.2},
        {"mu": 2.0},
    ],
    ids=lambda s: f"{next(iter(s))}={next(iter(s.values()))}",
)
def test_each_loss_switch_changes_the_loss(switch, batch):
    y = labels_for(batch)
    full, other = tiny("offline"), tiny("offline", **switch)
    assert _param_shapes(full) == _param_shapes(other)
    other.load_state_dict(full.state_dict())
    a = bcaf_loss(full, full(batch), y, batch)["total"]
    b = bcaf_loss(other, other(batch), y, batch)["total"]
    assert not torch.isclose(a, b)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        BCAFConfig(d_model=10, heads=4)
    with pytest.raises(ValueError, match="eq. 17"):
        BCAFConfig(cross_attention=False, correlative=False)
    with pytest.raises(ValueError, match="decoder_term"):
        BCAFConfig(decoder_term="multiply")
    with pytest.raises(ValueError, match="non-negative"):
        BCAFConfig(mu=-1.0)
    with pytest.raises(ValueError, match="audio_dim == text_dim"):
        BCAFConfig(connection_gram="utterance")
    BCAFConfig(connection_gram="utterance", decoder_term="none")


# ---- hand computations -----------------------------------------------------------------------


def np_sq(x, reduction):
    total = 0.0
    for v in np.asarray(x).ravel():
        total += float(v) ** 2
    return total if reduction == "sum" else total / np.asarray(x).size


def np_gram_term(x, y, gram, reduction):
    n = x.shape[0]
    if gram == "feature":
        rows, cols = x.shape[1], y.shape[1]
        g = np.zeros((rows, cols))
        for p in range(rows):
            for q in range(cols):
                g[p, q] = sum(x[i, p] * y[i, q] for i in range(n))
        if reduction == "mean":
            g /= n
    else:
        rows = cols = n
        g = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                g[i, j] = sum(x[i, p] * y[j, p] for p in range(x.shape[1]))
    eye = np.array([[1.0 if p == q else 0.0 for q in range(cols)] for p in range(rows)])
    return np_sq(eye - g, reduction)


def np_connection(h_a, h_l, e_a, e_l, d_a, d_l, mu, gram, reduction, decoder_term):
    total = np_sq(h_a - d_a, reduction) + np_sq(h_l - d_l, reduction) + mu * np_gram_term(e_a, e_l, gram, reduction)
    if decoder_term != "none":
        sign = 1.0 if decoder_term == "add" else -1.0
        total += mu * sign * np_gram_term(d_a, d_l, gram, reduction)
    return total


def np_ce(logits, labels):
    total, count = 0.0, 0
    for row, y in zip(logits, labels):
        if y == -100:
            continue
        log_z = math.log(sum(math.exp(v) for v in row))
        total += log_z - row[y]
        count += 1
    return total / count


@pytest.mark.parametrize("gram", ["feature", "utterance"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("decoder_term", ["add", "subtract", "none"])
def test_connection_loss_is_eq_3(gram, reduction, decoder_term):
    rng = np.random.default_rng(0)
    h_a, d_a = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    text_dim = 4 if gram == "utterance" else 3  # row-by-row d_a d_l^T needs equal widths
    h_l, d_l = rng.normal(size=(5, text_dim)), rng.normal(size=(5, text_dim))
    e_a, e_l = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    arrays = (h_a, h_l, e_a, e_l, d_a, d_l)
    got = connection_loss(*(torch.tensor(x) for x in arrays), 0.7, gram, reduction, decoder_term)
    expected = np_connection(*arrays, 0.7, gram, reduction, decoder_term)
    assert got["connection"].item() == pytest.approx(expected, rel=1e-9)


def test_connection_loss_without_utterances_is_zero():
    empty = torch.zeros(0, 4, requires_grad=True)
    out = connection_loss(empty, empty, empty, empty, empty, empty, 0.5)
    assert out["connection"].item() == 0.0 and out["connection"].requires_grad


def test_total_loss_is_eq_18():
    m = tiny("online", alpha=0.3, beta=0.6, mu=0.4, connection_reduction="sum")
    b = collate(make_dialogues((4, 3), present=True))
    y = labels_for(b)
    y[0, 1] = -100  # an unlabelled turn still counts for the self-supervised connection loss
    out = m(b)
    parts = bcaf_loss(m, out, y, b)
    r = {k: v.detach().double().numpy() for k, v in out.reps.items()}
    mask, ap, tp, yy = b.mask.numpy(), b.audio_present.numpy(), b.text_present.numpy(), y.numpy()
    cells = [(i, t) for i in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[i, t]]
    heads = {k: np_ce([r[f"logits_{k}"][i, t] for i, t in cells], [yy[i, t] for i, t in cells]) for k in "alm"}
    keep = [(i, t) for i, t in cells if ap[i, t] and tp[i, t]]
    assert 0 < len(keep) < len(cells)

    def rows(x):
        return np.array([x[i, t] for i, t in keep])

    audio, text = b.audio.double().numpy(), b.text.double().numpy()
    arrays = (rows(audio), rows(text), rows(r["e_a"]), rows(r["e_l"]), rows(r["d_a"]), rows(r["d_l"]))
    l_c = np_connection(*arrays, 0.4, "feature", "sum", "add")
    expected = 0.3 * l_c + 0.6 * (heads["a"] + heads["l"]) + heads["m"]
    assert parts["total"].item() == pytest.approx(expected, rel=1e-5)
    assert parts["connection"].item() == pytest.approx(l_c, rel=1e-5)
    assert compute_loss(m, out, y, b).keys() == parts.keys()


def test_no_connection_means_no_connection_loss(batch):
    m = tiny("offline", connection=False)
    parts = bcaf_loss(m, m(batch), labels_for(batch), batch)
    assert "connection" not in parts
    torch.testing.assert_close(parts["total"], parts["l_m"] + parts["l_a"] + parts["l_l"])


def test_joint_attention_is_eq_14():
    cfg = BCAFConfig(**{**TINY, "heads": 1, "d_model": 4}, lambda_init=0.3)
    torch.manual_seed(0)
    joint = JointAttention(cfg).double().eval()
    rng = np.random.default_rng(2)
    h_a, h_l = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 3, 4))
    mask = torch.tensor([[True, True, False]])
    got = joint(torch.tensor(h_a), torch.tensor(h_l), mask)[0].detach().numpy()
    w = {k: getattr(joint, k).weight.detach().numpy() for k in ("q_a", "k_a", "v_a", "q_l", "k_l", "v_l")}
    proj = {k: h_a[0] @ w[k].T if k.endswith("_a") else h_l[0] @ w[k].T for k in w}
    v = (proj["v_a"] + proj["v_l"]) / 2
    for i in range(3):
        joint_s = [(proj["q_a"][i] @ proj["k_a"][j] + proj["q_l"][i] @ proj["k_l"][j]) / 2.0 for j in range(2)]
        cross_s = [proj["q_a"][i] @ proj["k_l"][j] / 2.0 for j in range(2)]
        p_joint = np.exp(joint_s) / np.exp(joint_s).sum()
        p_cross = np.exp(cross_s) / np.exp(cross_s).sum()
        expected = sum((p_joint[j] - joint.lam.item() * p_cross[j]) * v[j] for j in range(2))
        np.testing.assert_allclose(got[i], expected, rtol=1e-9, atol=1e-12)
