"""Synthetic voices and the words-only / voice-only / mixed datasets built on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import load_dataset
from training.data.shared import RAVDESS_SENTENCES
from training.data.tts import ENGINES, VOICE_SPLITS, Voice, rendered, speak

SHARED = Path(__file__).parent.parent.parent / "shared" / "data"


def test_voice_splits_are_disjoint_and_held_out_engines_only_test():
    ids = {role: {v.id for v in voices} for role, voices in VOICE_SPLITS.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    names = {role: {v.name for v in voices} for role, voices in VOICE_SPLITS.items()}
    assert not names["train"] & names["test"]  # not even the same variant at another pitch
    for role in ("train", "validation"):
        assert {v.engine for v in VOICE_SPLITS[role]} == {"espeak-ng"}
    assert {v.engine for v in VOICE_SPLITS["test"]} == set(ENGINES)
    with pytest.raises(ValueError, match="unknown TTS engine"):
        Voice("say", "alex")


@pytest.mark.parametrize("voice", [VOICE_SPLITS["train"][0], Voice("flite", "slt"), Voice("festival", "kal_diphone")])
def test_every_engine_speaks_a_line_that_starts_with_a_dash(voice):
    audio = speak(voice, "-leg? I can not believe it.")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 < len(audio) / 16000 < 6 and np.abs(audio).max() > 0.05


def test_renders_are_cached(tmp_path):
    voice = VOICE_SPLITS["validation"][0]
    path = rendered(voice, "Hello there.", tmp_path)
    mtime = path.stat().st_mtime_ns
    assert rendered(voice, "Hello there.", tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert rendered(VOICE_SPLITS["validation"][1], "Hello there.", tmp_path) != path


def test_words_only_dialogues_use_the_splits_voices(tmp_path):
    d = load_dataset("tts-words", "test", SHARED, max_dialogues=2, engines="espeak-ng", cache_dir=tmp_path)
    test_ids = {v.id for v in VOICE_SPLITS["test"]}
    utts = list(d.utterances())
    assert utts and all(u.voice in test_ids and u.audio_path.is_file() for u in utts)
    assert all(u.text and u.label for u in utts)
    for dialogue in d.dialogues:  # one voice per MELD speaker
        by_speaker = {}
        for u in dialogue.utterances:
            assert by_speaker.setdefault(u.speaker, u.voice) == u.voice


def test_mixed_voice_only_part_has_neutral_meld_words_not_ravdess_sentences(tmp_path):
    d = load_dataset(
        "mixed", "validation", SHARED, paired_dialogues=0, words_dialogues=0, voice_dialogues=5, check_audio=False
    )
    utts = list(d.utterances())
    assert utts and all(u.audio_path is not None for u in utts)
    assert not {u.text for u in utts} & set(RAVDESS_SENTENCES.values())
    assert len({u.label for u in utts}) > 1  # the voice's label, whatever the words


def test_words_only_text_can_be_what_whisper_hears(tmp_path):
    """``text=asr``: same renderings and labels, no script text (extraction transcribes the audio, as live)."""
    script = load_dataset("tts-words", "test", SHARED, max_dialogues=1, engines="espeak-ng", cache_dir=tmp_path)
    asr = load_dataset(
        "tts-words", "test", SHARED, max_dialogues=1, engines="espeak-ng", cache_dir=tmp_path, text="asr"
    )
    a, b = list(script.utterances()), list(asr.utterances())
    assert [u.audio_path for u in a] == [u.audio_path for u in b] and [u.label for u in a] == [u.label for u in b]
    assert all(u.text for u in a) and all(u.text is None for u in b)
    mixed = load_dataset(
        "mixed", "test", SHARED, paired_dialogues=0, words_dialogues=1, voice_dialogues=0, words_text="asr"
    )
    assert all(u.text is None for u in mixed.utterances())
    with pytest.raises(ValueError, match="words_text must be one of script, asr"):
        load_dataset("mixed", "test", SHARED, words_text="whisper")


def test_voice_repeats_adds_chains_and_keeps_the_first_ones():
    opts = dict(paired_dialogues=0, words_dialogues=0, check_audio=False)
    once = load_dataset("mixed", "validation", SHARED, **opts)
    twice = load_dataset("mixed", "validation", SHARED, voice_repeats=2, **opts)
    assert len(twice.dialogues) == 2 * len(once.dialogues)
    assert twice.dialogues[: len(once.dialogues)] == once.dialogues
    assert {u.speaker for u in twice.utterances()} == {u.speaker for u in once.utterances()}  # no new voices
    with pytest.raises(ValueError, match="voice_repeats must be >= 1"):
        load_dataset("mixed", "validation", SHARED, voice_repeats=0, **opts)
