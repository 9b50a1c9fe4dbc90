"""The session's own label prior (models/prior.py): causal, label-free, and it corrects a prior shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models import FeaturePipeline
from models.checkpoint import CheckpointError
from models.prior import PriorShift, SessionPrior
from models.streaming import StreamingClassifier


def shifted_session(n: int, train_prior: np.ndarray, session_prior: np.ndarray, seed: int = 0):
    """Bayes posteriors under ``train_prior`` for utterances drawn with ``session_prior``: class c
    is a unit Gaussian around 1.5 * c on one axis, so the classes overlap and the prior matters."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(session_prior), size=n, p=session_prior)
    x = rng.normal(1.5 * y, 1.0)
    lik = np.exp(-0.5 * (x[:, None] - 1.5 * np.arange(len(train_prior))[None, :]) ** 2)
    post = lik * train_prior
    return post / post.sum(1, keepdims=True), y


def test_a_session_with_another_prior_is_answered_better_and_a_like_one_no_worse():
    train = np.array([0.7, 0.2, 0.1])
    shift = PriorShift(tuple(train), weight=5.0)
    balanced_post, balanced_y = shifted_session(400, train, np.array([1 / 3, 1 / 3, 1 / 3]))
    before = (balanced_post.argmax(1) == balanced_y).mean()
    after = (SessionPrior(shift).run(balanced_post).argmax(1) == balanced_y).mean()
    assert after > before + 0.04  # the rare classes are found again
    like_post, like_y = shifted_session(400, train, train, seed=1)
    before = (like_post.argmax(1) == like_y).mean()
    after = (SessionPrior(shift).run(like_post).argmax(1) == like_y).mean()
    assert after >= before - 0.02  # a session like the training data keeps its answers


def test_causal_and_starts_as_the_model():
    shift = PriorShift((0.5, 0.3, 0.2), weight=3.0)
    probs = np.random.default_rng(2).dirichlet(np.ones(3), size=12)
    prior = SessionPrior(shift)
    out = prior.run(probs)
    assert np.allclose(out[0], probs[0])  # nothing heard yet: the training prior stands
    assert np.allclose(out.sum(1), 1.0)
    changed = probs.copy()
    changed[7:] = changed[7:, ::-1]
    assert np.allclose(prior.run(changed)[:7], out[:7])  # later utterances never change earlier answers
    prior.reset()
    assert np.allclose(prior.estimate, shift.prior)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"prior": [1.0], "weight": 2}, "at least two"),
        ({"prior": [0.5, 0.6], "weight": 2}, "sum to 1"),
        ({"prior": [0.5, 0.5], "weight": 0}, "weight must be"),
        ({"prior": [0.0, 1.0], "weight": 2}, "positive class shares"),
    ],
)
def test_bad_settings_are_one_sentence(spec, says):
    with pytest.raises(ValueError, match=says):
        PriorShift.from_dict(spec)


def tiny_model():
    torch.manual_seed(0)
    return models.build("audio", input_dim=4, num_classes=3, hidden=8)


def test_the_live_classifier_applies_it_to_the_fused_answer_and_resets_per_session():
    shift = PriorShift((0.6, 0.3, 0.1), weight=2.0)
    plain, corrected = StreamingClassifier(tiny_model()), StreamingClassifier(tiny_model(), prior_shift=shift)
    xs = [{"audio": torch.randn(4)} for _ in range(6)]
    raw = np.stack([plain.push(dict(x)).numpy() for x in xs])
    got = np.stack([corrected.push(dict(x)).numpy() for x in xs])
    assert np.allclose(got, SessionPrior(shift).run(raw), atol=1e-6)
    corrected.reset()
    assert np.allclose(corrected.push(dict(xs[0])).numpy(), raw[0], atol=1e-6)  # a new session starts afresh


def test_checkpoints_carry_it_and_a_damaged_one_is_refused(tmp_path):
    model = tiny_model()
    labels = ["a", "b", "c"]
    meta = {"prior_shift": {"prior": [0.5, 0.3, 0.2], "weight": 4}}
    path = models.save(tmp_path / "p.pt", model, labels, FeaturePipeline(), meta=meta)
    assert models.load(path).prior_shift == PriorShift((0.5, 0.3, 0.2), 4.0)
    meta = {"prior_shift": {"prior": [0.5, 0.5], "weight": 4}}
    bad = models.save(tmp_path / "bad.pt", model, labels, FeaturePipeline(), meta=meta)
    with pytest.raises(CheckpointError, match="session prior over 2 classes"):
        models.load(bad)


def test_mixed_scores_have_plain_keys_so_the_fitted_checkpoint_loads(tmp_path):
    """numpy strings in the meta would make the checkpoint unreadable with weights_only=True."""
    from training.prior_fit import scores
    from training.trainer import FeatureDialogue

    dialogues = [FeatureDialogue("paired-1", [{}] * 2, [0, 1]), FeatureDialogue("voice-2", [{}] * 2, [1, 1])]
    posteriors = [
        (np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])),
        (np.array([[0.4, 0.6]] * 2), np.array([1, 1])),
    ]
    s = scores(posteriors, dialogues, mixed=True)
    assert set(s) == {"pooled", "paired", "voice", "parts_mean"} and all(type(k) is str for k in s)
    path = models.save(tmp_path / "m.pt", tiny_model(), ["a", "b", "c"], FeaturePipeline(), meta={"fit": s})
    assert models.load(path).meta["fit"]["voice"] == pytest.approx(1.0)
