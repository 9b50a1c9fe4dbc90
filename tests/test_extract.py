"""Feature cache: a second run is served from disk; a changed file re-extracts only itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import training.extract as extract
from training.data import load_dataset
from training.extract import ExtractConfig, FeatureStore, extract_split

SHARED = Path(__file__).parent.parent.parent / "shared" / "data"
CLIPS = sorted((SHARED / "ravdess" / "Actor_01").glob("*.flac"))[:3]
pytestmark = pytest.mark.skipif(not CLIPS, reason="shared data not available")


def manifest(tmp_path: Path) -> Path:
    rows = ["dialogue_id,turn,speaker,audio,text,label"]
    for i, clip in enumerate(CLIPS):
        shutil.copy(clip, tmp_path / f"c{i}.flac")
        rows.append(f"d0,{i},A,c{i}.flac,Kids are talking by the door number {i},neutral")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def counting(monkeypatch):
    calls = []
    real = extract._opensmile_job

    def job(args):
        calls.append(Path(args[0]).name)
        return real(args)

    monkeypatch.setattr(extract, "_opensmile_job", job)
    return calls


def test_cache_hits_and_invalidation(tmp_path, counting):
    m = manifest(tmp_path)
    cfg = ExtractConfig(cache_dir=tmp_path / "cache", progress=False)
    first = extract_split(load_dataset("manifest", "all", m), cfg)
    assert first.audio.shape == (3, 6373) and first.audio_ok.all() and np.isfinite(first.audio).all()
    assert first.text.shape == (3, 384)
    assert sorted(counting) == ["c0.flac", "c1.flac", "c2.flac"]

    counting.clear()
    second = extract_split(load_dataset("manifest", "all", m), cfg)
    assert counting == []  # everything from the cache
    np.testing.assert_array_equal(second.audio, first.audio)
    np.testing.assert_array_equal(second.text, first.text)

    audio, rate = sf.read(tmp_path / "c2.flac", dtype="float32")
    sf.write(tmp_path / "c2.flac", audio * 0.5, rate)  # the content of one file changes
    third = extract_split(load_dataset("manifest", "all", m), cfg)
    assert counting == ["c2.flac"]
    np.testing.assert_array_equal(third.audio[:2], first.audio[:2])
    assert not np.allclose(third.audio[2], first.audio[2])

    counting.clear()
    shutil.copy(CLIPS[0], tmp_path / "c2.flac")  # same bytes as c0: served by content from the cache
    assert np.array_equal(extract_split(load_dataset("manifest", "all", m), cfg).audio[2], first.audio[0])
    assert counting == []

    counting.clear()
    other = ExtractConfig(cache_dir=tmp_path / "cache", progress=False, feature_set="eGeMAPSv02")
    assert extract_split(load_dataset("manifest", "all", m), other).audio.shape == (3, 88)
    assert sorted(counting) == ["c0.flac", "c1.flac"]  # a changed setting re-extracts (c2 == c0 by content)


def test_unreadable_audio_is_reported_not_dropped(tmp_path, counting):
    m = manifest(tmp_path)
    (tmp_path / "c1.flac").write_bytes(b"garbage" * 100)
    split = load_dataset("manifest", "all", m, check_audio=False)
    feats = extract_split(split, ExtractConfig(cache_dir=tmp_path / "cache", progress=False))
    assert feats.audio_ok.tolist() == [True, False, True]
    assert len(feats.failures) == 1 and "c1.flac" in feats.failures[0][1]
    assert "unreadable_audio" in split.report.summary()


def test_feature_store_round_trip(tmp_path):
    s = FeatureStore(tmp_path / "x.npz")
    s.put("a", np.ones((2, 3)))
    s.put("b", np.zeros((4, 3)))
    s.save(ragged=True)
    r = FeatureStore(tmp_path / "x.npz")
    assert r["a"].shape == (2, 3) and r["b"].shape == (4, 3) and "c" not in r


def test_transcripts_already_made_survive_an_interrupted_extraction(tmp_path, monkeypatch):
    """A cold extraction transcribes for hours: what it heard is on disk before it is stopped."""
    from training.data.records import Utterance

    for i, clip in enumerate(CLIPS):
        shutil.copy(clip, tmp_path / f"c{i}.flac")
    utts = [Utterance("d0", i, "A", audio_path=tmp_path / f"c{i}.flac", label="neutral") for i in range(3)]
    heard = []

    class Stops:
        def transcribe(self, audio):
            if len(heard) == 2:
                raise KeyboardInterrupt  # the user stops it on the third line
            heard.append(len(audio))
            return f"line {len(heard)}"

    monkeypatch.setattr(extract, "whisper_model", lambda *a: Stops())
    monkeypatch.setattr(extract, "TRANSCRIPTS_SAVE_EVERY", 2)
    cfg = ExtractConfig(cache_dir=tmp_path / "cache", progress=False)
    path = tmp_path / "cache" / "asr" / "x.npz"
    with pytest.raises(KeyboardInterrupt):
        extract._transcripts(utts, cfg, path)
    heard.clear()  # the next run transcribes the third line only
    monkeypatch.setattr(extract, "TRANSCRIPTS_SAVE_EVERY", 200)
    assert extract._transcripts(utts, cfg, path) == ["line 1", "line 2", "line 1"]
    assert len(heard) == 1
