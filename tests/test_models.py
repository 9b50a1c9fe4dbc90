"""The contract every registered model keeps (shapes, padding, gradients, causality, streaming, checkpoints,
config errors), then HBAF's own blocks. Model-specific tests live in test_<model>.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models
from models import ContextConfig, FeaturePipeline, FramePipeline, StreamingClassifier, collate
from tests.conftest import LABELS, TINY, frames_and_tokens, labels_for, make_dialogues, tiny
from training.losses import compute_loss

assert set(TINY) == set(models.MODEL_NAMES), "every registered model needs a tiny config in tests/conftest.py"


def cases(*variants):
    """Every registered model at its tiny config, then ``(name, overrides)`` variants (``mode``/``window`` too)."""
    params = [pytest.param(name, {}, id=name) for name in models.MODEL_NAMES]
    return params + [
        pytest.param(name, extra, id=name + "-" + "-".join(f"{k}={v}" for k, v in extra.items()))
        for name, extra in variants
    ]


def dialogues_for(m, lengths, **kw):
    """Random dialogues carrying every input any model reads (MCFN's frames and tokens too), sized for ``m``."""
    return make_dialogues(lengths, sequences=True, frame_dim=getattr(m.config, "frame_dim", 6), **kw)


def perturb(u, seed):
    """Utterance ``u`` with every input changed (frames and tokens get new lengths too)."""
    changed = dict(u, audio=u["audio"] + 5.0, text=u["text"] - 3.0)
    g = torch.Generator().manual_seed(seed)
    return {**changed, **frames_and_tokens(g, 9, 5, u["frames"].shape[1], u["tokens"].shape[1])}


def same_up_to(a, b, t, **tol):
    """Outputs ``a`` and ``b`` of a one-dialogue batch agree (logits and every rep) on utterances ``0..t-1``."""
    torch.testing.assert_close(a.logits[0, :t], b.logits[0, :t], **tol)
    for key, value in a.reps.items():
        torch.testing.assert_close(value[0, :t], b.reps[key][0, :t], **tol)


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize(
    "name, extra",
    cases(
        ("mcfn", {"utterance_context": True}),
        ("mcfn", {"adjustment_level": "sequence"}),
        ("gca", {"level": "dialogue"}),
        ("gca", {"frame_stride": 3}),
    ),
)
def test_shapes_and_padding(name, extra, mode):
    m = tiny(name, mode, **extra)
    dlgs = dialogues_for(m, (6, 3, 1))
    out = m(collate(dlgs))
    assert out.logits.shape == (3, 6, m.num_classes)
    assert torch.isfinite(out.logits).all()
    for value in out.reps.values():
        assert value.shape[:2] == (3, 6)
    # padding (utterances, frames, tokens) never reaches a real utterance: the short dialogue alone gives the same
    alone = m(collate(dlgs[1:2]))
    torch.testing.assert_close(alone.logits[0, :3], out.logits[1, :3], atol=1e-5, rtol=1e-5)
    for key, value in alone.reps.items():
        ref = out.reps[key][1, :3]
        if value.dim() == 4:  # MCFN's word-level reps: the batch pads to more tokens
            ref = ref[:, : value.shape[2]]
        torch.testing.assert_close(value[0, :3], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name, extra",
    cases(
        ("bcaf", {"decision": "sum", "bimodal_head_layers": 2}),
        ("bcaf", {"connection": False}),
        ("bcaf", {"self_attention": False}),
        ("gca", {"gate": False, "text_gru": False}),
        ("gca", {"classify_common": False}),
        ("gca", {"level": "dialogue"}),
        ("mcfn", {"mode": "online", "window": 2}),
        ("mcfn", {"mode": "online", "window": 2, "utterance_context": True}),
        ("mcfn", {"mode": "online", "window": 2, "coattention_score": "additive", "adjustment_level": "sequence"}),
    ),
)
def test_gradients_reach_every_parameter(name, extra):
    m = tiny(name, **{"mode": "offline", **extra}).train()
    b = collate(dialogues_for(m, (5, 4), present=True))
    # three classes, so GCA's eq. 6 finds triples; one unlabelled turn
    parts = compute_loss(m, m(b), labels_for(b, classes=3, unlabelled=True), b)
    inactive = [k for k, v in parts.items() if not v.item() > 0]
    assert not inactive, f"loss terms {inactive} are not active on the tiny batch"
    parts["total"].backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize(
    "name, extra",
    cases(("mcfn", {"window": 3}), ("mcfn", {"window": 3, "utterance_context": True}), ("gca", {"level": "dialogue"})),
)
def test_online_is_causal(name, extra):
    m = tiny(name, **{"mode": "online", "window": 4, **extra})
    dlg = dialogues_for(m, (6,))[0]
    base = m(collate([dlg]))
    for t in range(5):
        changed = list(dlg)
        changed[t + 1] = perturb(dlg[t + 1], seed=50 + t)
        out = m(collate([changed]))
        same_up_to(out, base, t + 1, atol=1e-6, rtol=0)
        assert not torch.allclose(out.logits[0, t + 1], base.logits[0, t + 1])


# offline, the inputs of a later utterance that reach an earlier prediction: dialogue-level GCA's audio branch
# has no context, MCFN's utterance context is a causal GRU, and the unimodal baselines, MCFN and the paper's
# (utterance-level) GCA use no context at all
SEES_THE_FUTURE = {
    "hbaf": {"audio", "text"},
    "bclstm": {"audio", "text"},
    "bcaf": {"audio", "text"},
    "gca-dialogue": {"text"},
}


@pytest.mark.parametrize("name, extra", cases(("mcfn", {"utterance_context": True}), ("gca", {"level": "dialogue"})))
def test_offline_sees_the_future(name, extra):
    m = tiny(name, "offline", **extra)
    dlg = dialogues_for(m, (4,))
    base = m(collate(dlg)).logits
    key = name + ("-dialogue" if extra.get("level") == "dialogue" else "")
    for field in m.inputs:
        changed = [list(dlg[0])]
        changed[0][3] = dict(dlg[0][3], **{field: perturb(dlg[0][3], seed=7)[field]})
        sees = not torch.allclose(m(collate(changed)).logits[0, 0], base[0, 0])
        assert sees == (field in SEES_THE_FUTURE.get(key, ())), field


@pytest.mark.parametrize(
    "name, extra",
    cases(
        ("mcfn", {"utterance_context": True}),
        ("mcfn", {"utterance_context": True, "modalities": "text"}),
        ("gca", {"level": "dialogue"}),
    ),
)
@pytest.mark.parametrize("window", [1, 3, 8])
def test_streaming_equals_batch(name, extra, window):
    m = tiny(name, "online", window=window, **extra)
    dlgs = dialogues_for(m, (2, 7), seed=3)  # the streamed dialogue sits in a padded batch
    expected = torch.softmax(m(collate(dlgs)).logits[1], -1)
    torch.testing.assert_close(torch.softmax(m(collate(dlgs[1:])).logits[0], -1), expected, atol=1e-5, rtol=0)
    stream = StreamingClassifier(m)
    got = torch.stack([stream.push(u) for u in dlgs[1]])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    stream.reset()
    torch.testing.assert_close(stream.push(dlgs[1][0]), expected[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name, extra",
    cases(
        ("bcaf", {"decision": "sum", "bimodal_head_layers": 2}),
        ("gca", {"margin": 0.35, "margin_weight": 0.5, "gate": False}),
        ("gca", {"level": "dialogue"}),
        ("gca", {"frame_dim": FramePipeline().dim}),
        ("mcfn", {"window": 2, "frame_dim": FramePipeline().dim, "utterance_context": True}),
    ),
)
def test_checkpoint_round_trip(name, extra, tmp_path):
    m = tiny(name, **extra)
    b = collate(dialogues_for(m, (3, 2)))
    m.train()(b)  # move any batch-norm running statistics off their defaults
    m.eval()
    pipeline = FeaturePipeline(frames=FramePipeline(), tokens=True) if "frames" in m.inputs else FeaturePipeline()
    labels = LABELS[: m.num_classes]
    path = models.save(tmp_path / "m.pt", m, labels, pipeline, temperature=1.5, meta={"seed": 3})
    ck = models.load(path, device="cpu")
    assert ck.labels == labels and ck.temperature == 1.5 and ck.meta == {"seed": 3} and ck.pipeline == pipeline
    assert isinstance(ck.model.config, models.lookup(name)[1]) and ck.model.config == m.config
    assert all(getattr(ck.model.config, k) == v for k, v in extra.items() if k not in ("mode", "window"))
    out, ref = ck.model(b), m(b)
    torch.testing.assert_close(out.logits, ref.logits, atol=0, rtol=0)
    for key in ref.reps:
        torch.testing.assert_close(out.reps[key], ref.reps[key], atol=0, rtol=0)


@pytest.mark.parametrize("name, extra", [("hbaf", {}), ("bcaf", {}), ("gca", {"level": "dialogue"})])
def test_missing_modality_uses_learned_vector(name, extra):
    m = tiny(name, "offline", **extra)
    with torch.no_grad():
        m.audio_missing.fill_(0.5)
        m.text_missing.fill_(-0.5)
    dlg = make_dialogues((4,), present=True)
    out = m(collate(dlg)).logits
    for u in dlg[0]:
        for modality in ("audio", "text"):
            if not u[f"{modality}_present"]:
                u[modality] = u[modality] * 100  # ignored: marked absent
    torch.testing.assert_close(m(collate(dlg)).logits, out)
    with torch.no_grad():
        m.audio_missing.fill_(2.0)
    assert not torch.allclose(m(collate(dlg)).logits, out), "the learned vector stands in for the absent audio"


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("gpt", {}, "unknown model"),
        ("hbaf", {"colour": "red"}, "no settings"),
        ("hbaf", {"modalities": "video"}, "modalities"),
        ("bcaf", {"d_model": 10, "heads": 4}, "divisible"),
        ("bcaf", {"cross_attention": False, "correlative": False}, "eq. 17"),
        ("bcaf", {"decoder_term": "multiply"}, "decoder_term"),
        ("bcaf", {"mu": -1.0}, "non-negative"),
        ("bcaf", {"connection_gram": "utterance"}, "audio_dim == text_dim"),
        ("bcaf", {"connection_gram": "utterance", "decoder_term": "none"}, None),
        ("gca", {"d_model": 10, "heads": 4}, "divisible"),
        ("gca", {"margin": -0.1}, "non-negative"),
        ("gca", {"layers": 0}, "layers must be positive"),
        ("gca", {"level": "dialog"}, "level"),
        ("gca", {"frame_stride": 0}, "frame_stride must be positive"),
        ("mcfn", {"alpha": 0.5}, "sum to 1"),
        ("mcfn", {"alpha": -0.1, "beta": 0.7}, "sum to 1"),
        ("mcfn", {"conv_dilations": (1,)}, "equal length"),
        ("mcfn", {"conv_kernel": 4}, "odd"),
        ("mcfn", {"coattention_heads": 4}, "divisible"),
        ("mcfn", {"coattention_score": "dot"}, "coattention_score"),
        ("mcfn", {"adjustment_level": "frame"}, "adjustment_level"),
        ("mcfn", {"modalities": "video"}, "modalities"),
        ("mcfn", {"omega": -1.0}, "non-negative"),
        ("mcfn", {"modalities": "audio", "lambda_s": 0.0}, "lambda"),
        ("mcfn", {"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(name, bad, match):
    """A bad setting is one clear ValueError (``match`` None: the valid neighbour of a rejected setting builds)."""
    if match is None:
        assert models.build(name, **{**TINY[name], **bad}).config.connection_gram == bad["connection_gram"]
        return
    with pytest.raises(ValueError, match=match):
        models.build(name, **{**TINY.get(name, {}), **bad})


def test_context_config_validation():
    with pytest.raises(ValueError, match="context mode"):
        ContextConfig("future", 3)
    with pytest.raises(ValueError, match="window"):
        ContextConfig("online", 0)


# ---- HBAF ------------------------------------------------------------------------------------


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


def audio_stream_grad_wrt_text(m, batch):
    """d(random projection of h_a at real utterances) / d(text inputs), and the outputs with every text vector
    changed. (A plain sum would not do: h_a leaves a LayerNorm, whose outputs sum to a constant at init.)"""
    text = batch.text.clone().requires_grad_(True)
    out = m(dataclasses.replace(batch, text=text))
    h_a = out.reps["h_a"][batch.mask]
    probe = torch.randn(h_a.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((h_a * probe).sum(), text, allow_unused=True)
    changed = m(dataclasses.replace(batch, text=batch.text * -3.0 + 1.0))
    return (torch.zeros_like(text) if grad is None else grad), out, changed


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_no_bimodal_attention_leaves_no_text_content_path_into_audio(mode, batch):
    """Without bimodal attention h_a is a function of audio alone (issue 14.1): no raw h_l into the audio gate."""
    m = tiny("hbaf", mode, bimodal_attention=False)
    grad, out, changed = audio_stream_grad_wrt_text(m, batch)
    assert not grad.any()
    torch.testing.assert_close(changed.reps["h_a"], out.reps["h_a"], atol=0, rtol=0)
    assert not torch.allclose(changed.reps["h_l"], out.reps["h_l"])  # the text stream itself does move
    assert not torch.allclose(changed.logits, out.logits)


def test_full_hbaf_audio_stream_takes_only_weights_from_text(batch):
    """The reference the ablation is measured against: with bimodal attention, text moves h_a only through the
    attention weights (eq. 9's values are audio), so with a one-utterance window it cannot move h_a at all."""
    grad, _, _ = audio_stream_grad_wrt_text(tiny("hbaf", "offline"), batch)
    assert grad.any()
    grad, out, changed = audio_stream_grad_wrt_text(tiny("hbaf", "online", window=1), batch)
    assert not grad.any()
    torch.testing.assert_close(changed.reps["h_a"], out.reps["h_a"], atol=1e-6, rtol=1e-5)


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


def test_per_speaker_state_is_the_default_and_switchable():
    """Issue 14.4: GRU_i keeps one state per speaker whenever the batch knows speakers; False shares one state."""
    assert models.lookup("hbaf")[1]().speaker_state
    on, off = tiny("hbaf", "offline", speaker_state=True), tiny("hbaf", "offline", speaker_state=False)
    off.load_state_dict(on.state_dict())  # the same weights: the switch changes the recurrence only
    two = collate(make_dialogues((5, 3), speakers=2))
    assert not torch.allclose(on(two).logits[two.mask], off(two).logits[two.mask])
    one = collate(make_dialogues((5, 3), speakers=1))
    torch.testing.assert_close(on(one).logits[one.mask], off(one).logits[one.mask], atol=1e-5, rtol=1e-5)


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


def test_a_failed_push_leaves_the_dialogue_state_alone():
    m = tiny("hbaf", "online", window=3)
    dlg = make_dialogues((4,))[0]
    stream, fresh = StreamingClassifier(m), StreamingClassifier(m)
    stream.push(dlg[0])
    fresh.push(dlg[0])
    with pytest.raises(RuntimeError):
        stream.push({**dlg[1], "text": torch.zeros(3)})  # wrong width: the model raises
    assert len(stream) == 1
    torch.testing.assert_close(stream.push(dlg[1]), fresh.push(dlg[1]))
