"""Shapes, gradients, causality, streaming and checkpoints of HBAF and the baselines."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models
from models import ContextConfig, FeaturePipeline, StreamingClassifier, collate
from tests.conftest import make_dialogues
from training.losses import compute_loss

TINY = {
    "hbaf": dict(
        audio_dim=10,
        text_dim=8,
        d_model=16,
        conv_filters=4,
        lstm_hidden=8,
        transformer_heads=2,
        transformer_ff=16,
        gru_hidden=12,
        ffn_dim=16,
        max_speakers=4,
        dropout=0.0,
        speaker_state=True,
    ),
    "bclstm": dict(audio_dim=10, text_dim=8, hidden=6, fusion_hidden=5, dropout=0.0),
    "text": dict(input_dim=8, hidden=6, dropout=0.0),
    "audio": dict(input_dim=10, hidden=6, dropout=0.0),
}


def tiny(name, mode="online", window=3, **extra):
    torch.manual_seed(0)
    return models.build(name, context=ContextConfig(mode, window), **{**TINY[name], **extra}).eval()


def labels_for(batch):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 7, batch.mask.shape, generator=g)
    return torch.where(batch.mask, y, torch.full_like(y, -100))


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("mode", ["online", "offline"])
def test_shapes_and_padding(name, mode, batch):
    m = tiny(name, mode)
    out = m(batch)
    assert out.logits.shape == (3, 6, 7)
    assert torch.isfinite(out.logits).all()
    for value in out.reps.values():
        assert value.shape[:2] == (3, 6)
    # padded positions do not influence real ones: the short dialogue alone gives the same output
    alone = m(collate(make_dialogues((6, 3, 1))[1:2]))
    torch.testing.assert_close(alone.logits[0, :3], out.logits[1, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(TINY))
def test_gradients_reach_every_parameter(name):
    m = tiny(name, "offline").train()
    b = collate(make_dialogues((5, 4), present=True))
    loss = compute_loss(m, m(b), labels_for(b), b)["total"]
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("name", ["hbaf", "bclstm"])
def test_online_is_causal(name):
    m = tiny(name, "online", window=4)
    dlg = make_dialogues((6,))[0]
    base = m(collate([dlg])).logits
    for t in range(5):
        changed = [dict(u) for u in dlg]
        changed[t + 1]["audio"] = changed[t + 1]["audio"] + 5.0
        changed[t + 1]["text"] = changed[t + 1]["text"] - 3.0
        out = m(collate([changed])).logits
        torch.testing.assert_close(out[0, : t + 1], base[0, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[0, t + 1], base[0, t + 1])


def test_offline_sees_the_future():
    m = tiny("hbaf", "offline")
    dlg = make_dialogues((4,))
    base = m(collate(dlg)).logits
    dlg[0][3]["audio"] = dlg[0][3]["audio"] + 5.0
    assert not torch.allclose(m(collate(dlg)).logits[0, 0], base[0, 0])


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("window", [1, 3, 8])
def test_streaming_equals_batch(name, window):
    m = tiny(name, "online", window=window)
    dlg = make_dialogues((7,), seed=3)[0]
    expected = torch.softmax(m(collate([dlg])).logits[0], -1)
    stream = StreamingClassifier(m)
    got = torch.stack([stream.push(u) for u in dlg])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    stream.reset()
    torch.testing.assert_close(stream.push(dlg[0]), expected[0], atol=1e-5, rtol=0)


def test_streaming_temperature_flattens():
    m = tiny("hbaf")
    u = make_dialogues((1,))[0][0]
    sharp = StreamingClassifier(m).push(u)
    flat = StreamingClassifier(m, temperature=10.0).push(u)
    assert flat.max() < sharp.max()
    with pytest.raises(ValueError):
        StreamingClassifier(m, temperature=0)


def test_speaker_state_uses_speakers():
    m = tiny("hbaf", "offline")
    dlg = make_dialogues((5,))
    a = m(collate(dlg)).logits
    for u in dlg[0]:
        u["speaker"] = 0
    assert not torch.allclose(m(collate(dlg)).logits, a)


def test_missing_modality_uses_learned_vector():
    m = tiny("hbaf", "offline")
    with torch.no_grad():
        m.audio_missing.fill_(0.5)
    dlg = make_dialogues((4,), present=True)
    out = m(collate(dlg)).logits
    for u in dlg[0]:
        if not u["audio_present"]:
            u["audio"] = u["audio"] * 100  # ignored: the audio is marked absent
    torch.testing.assert_close(m(collate(dlg)).logits, out)


ABLATIONS = ["audio_context", "fusion", "bimodal_attention", "filter_gate", "residual", "contrastive"]


@pytest.mark.parametrize("switch", ABLATIONS)
def test_each_hbaf_ablation_removes_its_block(switch, batch):
    full, cut = tiny("hbaf", "offline"), tiny("hbaf", "offline", **{switch: False})
    names_full = {n for n, _ in full.named_parameters()}
    names_cut = {n for n, _ in cut.named_parameters()}
    removed = {n.split(".")[0] + "." + n.split(".")[1] for n in names_full - names_cut}
    assert removed, "switching a block off must remove its parameters"
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    y = labels_for(batch)
    if switch == "contrastive":  # the loss changes (the logits need not)
        lf, lc = compute_loss(full, full(batch), y, batch), compute_loss(cut, cut(batch), y, batch)
        assert "inter" in lf and "inter" not in lc
        assert not torch.allclose(lf["total"], lc["total"])
    else:
        assert not torch.allclose(full(batch).logits, cut(batch).logits)


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_unimodal_hbaf(modality, batch):
    m = tiny("hbaf", "offline", modalities=modality)
    out = m(batch)
    assert out.logits.shape == (3, 6, 7)
    other = "text" if modality == "audio" else "audio"
    assert f"h_{'a' if other == 'audio' else 'l'}" not in out.reps
    assert not any(n.startswith(f"{other}_") for n, _ in m.named_parameters())
    no_other = dataclasses.replace(batch, **{other: None})
    torch.testing.assert_close(m(no_other).logits, out.logits)


def test_missing_inputs_are_reported(batch):
    m = tiny("hbaf")
    with pytest.raises(ValueError, match="needs batch fields \\['audio'\\]"):
        m(dataclasses.replace(batch, audio=None))


def test_config_validation():
    with pytest.raises(ValueError, match="context mode"):
        ContextConfig("future", 3)
    with pytest.raises(ValueError, match="window"):
        ContextConfig("online", 0)
    with pytest.raises(ValueError, match="modalities"):
        models.build("hbaf", modalities="video")
    with pytest.raises(ValueError, match="no settings"):
        models.build("hbaf", colour="red")
    with pytest.raises(ValueError, match="unknown model"):
        models.build("gpt")


@pytest.mark.parametrize("name", list(TINY))
def test_checkpoint_round_trip(name, tmp_path, batch):
    m = tiny(name)
    labels = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
    path = models.save(tmp_path / "m.pt", m, labels, FeaturePipeline(), temperature=1.5, meta={"seed": 3})
    ck = models.load(path, device="cpu")
    assert ck.labels == labels and ck.temperature == 1.5 and ck.meta == {"seed": 3}
    assert ck.model.config == m.config
    torch.testing.assert_close(ck.model(batch).logits, m(batch).logits, atol=0, rtol=0)


def test_per_speaker_state_with_one_speaker_equals_plain_gru():
    """The hand-written per-speaker GRU loop must be the same GRU as nn.GRU (eq. 5)."""
    m = tiny("hbaf", "offline")
    dlg = make_dialogues((5, 3), speakers=1)
    batch = collate(dlg)
    net = m.text_context
    with torch.no_grad():
        per_speaker = net(batch.text, batch.mask, batch.speaker)
        plain = net(batch.text, batch.mask, None)
    torch.testing.assert_close(per_speaker[batch.mask], plain[batch.mask], atol=1e-6, rtol=1e-5)
