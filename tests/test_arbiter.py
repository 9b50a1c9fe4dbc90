"""The channel arbiter: fitted on validation answers, it takes the channel that carries the emotion;
the live classifier, the checkpoint and the training evaluation all use the same one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models.arbiter import ChannelArbiter, fit_arbiter
from models.checkpoint import CheckpointError
from models.pipeline import FeaturePipeline
from models.streaming import StreamingClassifier
from tests.conftest import LABELS, make_dialogues, tiny
from training.arbiter import scores, streamed_answers
from training.trainer import FeatureDialogue

C = 7
NEUTRAL = LABELS.index("neutral")


def _answer(rng, label, sure):
    """A channel's probabilities: ``sure`` of its mass on ``label``, the rest spread at random."""
    p = rng.dirichlet(np.ones(C)) * (1 - sure)
    p[label] += sure
    return p


def _validation(n, rng):
    """Half voice-only (the voice knows, the words say neutral), half words-only (the words know,
    an unfamiliar voice half-heartedly says something else); the fused answer follows the voice,
    which is wrong on words-only lines (the failure measured end to end)."""
    fused, audio, text, y, groups = [], [], [], [], []
    for i in range(n):
        label = int(rng.integers(C))
        voice_only = i % 2 == 0
        a = _answer(rng, label, 0.6) if voice_only else _answer(rng, (label + 1 + int(rng.integers(C - 1))) % C, 0.3)
        t = _answer(rng, NEUTRAL if voice_only else label, 0.9 if voice_only else 0.6)
        fused.append(a)
        audio.append(a)
        text.append(t)
        y.append(label)
        groups.append(i // 10)
    return [np.asarray(v) for v in (fused, audio, text, y, groups)]


def test_fitted_arbiter_takes_the_channel_that_carries_the_emotion():
    rng = np.random.default_rng(0)
    fused, audio, text, y, groups = _validation(600, rng)
    arbiter, losses = fit_arbiter(fused, audio, text, y, groups, C)
    assert set(losses) == {0.01, 0.03, 0.1, 0.3, 1.0} and arbiter.c == min(losses, key=losses.get)
    f2, a2, t2, y2, _ = _validation(400, np.random.default_rng(1))
    combined = arbiter.combine(f2, a2, t2)
    assert combined.shape == (400, C)
    np.testing.assert_allclose(combined.sum(1), 1.0, rtol=1e-9)
    right, fused_right = combined.argmax(1) == y2, f2.argmax(1) == y2
    assert right.mean() > fused_right.mean() + 0.1
    assert fused_right[1::2].mean() < 0.05 and right[1::2].mean() > 0.3  # words-only lines: now often right
    # one utterance in, one answer out; the dict form is lossless
    again = ChannelArbiter.from_dict(arbiter.to_dict())
    np.testing.assert_allclose(again.combine(f2[0], a2[0], t2[0]), combined[0])


def test_bad_arbiters_are_refused_in_one_sentence():
    with pytest.raises(ValueError, match=r"\(C, 3C\)"):
        ChannelArbiter(np.zeros((7, 14)), np.zeros(7))
    with pytest.raises(ValueError, match="reads"):
        ChannelArbiter.from_dict({"coef": np.zeros((7, 21)).tolist(), "intercept": [0] * 7, "sources": ["x"]})
    rng = np.random.default_rng(0)
    fused, audio, text, y, _ = _validation(50, rng)
    with pytest.raises(ValueError, match="at least 5 validation dialogues"):
        fit_arbiter(fused, audio, text, y, np.zeros(50), C)
    with pytest.raises(ValueError, match="the model 7"):
        StreamingClassifier(tiny("hbaf"), arbiter=ChannelArbiter(np.zeros((3, 9)), np.zeros(3)))


def _arbiter(seed=0):
    rng = np.random.default_rng(seed)
    return ChannelArbiter(rng.normal(size=(C, 3 * C)), rng.normal(size=C))


def test_streaming_answer_is_the_arbiters_combination_and_missing_channels_fall_back():
    m = tiny("hbaf", "online", window=3)
    d = make_dialogues((5,), seed=3)[0]
    plain, judged = StreamingClassifier(m), StreamingClassifier(m, arbiter=_arbiter())
    for u in d:
        fused = plain.push(u, per_channel=True)
        ch = plain.last_channels
        want = _arbiter().combine(fused.numpy(), ch["audio"].numpy(), ch["text"].numpy())
        got = judged.push(u)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
        assert judged.last_channels == {}  # computed for the arbiter, handed out only when asked
    # an utterance without audio: there is nothing to arbitrate, the fused answer stands
    silent = {**d[0], "audio": torch.zeros_like(d[0]["audio"]), "audio_present": False}
    plain.reset()
    judged.reset()
    torch.testing.assert_close(judged.push(silent), plain.push(silent))


def test_checkpoint_carries_the_arbiter_and_refuses_a_damaged_one(tmp_path):
    m = tiny("hbaf")
    path = models.save(tmp_path / "m.pt", m, LABELS, FeaturePipeline(), meta={"arbiter": _arbiter().to_dict()})
    ck = models.load(path)
    np.testing.assert_allclose(ck.arbiter.coef, _arbiter().coef)
    assert models.load(models.save(tmp_path / "plain.pt", m, LABELS, FeaturePipeline())).arbiter is None
    bad = {"coef": [[0.0] * 9] * 3, "intercept": [0.0] * 3}
    models.save(tmp_path / "bad.pt", m, LABELS, FeaturePipeline(), meta={"arbiter": bad})
    with pytest.raises(CheckpointError, match="arbiter for 3 classes"):
        models.load(tmp_path / "bad.pt")
    models.save(tmp_path / "worse.pt", m, LABELS, FeaturePipeline(), meta={"arbiter": {"coef": "x"}})
    with pytest.raises(CheckpointError, match="damaged channel arbiter"):
        models.load(tmp_path / "worse.pt")


def test_training_side_answers_are_the_live_ones_and_scores_report_both():
    m = tiny("hbaf", "online", window=3)
    raw = make_dialogues((4, 6, 5, 3, 7, 4), seed=5)
    dialogues = [FeatureDialogue(f"d{i}", d, [(i + t) % C for t in range(len(d))]) for i, d in enumerate(raw)]
    dialogues[0].labels[1] = -100  # an unlabelled line is not an example
    answers = streamed_answers(m, 1.3, {"audio": 2.0}, dialogues)
    assert len(answers["y"]) == sum(len(d) for d in raw) - 1
    live = StreamingClassifier(m, 1.3, channel_temperatures={"audio": 2.0})
    first = live.push(raw[0][0], per_channel=True)
    np.testing.assert_allclose(answers["fused"][0], first.numpy())
    np.testing.assert_allclose(answers["audio"][0], live.last_channels["audio"].numpy())
    assert list(answers["groups"][:4]) == ["d0", "d0", "d0", "d1"]  # grouped by dialogue for the folds
    s = scores(m, 1.3, {"arbiter": _arbiter().to_dict()}, dialogues, LABELS)
    assert set(s) == {"fused", "arbiter"} and s["arbiter"]["n"] == s["fused"]["n"] == len(answers["y"])
    assert streamed_answers(tiny("text"), 1.0, None, dialogues) is None
