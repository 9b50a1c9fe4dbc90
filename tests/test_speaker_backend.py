"""The speaker back end: the shipped projection loads without pickle, is what live and evaluation both apply,
removes within-speaker directions, and keeps the tracker causal."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from streamer.speaker_backend import PROJECTION_PATH, Projection, fit_nap, load_projection
from streamer.speakers import SpeakerConfig, SpeakerStage, SpeakerTracker, Voice, speaker_config
from training.speakers import Conversation, assign


@pytest.fixture(scope="module")
def shipped() -> Projection:
    return load_projection(PROJECTION_PATH)


def test_shipped_projection_is_plain_arrays_and_small(shipped):
    with np.load(PROJECTION_PATH, allow_pickle=False) as data:  # would raise on any pickled object
        assert set(data.files) == {"format", "mean", "nuisance", "info"}
        assert all(data[k].dtype != object for k in data.files)
    assert PROJECTION_PATH.stat().st_size < 300 * 1024
    assert shipped.dim == 256 and shipped.nuisance.shape == (256, 32)
    assert np.allclose(shipped.nuisance.T @ shipped.nuisance, np.eye(32), atol=1e-4)
    assert "train utterances" in shipped.info


def test_a_projection_file_with_objects_or_the_wrong_layout_is_refused(tmp_path, shipped):
    evil = tmp_path / "evil.npz"
    np.savez(evil, format=np.int64(1), mean=shipped.mean, nuisance=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="plain-array"):
        load_projection(evil)
    old = tmp_path / "old.npz"
    np.savez(old, format=np.int64(0), mean=shipped.mean, nuisance=shipped.nuisance)
    with pytest.raises(ValueError, match="format 0"):
        load_projection(old)
    skew = tmp_path / "skew.npz"
    np.savez(skew, format=np.int64(1), mean=shipped.mean, nuisance=shipped.nuisance * 2)
    with pytest.raises(ValueError, match="orthonormal"):
        load_projection(skew)
    with pytest.raises(ValueError, match="does not exist"):
        load_projection(tmp_path / "missing.npz")


def test_save_and_load_round_trip(tmp_path, shipped):
    shipped.save(tmp_path / "p.npz")
    again = load_projection(tmp_path / "p.npz")
    assert np.array_equal(again.mean, shipped.mean) and np.array_equal(again.nuisance, shipped.nuisance)
    assert again.info == shipped.info
    x = np.random.default_rng(0).normal(size=(5, 256)).astype(np.float32)
    assert np.array_equal(again.apply(x), shipped.apply(x))
    assert np.allclose(np.linalg.norm(shipped.apply(x), axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="256-d"):
        shipped.apply(np.ones(40, np.float32))


def test_fit_nap_removes_the_direction_one_person_varies_along():
    rng = np.random.default_rng(0)
    people = np.eye(64)[:6] * 3  # six people along axes 0-5
    emotion = np.eye(64)[10]  # every person's utterances swing along axis 10
    swing = [rng.normal(size=(40, 1)) * 2 * emotion + rng.normal(scale=0.05, size=(40, 64)) for _ in people]
    x = np.concatenate([p + s for p, s in zip(people, swing)])
    names = [f"p{i}" for i in range(6) for _ in range(40)]
    proj = fit_nap(x, names, 1)
    assert abs(float(proj.nuisance[10, 0])) > 0.99
    y = proj.apply(x)
    same = float(y[0] @ y[39])  # one person, opposite ends of the swing
    assert same > 0.95 and float(y[0] @ y[40]) < 0.5
    with pytest.raises(ValueError, match="at least 2 speakers"):
        fit_nap(x[:40], names[:40], 1)


def one_person_two_moods_then_another(shipped: Projection) -> list[np.ndarray]:
    """Raw vectors: person P calm, P angry (far apart along the top within-speaker direction), Q, P again."""
    rng = np.random.default_rng(1)
    mood = shipped.nuisance[:, 0]
    keep = rng.normal(size=(256, 2))
    keep -= shipped.nuisance @ (shipped.nuisance.T @ keep)  # directions the projection keeps
    p, q = (keep / np.linalg.norm(keep, axis=0)).T
    raw = [shipped.mean + 0.2 * p + 0.6 * mood, shipped.mean + 0.2 * p - 0.6 * mood, shipped.mean + 0.2 * q]
    raw.append(shipped.mean + 0.2 * p + 0.3 * mood)
    return [(r + rng.normal(scale=0.003, size=256)).astype(np.float32) for r in raw]


class Replay:
    """A voice encoder that plays back given raw vectors, one per utterance."""

    def __init__(self, vectors: list[np.ndarray]) -> None:
        self.vectors = iter(vectors)

    def embed(self, audio):
        e = next(self.vectors)
        return e, e[None, :]


def test_live_and_evaluation_apply_the_same_projection(shipped):
    raw = one_person_two_moods_then_another(shipped)
    conv = Conversation("c", [], [], [(e, e[None, :]) for e in raw])
    for config in (SpeakerConfig(), SpeakerConfig(projection=None, new_below=0.7)):
        stage = SpeakerStage(Replay(raw), config)
        live = [stage.assign(stage.embed(np.zeros(1600, np.float32))).speaker for _ in raw]
        assert live == assign(conv, config)  # what `python -m training speakers` scores is what ser-live says
    assert assign(conv, SpeakerConfig()) == ["A", "A", "B", "A"]  # projected: one mood swing is one person
    assert assign(conv, SpeakerConfig(projection=None, new_below=0.7))[:2] == ["A", "B"]  # raw: split by mood


def test_the_command_line_and_the_evaluation_default_to_the_shipped_projection():
    assert SpeakerConfig().projection == PROJECTION_PATH
    ns = argparse.Namespace(speakers=2, max_speakers=None, split_channels=False)
    assert speaker_config(ns).projection == PROJECTION_PATH
    tracker = SpeakerTracker()
    assert tracker.projection is not None and tracker.projection.dim == 256


def test_projected_tracking_stays_causal(shipped):
    """With the shipped defaults, labels of a prefix never change when more utterances follow."""
    rng = np.random.default_rng(5)
    keep = rng.normal(size=(256, 4))
    keep -= shipped.nuisance @ (shipped.nuisance.T @ keep)
    keep /= np.linalg.norm(keep, axis=0)
    who = rng.integers(4, size=50)
    mood = [0.4 * shipped.nuisance @ rng.normal(size=32) + rng.normal(scale=0.01, size=256) for _ in who]
    raw = [(shipped.mean + 0.25 * keep[:, w] + m).astype(np.float32) for w, m in zip(who, mood)]
    voices = [Voice(e, np.stack([e, e])) for e in raw]
    full_tracker = SpeakerTracker()
    full = [full_tracker.push(v.embedding, v.partials).speaker for v in voices]
    assert len(set(full)) >= 3  # several people found, so the check below is not trivially true
    for t in (1, 2, 7, 23, 49):
        tracker = SpeakerTracker(SpeakerConfig())
        assert [tracker.push(v.embedding, v.partials).speaker for v in voices[:t]] == full[:t]
