"""MCFN: shapes, masking, gradients, loss by hand, causality, streaming, checkpoints and switches."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import models
from models import ContextConfig, EmotionModel, FeaturePipeline, FramePipeline, StreamingClassifier, collate
from models.mcfn import MCFN, MaskedBatchNorm1d, MCFNConfig
from training.losses import compute_loss
from training.losses.mcfn import mcfn_loss

TINY = dict(
    frame_dim=6,
    token_dim=8,
    num_classes=3,
    conv_channels=(8, 6),
    conv_dilations=(1, 2),
    text_width=8,
    dual_qk_dim=4,
    coattention_heads=2,
    coattention_hidden=8,
    dropout=0.0,
)


def tiny(mode="online", window=3, **extra) -> MCFN:
    torch.manual_seed(0)
    return models.build("mcfn", context=ContextConfig(mode, window), **{**TINY, **extra}).eval()


def utterance(g, frames, tokens, frame_dim=6, token_dim=8):
    return {
        "frames": torch.randn(frames, frame_dim, generator=g),
        "tokens": torch.randn(tokens, token_dim, generator=g),
    }


def dialogues(lengths=(3, 5, 1), seed=0, **dims):
    """Dialogues of different lengths whose utterances differ in frame and token counts."""
    g = torch.Generator().manual_seed(seed)
    return [
        [utterance(g, 2 + (3 * t + i) % 8, 1 + (t + 2 * i) % 5, **dims) for t in range(n)]
        for i, n in enumerate(lengths)
    ]


def labels_for(batch, classes=3):
    y = torch.randint(0, classes, batch.mask.shape, generator=torch.Generator().manual_seed(1))
    y[0, 0] = -100  # an unlabelled turn
    return torch.where(batch.mask, y, torch.full_like(y, -100))


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize("extra", [{}, {"utterance_context": True}, {"adjustment_level": "sequence"}])
def test_shapes_with_padding(mode, extra):
    batch = collate(dialogues())
    out = tiny(mode, **extra)(batch)
    assert out.logits.shape == (3, 5, 3)
    assert torch.isfinite(out.logits).all()
    for key in ("logits_s", "logits_t", "logits_st"):
        assert out.reps[key].shape == (3, 5, 3)
    width = (3, 5, batch.tokens.shape[2]) if extra.get("adjustment_level") == "sequence" else (3, 5)
    assert out.reps["s_intra"].shape == width + (6,) and out.reps["t_inter"].shape == width + (8,)
    # the logits are the log of a probability mixture (eq. 8)
    torch.testing.assert_close(out.logits[batch.mask].exp().sum(-1), torch.ones(int(batch.mask.sum())))


def test_decision_fusion_is_eq8():
    m = tiny(alpha=0.2, beta=0.5, gamma=0.3)
    out = m(collate(dialogues()))
    p = {k: torch.softmax(out.reps[f"logits_{k}"], -1) for k in ("s", "t", "st")}
    torch.testing.assert_close(torch.softmax(out.logits, -1), 0.2 * p["s"] + 0.5 * p["t"] + 0.3 * p["st"])
    # a zero weight drops its classifier entirely
    out = tiny(alpha=0.0, beta=0.0, gamma=1.0)(collate(dialogues()))
    torch.testing.assert_close(out.logits, F.log_softmax(out.reps["logits_st"], -1))


def test_padded_frames_and_tokens_change_nothing():
    g = torch.Generator().manual_seed(5)
    short, long = utterance(g, 4, 2), utterance(g, 11, 6)
    m = tiny("offline")
    alone = m(collate([[short]])).logits[0, 0]
    # in a batch with a longer utterance, `short` is padded to 11 frames and 6 tokens; fill the padding with junk
    batch = collate([[short], [long]])
    batch.frames[0, 0, 4:] = 7.0
    batch.tokens[0, 0, 2:] = -3.0
    torch.testing.assert_close(m(batch).logits[0, 0], alone, atol=1e-5, rtol=1e-5)
    # in training mode too: the batch-norm statistics count valid frames only
    m.train()
    clean = m(collate([[short], [long]])).logits
    torch.testing.assert_close(m(batch).logits, clean, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("extra", [{}, {"adjustment_level": "sequence"}, {"modalities": "audio"}])
def test_padding_invariance_of_every_output(extra):
    """Extra masked frames/tokens on one utterance (as the streaming window pads) change no output or rep."""
    dl = dialogues((2,))
    m = tiny("offline", **extra)
    ref = m(collate(dl))
    padded = collate(dl)
    extended = dataclasses.replace(
        padded,
        frames=F.pad(padded.frames, (0, 0, 0, 3), value=2.0),
        frame_mask=F.pad(padded.frame_mask, (0, 3)),
        tokens=F.pad(padded.tokens, (0, 0, 0, 2), value=-1.0),
        token_mask=F.pad(padded.token_mask, (0, 2)),
    )
    out = m(extended)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    for key, value in ref.reps.items():
        got = out.reps[key][:, :, : value.shape[2]] if value.dim() == 4 else out.reps[key]
        torch.testing.assert_close(got, value, atol=1e-5, rtol=1e-5)


def test_absent_modality_is_ignored_and_empty_utterances_are_finite():
    g = torch.Generator().manual_seed(2)
    dl = [[utterance(g, 5, 3), utterance(g, 0, 2), utterance(g, 4, 0)]]
    for u, a, t in zip(dl[0], (True, True, True), (False, True, True)):
        u["audio_present"], u["text_present"] = a, t
    m = tiny("offline")
    out = m(collate(dl))
    assert torch.isfinite(out.logits).all()
    dl[0][0]["tokens"] = dl[0][0]["tokens"] * 50  # marked absent: must not matter
    torch.testing.assert_close(m(collate(dl)).logits, out.logits)


@pytest.mark.parametrize(
    "extra",
    [{}, {"utterance_context": True}, {"coattention_score": "additive", "adjustment_level": "sequence"}],
)
def test_gradients_reach_every_parameter(extra):
    m = tiny("online", 2, **extra).train()
    b = collate(dialogues())
    loss = compute_loss(m, m(b), labels_for(b), b)
    assert {"ce_s", "ce_t", "ce_st", "ad_s", "ad_t", "ad", "ce", "total"} <= set(loss)
    loss["total"].backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"no gradient reaches {dead}"


def _by_hand_ce(z, y):
    terms = [
        -(z[b, u, int(y[b, u])].item() - math.log(sum(math.exp(v) for v in z[b, u].tolist()))) for b, u in _labelled(y)
    ]
    return sum(terms) / len(terms)


def _labelled(y):
    return [(b, u) for b in range(y.shape[0]) for u in range(y.shape[1]) if y[b, u] != -100]


@pytest.mark.parametrize("level", ["utterance", "sequence"])
def test_loss_parts_by_hand(level):
    m = tiny("offline", adjustment_level=level, lambda_s=0.5, lambda_t=2.0, lambda_st=1.5, omega=0.25)
    # dialogue 0: u0 labelled, u1 labelled but has no words, u2 unlabelled; dialogue 1: u0 labelled
    g = torch.Generator().manual_seed(9)
    b = collate([[utterance(g, 3, 2), utterance(g, 2, 0), utterance(g, 2, 1)], [utterance(g, 4, 1)]])
    y = torch.tensor([[2, 0, -100], [1, -100, -100]])
    gen = torch.Generator().manual_seed(4)
    seq = (b.tokens.shape[2],) if level == "sequence" else ()
    reps = {f"logits_{k}": torch.randn(2, 3, 3, generator=gen) for k in ("s", "t", "st")}
    reps.update({k: torch.randn(2, 3, *seq, 2, generator=gen) for k in ("s_intra", "s_inter", "t_intra", "t_inter")})
    out = models.ModelOutput(torch.randn(2, 3, 3, generator=gen), reps)
    parts = mcfn_loss(m, out, y, b)
    for k in ("s", "t", "st"):
        assert parts[f"ce_{k}"].item() == pytest.approx(_by_hand_ce(reps[f"logits_{k}"], y), rel=1e-5)
    assert parts["ce"].item() == pytest.approx(_by_hand_ce(out.logits, y), rel=1e-5)

    def mse(a, c, b_, u):
        if level == "utterance":
            return ((a[b_, u] - c[b_, u]) ** 2).mean().item()
        n = int(b.token_mask[b_, u].sum())
        return ((a[b_, u, :n] - c[b_, u, :n]) ** 2).mean().item()

    # the no-words utterance (0, 1) is left out of both terms; the unlabelled (0, 2) too
    kept = [(0, 0), (1, 0)]
    ad_s = sum(mse(reps["s_intra"], reps["s_inter"], *k) for k in kept) / 2
    ad_t = sum(mse(reps["t_intra"], reps["t_inter"], *k) for k in kept) / 2
    assert parts["ad_s"].item() == pytest.approx(ad_s, rel=1e-5)
    assert parts["ad_t"].item() == pytest.approx(ad_t, rel=1e-5)
    total = 0.5 * parts["ce_s"] + 2.0 * parts["ce_t"] + 1.5 * parts["ce_st"] + 0.25 * (ad_s + ad_t)
    assert parts["total"].item() == pytest.approx(total.item(), rel=1e-5)


def test_adjustment_reps_are_the_paper_operands():
    """At the utterance level, s_intra is the pooled S and s_inter + s_intra feeds the speech classifier."""
    m = tiny("offline")
    b = collate(dialogues())
    out = m(b)
    expected = m.speech_classifier(out.reps["s_intra"] + out.reps["s_inter"])
    torch.testing.assert_close(out.reps["logits_s"][b.mask], expected[b.mask])


@pytest.mark.parametrize("extra", [{}, {"utterance_context": True}])
def test_online_is_causal(extra):
    m = tiny("online", 3, **extra)
    dl = dialogues((6,), seed=2)
    base = m(collate(dl)).logits
    for t in range(5):
        changed = [dict(u) for u in dl[0]]
        changed[t + 1] = utterance(torch.Generator().manual_seed(50 + t), 9, 5)
        out = m(collate([changed])).logits
        torch.testing.assert_close(out[0, : t + 1], base[0, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(out[0, t + 1], base[0, t + 1])


def test_context_changes_predictions_and_window_bounds_it():
    m = tiny("online", 2, utterance_context=True)
    dl = dialogues((4,), seed=3)
    base = m(collate(dl)).logits
    dl[0][1] = utterance(torch.Generator().manual_seed(77), 6, 3)
    out = m(collate(dl)).logits
    assert not torch.allclose(out[0, 2], base[0, 2])  # t=2 sees t=1 ...
    torch.testing.assert_close(out[0, 3], base[0, 3])  # ... t=3 with K=2 no longer does


@pytest.mark.parametrize("extra", [{}, {"utterance_context": True}])
def test_online_shortcut_equals_windowed_base_forward(extra):
    m = tiny("online", 2, **extra)
    b = collate(dialogues())
    fast, slow = m(b), EmotionModel.forward(m, b)
    torch.testing.assert_close(fast.logits[b.mask], slow.logits[b.mask], atol=1e-6, rtol=1e-5)
    for key in slow.reps:
        torch.testing.assert_close(fast.reps[key][b.mask], slow.reps[key][b.mask], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("extra", [{}, {"utterance_context": True}, {"utterance_context": True, "modalities": "text"}])
@pytest.mark.parametrize("window", [1, 3])
def test_streaming_equals_batch(extra, window):
    m = tiny("online", window, **extra)
    dls = dialogues((2, 6), seed=4)
    expected = torch.softmax(m(collate(dls)).logits[1], -1)
    stream = StreamingClassifier(m)
    got = torch.stack([stream.push(u) for u in dls[1]])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_checkpoint_round_trip(tmp_path):
    pipeline = FeaturePipeline(frames=FramePipeline(), tokens=True)
    m = tiny("online", 2, frame_dim=pipeline.frames.dim, utterance_context=True)
    dls = dialogues((3, 2), frame_dim=pipeline.frames.dim)
    m.train()(collate(dls))  # move the batch-norm running statistics off their defaults
    m.eval()
    path = models.save(tmp_path / "mcfn.pt", m, ["a", "b", "c"], pipeline)
    ck = models.load(path, device="cpu")
    assert ck.model.config == m.config and ck.pipeline == pipeline
    b = collate(dls)
    torch.testing.assert_close(ck.model(b).logits, m(b).logits, atol=0, rtol=0)


# switch -> whether it adds or removes parameters (the parameter-free ones change the computation only)
SWITCHES = {
    "dual_attention": (False, True),
    "cross_modal_interaction": (False, True),
    "mutual_adjustment": (False, False),
    "utterance_context": (True, True),
    "coattention_score": ("additive", True),
    "adjustment_level": ("sequence", False),
    "modalities": ("audio", True),
}


@pytest.mark.parametrize("switch", list(SWITCHES) + ["modalities=text"])
def test_each_switch_changes_the_model(switch):
    key, value, changes_params = (
        ("modalities", "text", True) if switch == "modalities=text" else (switch, *SWITCHES[switch])
    )
    base, other = tiny("offline"), tiny("offline", **{key: value})
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters()}  # noqa: E731
    assert (shapes(base) != shapes(other)) == changes_params
    # copy the shared weights, so any difference comes from the switch itself
    target = other.state_dict()
    shared = {k: v for k, v in base.state_dict().items() if k in target and target[k].shape == v.shape}
    other.load_state_dict(shared, strict=False)
    b = collate(dialogues())
    out_base, out_other = base(b), other(b)
    assert not torch.allclose(out_base.logits[b.mask], out_other.logits[b.mask])
    if key == "mutual_adjustment":
        y = labels_for(b)
        assert "ad" in mcfn_loss(base, out_base, y, b) and "ad" not in mcfn_loss(other, out_other, y, b)


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_unimodal_needs_only_its_input(modality):
    m = tiny("offline", modalities=modality)
    b = collate(dialogues())
    out = m(b)
    other = "tokens" if modality == "audio" else "frames"
    assert m.inputs == ({"audio": "frames", "text": "tokens"}[modality],)
    no_other = dataclasses.replace(b, **{other: None, other[:-1] + "_mask": None})
    torch.testing.assert_close(m(no_other).logits, out.logits)
    assert set(mcfn_loss(m, out, labels_for(b), b)) == {"ce_" + {"audio": "s", "text": "t"}[modality], "ce", "total"}


def test_bad_inputs_are_reported():
    m = tiny()
    b = collate(dialogues(frame_dim=5))
    with pytest.raises(ValueError, match="frames .* frame_dim"):
        m(b)
    with pytest.raises(ValueError, match="needs batch fields \\['tokens'\\]"):
        m(dataclasses.replace(collate(dialogues()), tokens=None))
    with pytest.raises(ValueError, match="without frame_mask"):
        m(dataclasses.replace(collate(dialogues()), frame_mask=None))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"alpha": 0.5}, "sum to 1"),
        ({"alpha": -0.1, "beta": 0.7}, "sum to 1"),
        ({"conv_dilations": (1,)}, "equal length"),
        ({"conv_kernel": 4}, "odd"),
        ({"coattention_heads": 4}, "divisible"),
        ({"coattention_score": "dot"}, "coattention_score"),
        ({"adjustment_level": "frame"}, "adjustment_level"),
        ({"modalities": "video"}, "modalities"),
        ({"omega": -1.0}, "non-negative"),
        ({"modalities": "audio", "lambda_s": 0.0}, "lambda"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        MCFNConfig(**{**TINY, **bad})


def test_default_config_builds_at_paper_size():
    m = models.build("mcfn")
    assert m.config.frame_dim == FramePipeline().dim and m.inputs == ("frames", "tokens")
    assert not m.uses_context


def test_batch_norm_statistics_count_valid_frames_only():
    """Training-mode UFLB batch norm equals plain BatchNorm over the concatenated valid frames."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 4, 7, generator=g)
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [2], [5]])
    ours, plain = MaskedBatchNorm1d(4).train(), torch.nn.BatchNorm1d(4).train()
    valid = torch.cat([x[i, :, mask[i]] for i in range(3)], -1)[None]
    expected = plain(valid)[0]
    y = ours(x, mask)
    got = torch.cat([y[i, :, mask[i]] for i in range(3)], -1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(ours.running_mean, plain.running_mean)
    torch.testing.assert_close(ours.running_var, plain.running_var)
    ours.eval(), plain.eval()
    torch.testing.assert_close(ours(x, mask), plain(x))
