"""Augmented copies: new voices in new rooms, applied before the live cut, cached apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.augment import Augmentation, draw, parse
from training.data import load_dataset
from training.data.records import Utterance
from training.extract import audio_key, load_utterance_audio

SHARED = Path(__file__).parent.parent.parent / "shared" / "data"
SR = 16000


def _tone(seconds=2.0, f0=180.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_spec_text_round_trips_and_bad_specs_are_named():
    a = Augmentation(speed=1.08, gain_db=-3.2, rt60_s=0.45, telephone=True, snr_db=12.5, noise="white", seed=7)
    assert parse(a.key()) == a
    assert parse(Augmentation().key()) == Augmentation()
    with pytest.raises(ValueError, match="not an augmentation spec"):
        parse("speed=fast")
    with pytest.raises(ValueError, match="speed must be within"):
        Augmentation(speed=2.0)


def test_speed_changes_duration_and_pitch():
    x = _tone(2.0, 200.0)
    y = Augmentation(speed=1.12)(x)
    assert abs(len(y) - len(x) / 1.12) < 5
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * SR / len(y) - 224.0) < 3  # 200 Hz played 1.12x faster


def test_noise_lands_at_the_asked_snr_and_is_seeded():
    x = _tone()
    aug = Augmentation(snr_db=10.0, noise="pink", seed=3)
    y = aug(x)
    noise = y - x
    snr = 10 * np.log10(np.mean(x**2) / np.mean(noise**2))
    assert abs(snr - 10.0) < 0.5
    assert np.array_equal(y, aug(x)) and not np.array_equal(y, Augmentation(snr_db=10.0, seed=4)(x))


def test_room_and_telephone_keep_the_level_and_never_clip():
    x = _tone()
    for aug in (Augmentation(rt60_s=0.6, seed=1), Augmentation(telephone=True), Augmentation(gain_db=12.0)):
        y = aug(x)
        assert len(y) == len(x) and np.abs(y).max() <= 0.99 + 1e-6
    y = Augmentation(rt60_s=0.6, seed=1)(x)
    assert abs(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x**2)) - 1) < 0.05


def test_one_copy_of_a_voice_is_one_person_in_one_room():
    a, b = draw("ravdess-03", 1, "clip-a"), draw("ravdess-03", 1, "clip-b")
    assert (a.speed, a.gain_db, a.rt60_s, a.telephone, a.snr_db, a.noise) == (
        b.speed,
        b.gain_db,
        b.rt60_s,
        b.telephone,
        b.snr_db,
        b.noise,
    )
    assert a.seed != b.seed  # the noise realisation is the clip's own
    others = {draw("ravdess-03", k, "clip-a").key() for k in range(2, 8)} | {draw("emodb-08", 1, "clip-a").key()}
    assert a.key() not in others


def test_augmented_audio_goes_through_the_training_path_and_is_cached_apart(tmp_path):
    path = tmp_path / "clip.wav"
    x = np.concatenate([np.zeros(SR // 2, np.float32), _tone(1.5), np.zeros(SR // 2, np.float32)])
    sf.write(path, x, SR)
    spec = Augmentation(speed=0.92, snr_db=20.0, seed=5).key()
    clean = Utterance("d", 0, "A", audio_path=path, text="hi")
    aug = Utterance("d", 0, "A", audio_path=path, text="hi", augment=spec)
    assert audio_key(clean) != audio_key(aug) and audio_key(clean) == audio_key(Utterance("d", 1, "B", path, text="x"))
    raw = load_utterance_audio(path, None, None, live_cut=False, augment=spec)
    assert np.array_equal(raw, parse(spec)(load_utterance_audio(path, None, None, live_cut=False)))
    assert not np.array_equal(
        load_utterance_audio(path, None, None, True, spec), load_utterance_audio(path, None, None, True)
    )


def test_mixed_augments_acted_training_dialogues_only():
    opts = dict(paired_dialogues=3, words_dialogues=0, voice_dialogues=2, check_audio=False)
    plain = load_dataset("mixed", "train", SHARED, **opts)
    aug = load_dataset("mixed", "train", SHARED, augment_copies=2, **opts)
    assert len(aug.dialogues) == 3 * len(plain.dialogues)
    copies = [d for d in aug.dialogues if d.id.startswith("aug")]
    assert all(u.augment for d in copies for u in d.utterances)
    assert not any(u.augment for d in plain.dialogues for u in d.utterances)
    val = load_dataset("mixed", "validation", SHARED, augment_copies=2, **opts)
    assert not any(u.augment for u in val.utterances())
    with pytest.raises(ValueError, match="augment_copies must be >= 0"):
        load_dataset("mixed", "train", SHARED, augment_copies=-1, **opts)


def test_mixed_augments_words_only_dialogues_with_a_new_voice_per_dialogue():
    opts = dict(paired_dialogues=0, words_dialogues=4, voice_dialogues=0, words_text="asr", check_audio=False)
    plain = load_dataset("mixed", "train", SHARED, **opts)
    aug = load_dataset("mixed", "train", SHARED, augment_words=1, **opts)
    assert len(aug.dialogues) == 2 * len(plain.dialogues)
    copies = [d for d in aug.dialogues if d.id.startswith("aug1-words-")]
    assert len(copies) == len(plain.dialogues)
    assert all(u.augment and u.text is None for d in copies for u in d.utterances)  # text: Whisper of the copy
    # one synthetic voice, two dialogues: two different new voices (speed, gain, room, noise)
    by_voice: dict[str, set[str]] = {}
    for d in copies:
        for u in d.utterances:
            by_voice.setdefault(u.voice, set()).add(u.augment.rsplit(",", 1)[0])
    assert any(len(draws) > 1 for draws in by_voice.values())
    # within a dialogue a voice stays one voice
    for d in copies:
        per = {}
        for u in d.utterances:
            per.setdefault(u.voice, set()).add(u.augment.rsplit(",", 1)[0])
        assert all(len(v) == 1 for v in per.values())
    assert not load_dataset("mixed", "validation", SHARED, augment_words=1, **opts).dialogues[0].utterances[0].augment
    with pytest.raises(ValueError, match="augment_words must be >= 0"):
        load_dataset("mixed", "train", SHARED, augment_words=-1, **opts)
