"""MCFN: its reps, masking, loss by hand, context, switches and bad inputs (the model contract is in test_models.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import models
from models import EmotionModel, FramePipeline, collate
from models.mcfn import MaskedBatchNorm1d
from tests.conftest import assert_switch_changes_model, frames_and_tokens, labels_for, make_dialogues, np_ce, tiny
from training.losses import compute_loss
from training.losses.mcfn import mcfn_loss


@pytest.fixture
def batch():
    """Here the shared fixture carries frames and tokens: utterances that differ in frame and token counts."""
    return collate(make_dialogues((3, 5, 1), sequences=True))


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize("extra", [{}, {"utterance_context": True}, {"adjustment_level": "sequence"}])
def test_reps_and_mixture(mode, extra, batch):
    out = tiny("mcfn", mode, **extra)(batch)
    for key in ("logits_s", "logits_t", "logits_st"):
        assert out.reps[key].shape == (3, 5, 3)
    width = (3, 5, batch.tokens.shape[2]) if extra.get("adjustment_level") == "sequence" else (3, 5)
    assert out.reps["s_intra"].shape == width + (6,) and out.reps["t_inter"].shape == width + (8,)
    # the logits are the log of a probability mixture (eq. 8)
    torch.testing.assert_close(out.logits[batch.mask].exp().sum(-1), torch.ones(int(batch.mask.sum())))


def test_decision_fusion_is_eq8(batch):
    m = tiny("mcfn", alpha=0.2, beta=0.5, gamma=0.3)
    out = m(batch)
    p = {k: torch.softmax(out.reps[f"logits_{k}"], -1) for k in ("s", "t", "st")}
    torch.testing.assert_close(torch.softmax(out.logits, -1), 0.2 * p["s"] + 0.5 * p["t"] + 0.3 * p["st"])
    # a zero weight drops its classifier entirely
    out = tiny("mcfn", alpha=0.0, beta=0.0, gamma=1.0)(batch)
    torch.testing.assert_close(out.logits, F.log_softmax(out.reps["logits_st"], -1))


def test_padded_frames_and_tokens_change_nothing():
    g = torch.Generator().manual_seed(5)
    short, long = frames_and_tokens(g, 4, 2), frames_and_tokens(g, 11, 6)
    m = tiny("mcfn", "offline")
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
    dl = make_dialogues((2,), sequences=True)
    m = tiny("mcfn", "offline", **extra)
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
    dl = [[frames_and_tokens(g, 5, 3), frames_and_tokens(g, 0, 2), frames_and_tokens(g, 4, 0)]]
    for u, a, t in zip(dl[0], (True, True, True), (False, True, True)):
        u["audio_present"], u["text_present"] = a, t
    m = tiny("mcfn", "offline")
    out = m(collate(dl))
    assert torch.isfinite(out.logits).all()
    dl[0][0]["tokens"] = dl[0][0]["tokens"] * 50  # marked absent: must not matter
    torch.testing.assert_close(m(collate(dl)).logits, out.logits)


def _by_hand_ce(z, y):
    cells = [(b, u) for b in range(y.shape[0]) for u in range(y.shape[1])]
    return np_ce([z[b, u].tolist() for b, u in cells], [int(y[b, u]) for b, u in cells])


@pytest.mark.parametrize("level", ["utterance", "sequence"])
def test_loss_parts_by_hand(level):
    m = tiny("mcfn", "offline", adjustment_level=level, lambda_s=0.5, lambda_t=2.0, lambda_st=1.5, omega=0.25)
    # dialogue 0: u0 labelled, u1 labelled but has no words, u2 unlabelled; dialogue 1: u0 labelled
    g = torch.Generator().manual_seed(9)
    first = [frames_and_tokens(g, frames, tokens) for frames, tokens in ((3, 2), (2, 0), (2, 1))]
    b = collate([first, [frames_and_tokens(g, 4, 1)]])
    y = torch.tensor([[2, 0, -100], [1, -100, -100]])
    gen = torch.Generator().manual_seed(4)
    seq = (b.tokens.shape[2],) if level == "sequence" else ()
    reps = {f"logits_{k}": torch.randn(2, 3, 3, generator=gen) for k in ("s", "t", "st")}
    reps.update({k: torch.randn(2, 3, *seq, 2, generator=gen) for k in ("s_intra", "s_inter", "t_intra", "t_inter")})
    out = models.ModelOutput(torch.randn(2, 3, 3, generator=gen), reps)
    parts = mcfn_loss(m, out, y, b)
    assert compute_loss(m, out, y, b).keys() == parts.keys()
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


def test_adjustment_reps_are_the_paper_operands(batch):
    """At the utterance level, s_intra is the pooled S and s_inter + s_intra feeds the speech classifier."""
    m = tiny("mcfn", "offline")
    out = m(batch)
    expected = m.speech_classifier(out.reps["s_intra"] + out.reps["s_inter"])
    torch.testing.assert_close(out.reps["logits_s"][batch.mask], expected[batch.mask])


def test_context_changes_predictions_and_window_bounds_it():
    m = tiny("mcfn", "online", 2, utterance_context=True)
    dl = make_dialogues((4,), seed=3, sequences=True)
    base = m(collate(dl)).logits
    dl[0][1].update(frames_and_tokens(torch.Generator().manual_seed(77), 6, 3))
    out = m(collate(dl)).logits
    assert not torch.allclose(out[0, 2], base[0, 2])  # t=2 sees t=1 ...
    torch.testing.assert_close(out[0, 3], base[0, 3])  # ... t=3 with K=2 no longer does


@pytest.mark.parametrize("extra", [{}, {"utterance_context": True}])
def test_online_shortcut_equals_windowed_base_forward(extra, batch):
    m = tiny("mcfn", "online", 2, **extra)
    fast, slow = m(batch), EmotionModel.forward(m, batch)
    torch.testing.assert_close(fast.logits[batch.mask], slow.logits[batch.mask], atol=1e-6, rtol=1e-5)
    for key in slow.reps:
        torch.testing.assert_close(fast.reps[key][batch.mask], slow.reps[key][batch.mask], atol=1e-6, rtol=1e-5)


# switch -> whether it adds or removes parameters (the parameter-free ones change the computation only)
SWITCHES = {
    "dual_attention": (False, True),
    "cross_modal_interaction": (False, True),
    "mutual_adjustment": (False, False),
    "utterance_context": (True, True),
    "coattention_score": ("eq3", True),
    "adjustment_level": ("sequence", False),
    "modalities": ("audio", True),
}


@pytest.mark.parametrize("switch", list(SWITCHES) + ["modalities=text"])
def test_each_switch_changes_the_model(switch, batch):
    key, value, changes_params = (
        ("modalities", "text", True) if switch == "modalities=text" else (switch, *SWITCHES[switch])
    )
    base, other, out_base, out_other = assert_switch_changes_model("mcfn", {key: value}, batch, changes_params)
    if key == "mutual_adjustment":
        y = labels_for(batch, classes=3, unlabelled=True)
        assert "ad" in mcfn_loss(base, out_base, y, batch) and "ad" not in mcfn_loss(other, out_other, y, batch)


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_unimodal_needs_only_its_input(modality, batch):
    m = tiny("mcfn", "offline", modalities=modality)
    out = m(batch)
    other = "tokens" if modality == "audio" else "frames"
    assert m.inputs == ({"audio": "frames", "text": "tokens"}[modality],)
    no_other = dataclasses.replace(batch, **{other: None, other[:-1] + "_mask": None})
    torch.testing.assert_close(m(no_other).logits, out.logits)
    parts = mcfn_loss(m, out, labels_for(batch, classes=3, unlabelled=True), batch)
    assert set(parts) == {"ce_" + {"audio": "s", "text": "t"}[modality], "ce", "total"}


def test_bad_inputs_are_reported(batch):
    m = tiny("mcfn")
    with pytest.raises(ValueError, match="frames .* frame_dim"):
        m(collate(make_dialogues((3, 5, 1), sequences=True, frame_dim=5)))
    with pytest.raises(ValueError, match="needs batch fields \\['tokens'\\]"):
        m(dataclasses.replace(batch, tokens=None))
    with pytest.raises(ValueError, match="without frame_mask"):
        m(dataclasses.replace(batch, frame_mask=None))


def test_default_config_builds_at_paper_size():
    m = models.build("mcfn")
    assert m.config.frame_dim == FramePipeline().dim and m.inputs == ("frames", "tokens")
    assert not m.uses_context
    # Section 3: multi-head co-attention with 4 heads and 128 hidden units, the additive score
    assert (m.config.coattention_score, m.config.coattention_heads, m.config.coattention_hidden) == ("additive", 4, 128)
    assert m.alignment.u.out_features == 128 and m.alignment.w.shape == (4, 32)


def coattention_weights(score: str, seed: int = 0):
    """Co-attention weights (words, frames, heads) of one utterance at a default-width MCFN (random weights)."""
    torch.manual_seed(seed)
    m = models.build("mcfn", coattention_score=score, dropout=0.0).eval()
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(1, 40, m.config.conv_channels[-1], generator=g)  # S: 40 frames
    t = torch.randn(1, 6, m.config.text_width, generator=g)  # T: 6 words
    with torch.no_grad():
        return m.alignment.weights(s, torch.ones(1, 40, dtype=torch.bool), t)[0]


def test_default_coattention_lets_different_words_attend_to_different_frames():
    alpha = coattention_weights("additive")
    torch.testing.assert_close(alpha.sum(1), torch.ones(6, 4))
    best = alpha.argmax(1)  # (words, heads): each word's most attended frame, per head
    for h in range(4):
        assert len(set(best[:, h].tolist())) > 1, f"head {h}: every word picks the same frame"
    ranks = alpha.argsort(1)
    assert not all(torch.equal(ranks[0, :, h], ranks[j, :, h]) for j in range(1, 6) for h in range(4))
    assert float((alpha.amax(1) / alpha.amin(1)).max()) > math.e**2  # sharper than eq. 3's bound


def test_literal_eq3_ranks_frames_alike_for_every_word():
    """Why eq. 3 taken literally is not the default: one scalar per head, tanh monotone -> one ranking."""
    alpha = coattention_weights("eq3")
    ranks = alpha.argsort(1)
    for j in range(1, 6):
        torch.testing.assert_close(ranks[j], ranks[0], atol=0, rtol=0)
    assert float((alpha.amax(1) / alpha.amin(1)).max()) <= math.e**2 + 1e-4


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


def test_batchnorm_recalibration_replaces_stale_running_statistics():
    """After an epoch the running estimates are recomputed from the final weights: stale ones
    (here: corrupted) are gone, the result does not depend on them, and models without
    BatchNorm are left alone."""
    from tests.conftest import make_dialogues, tiny
    from training.trainer import FeatureDialogue, recalibrate_batchnorm

    raw = make_dialogues((3, 4, 2, 5), sequences=True, seed=2)
    data = [FeatureDialogue(f"d{i}", d, [0] * len(d)) for i, d in enumerate(raw)]
    m = tiny("mcfn", "online", window=3)
    norms = [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms
    assert recalibrate_batchnorm(m, data, 2, "cpu")
    first = [x.running_var.clone() for x in norms]
    for x in norms:
        x.running_mean.fill_(1e3)
        x.running_var.fill_(1e-6)
        x.momentum = 0.3
    assert recalibrate_batchnorm(m, data, 2, "cpu")
    for x, want in zip(norms, first):
        torch.testing.assert_close(x.running_var, want)
        assert x.momentum == 0.3 and float(x.running_mean.abs().max()) < 1e3
    assert not m.training
    assert not recalibrate_batchnorm(tiny("text"), data, 2, "cpu")
