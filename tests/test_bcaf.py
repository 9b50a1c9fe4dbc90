"""BCAF: its reps, block/loss switches and eqs. 3, 14 and 18 by hand (the model contract is in test_models.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import collate
from models.bcaf import BCAFConfig, JointAttention
from tests.conftest import TINY, assert_switch_changes_model, labels_for, make_dialogues, np_ce, param_shapes, tiny
from training.losses import bcaf_loss, compute_loss
from training.losses.bcaf import connection_loss


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_reps_and_bimodal_decision(mode, batch):
    out = tiny("bcaf", mode)(batch)
    assert {"logits_a", "logits_l", "logits_m", "e_a", "e_l", "d_a", "d_l", "cor_a", "cor_l"} <= set(out.reps)
    assert out.reps["d_a"].shape[-1] == 10 and out.reps["d_l"].shape[-1] == 8 and out.reps["e_a"].shape[-1] == 16
    torch.testing.assert_close(out.logits, out.reps["logits_m"])


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
    assert_switch_changes_model("bcaf", switch, batch)


def test_decision_switch_changes_output_only(batch):
    bimodal, summed = tiny("bcaf", "offline"), tiny("bcaf", "offline", decision="sum")
    assert param_shapes(bimodal) == param_shapes(summed)
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
    full, other = tiny("bcaf", "offline"), tiny("bcaf", "offline", **switch)
    assert param_shapes(full) == param_shapes(other)
    other.load_state_dict(full.state_dict())
    a = bcaf_loss(full, full(batch), y, batch)["total"]
    b = bcaf_loss(other, other(batch), y, batch)["total"]
    assert not torch.isclose(a, b)


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
    m = tiny("bcaf", "online", alpha=0.3, beta=0.6, mu=0.4, connection_reduction="sum")
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
    m = tiny("bcaf", "offline", connection=False)
    parts = bcaf_loss(m, m(batch), labels_for(batch), batch)
    assert "connection" not in parts
    torch.testing.assert_close(parts["total"], parts["l_m"] + parts["l_a"] + parts["l_l"])


def test_joint_attention_is_eq_14():
    cfg = BCAFConfig(**{**TINY["bcaf"], "heads": 1, "d_model": 4}, lambda_init=0.3)
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
