"""The nuisance projection inside speaker normalisation: what it removes, what it keeps,
causality and streaming equals batch, the checkpoint round trip and the CLI's errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import models
from models.normalize import SpeakerNormalizer, fit_nuisance, fit_prior, project_out
from models.pipeline import FeaturePipeline, WhisperPipeline
from models.streaming import NORM_KEY, StreamingClassifier
from tests.conftest import LABELS, make_dialogues, tiny
from tests.test_speaker_norm import _split_and_feats
from training.data.records import MELD_LABELS, Dialogue
from training.experiment import RunConfig, norm_keys, to_dialogues, with_speaker_norm

DIM = 10


def _voices(rng, content_dir, emotion_dir, n_voices=6, n=12):
    """Flat voices vary along ``content_dir`` only; acted voices along ``emotion_dir`` too."""
    flat = [rng.normal(size=DIM) + np.outer(rng.normal(size=n), 3 * content_dir) for _ in range(n_voices)]
    acted = [
        rng.normal(size=DIM) + np.outer(rng.normal(size=n), 3 * content_dir) + np.outer(rng.normal(size=n), emotion_dir)
        for _ in range(n_voices)
    ]
    return flat, acted


def test_the_basis_is_the_flat_voices_content_direction_and_spares_the_emotion_one():
    rng = np.random.default_rng(0)
    content = np.eye(DIM)[0]
    emotion = np.eye(DIM)[1]
    flat, acted = _voices(rng, content, emotion)
    flat = [f + 0.01 * rng.normal(size=f.shape) for f in flat]
    scale = np.ones(DIM)
    basis = fit_nuisance(flat, 1, scale)
    assert abs(basis[0] @ content) > 0.99 and abs(basis[0] @ emotion) < 0.05
    x = np.concatenate(acted)
    centre = x.mean(axis=0)
    y = project_out(x, basis.astype(np.float64), centre, scale)
    # the content direction is gone, the emotion direction untouched
    assert np.abs((y - centre) @ content).max() < 0.05
    np.testing.assert_allclose((y - centre) @ emotion, (x - centre) @ emotion, atol=0.05)


def test_a_flat_voice_reads_flat_after_the_projection_and_not_without_it():
    rng = np.random.default_rng(1)
    content, emotion = np.eye(DIM)[0], np.eye(DIM)[1]
    flat, acted = _voices(rng, content, emotion)
    train = np.concatenate(flat + acted)
    plain = fit_prior(train, 4.0)
    nap = fit_prior(train, 4.0, flat, 1)
    assert nap.nuisance_dims == 1 and plain.nuisance_dims == 0
    voice = rng.normal(size=DIM) + np.outer(rng.normal(size=30), 3 * content)  # a new flat voice
    spread = {}
    for name, cfg in (("plain", plain), ("nap", nap)):
        norm = SpeakerNormalizer(cfg)
        z = np.stack([norm.push("A", v) for v in voice])[10:]  # past the prior's pull
        spread[name] = float(np.abs(z[:, 0]).mean())
    assert spread["nap"] < 0.1 < 0.5 < spread["plain"]


def test_nuisance_normalisation_is_causal_and_streaming_equals_batch():
    rng = np.random.default_rng(2)
    flat, acted = _voices(rng, np.eye(DIM)[0], np.eye(DIM)[1])
    cfg = fit_prior(np.concatenate(flat + acted), 3.0, flat, 2)
    xs = rng.normal(size=(12, DIM)).astype(np.float32)
    changed = xs.copy()
    changed[7:] += 50.0
    a, b = SpeakerNormalizer(cfg), SpeakerNormalizer(cfg)
    out_a = [a.push(k, x) for k, x in zip(["A", "B"] * 6, xs)]
    out_b = [b.push(k, x) for k, x in zip(["A", "B"] * 6, changed)]
    for t in range(7):
        np.testing.assert_array_equal(out_a[t], out_b[t])

    m = tiny("hbaf", "online", window=3)
    dialogues = make_dialogues((7, 4), seed=5)
    split, feats = _split_and_feats(dialogues)
    pipeline = FeaturePipeline(text=models.TextPipeline(dim=8), whisper=WhisperPipeline(dim=DIM), speaker_norm=cfg)
    batch = to_dialogues(split, feats, pipeline, list(MELD_LABELS), norm_mode="speaker")
    for d_raw, d_feat, d in zip(dialogues, batch, split.dialogues):
        expected = torch.softmax(m(models.batch.collate([d_feat.utterances])).logits[0], -1)
        stream = StreamingClassifier(m, speaker_norm=cfg)
        keys = norm_keys(d.id, [u.speaker for u in d.utterances], "speaker")
        got = torch.stack([stream.push({**u, NORM_KEY: k}) for u, k in zip(d_raw, keys)])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_checkpoint_keeps_the_projection_and_reads_it_back(tmp_path):
    rng = np.random.default_rng(3)
    flat, acted = _voices(rng, np.eye(DIM)[0], np.eye(DIM)[1])
    cfg = fit_prior(np.concatenate(flat + acted), 3.0, flat, 2)
    pipeline = FeaturePipeline(text=models.TextPipeline(dim=8), whisper=WhisperPipeline(dim=DIM), speaker_norm=cfg)
    path = models.save(tmp_path / "m.pt", tiny("hbaf"), LABELS, pipeline)
    back = models.load(path, device="cpu").pipeline.speaker_norm
    np.testing.assert_array_equal(back.nuisance, cfg.nuisance)
    np.testing.assert_array_equal(back.nuisance_scale, cfg.nuisance_scale)
    x = rng.normal(size=DIM).astype(np.float32)
    np.testing.assert_array_equal(SpeakerNormalizer(back).push("A", x), SpeakerNormalizer(cfg).push("A", x))


def test_the_projection_is_fitted_on_words_only_dialogues_and_refused_without_them():
    dialogues = make_dialogues((6, 6, 5), seed=4)
    split, feats = _split_and_feats(dialogues)
    y = np.zeros(len(feats.keys), np.int64)
    pipeline = FeaturePipeline(text=models.TextPipeline(dim=8), whisper=WhisperPipeline(dim=DIM))
    with pytest.raises(ValueError, match="words-only part of --dataset mixed"):
        with_speaker_norm(pipeline, feats, y, 4.0, split, 2)
    renamed = tuple(Dialogue(("words-" if i < 2 else "") + d.id, d.utterances) for i, d in enumerate(split.dialogues))
    words = dataclasses.replace(split, dialogues=renamed)
    norm = with_speaker_norm(pipeline, feats, y, 4.0, words, 2).speaker_norm
    assert norm.nuisance.shape == (2, DIM)
    # fitted from the first two dialogues' speakers only
    groups = [feats.whisper[rows] for rows in ([0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11])]
    speakers = [u.speaker for d in split.dialogues[:2] for u in d.utterances]
    assert speakers == ["A", "B"] * 6  # make_dialogues alternates, so the rows above are each voice
    expected = fit_nuisance(groups, 2, np.sqrt(fit_prior(np.unique(feats.whisper, axis=0)).prior_var))
    np.testing.assert_allclose(np.abs(norm.nuisance @ expected.T), np.eye(2), atol=1e-4)
    with pytest.raises(ValueError, match="--speaker-norm"):
        RunConfig(name="x", model="hbaf", dataset="mixed", nuisance_dims=8)
