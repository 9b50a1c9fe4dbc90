"""The VAD segmenter on espeak-ng speech, tones, noise and silence (see tests/fixtures/make_fixtures.sh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.audio import load_audio
from streamer.segmenter import SILENCE_DBFS, Segmenter, SegmenterConfig, Utterance

SR = 16000
FIXTURES = Path(__file__).parent / "fixtures"
FRAME_S = 0.03


def speech(name: str) -> np.ndarray:
    audio, sr = sf.read(FIXTURES / f"{name}.flac", dtype="float32")
    assert sr == SR and audio.ndim == 1
    return audio


def silence(seconds: float, level: float = 0.0, seed: int = 0) -> np.ndarray:
    """Digital silence, or faint white noise at ``level`` RMS (a quiet room)."""
    return with_noise(np.zeros(round(seconds * SR), dtype=np.float32), level, seed)


def with_noise(audio: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """A background of white noise at ``level`` RMS under the whole signal, as a microphone hears it."""
    if level == 0.0:
        return audio
    return (audio + level * np.random.default_rng(seed).standard_normal(len(audio))).astype(np.float32)


def tone(seconds: float, freq_hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def run(audio: np.ndarray, config: SegmenterConfig | None = None, chunks: list[int] | None = None) -> list[Utterance]:
    seg = Segmenter(config or SegmenterConfig())
    out: list[Utterance] = []
    if chunks is None:
        out += seg.push(audio)
    else:
        pos = 0
        for size in chunks:
            out += seg.push(audio[pos : pos + size])
            pos += size
        assert pos >= len(audio)
    return out + seg.flush()


def signature(utts: list[Utterance]) -> list[tuple[int, int, int]]:
    return [(u.start_sample, u.end_sample, u.decided_at_sample) for u in utts]


def test_one_sentence_in_silence_has_the_expected_bounds() -> None:
    a = speech("speech_a")
    audio = with_noise(np.concatenate([silence(1.0), a, silence(1.5)]), 1e-3)
    config = SegmenterConfig()
    (utt,) = run(audio, config)
    onset, offset = 1.0, 1.0 + len(a) / SR
    # The utterance starts preroll before the speech and ends postroll after it (to a frame or two).
    assert utt.start_s == pytest.approx(onset - config.preroll_ms / 1000, abs=2 * FRAME_S)
    assert utt.end_s == pytest.approx(offset + config.postroll_ms / 1000, abs=2 * FRAME_S)
    # The end is decided after end_silence of quiet, not before the speech is over.
    assert utt.decided_at_s - offset == pytest.approx(config.end_silence_ms / 1000, abs=3 * FRAME_S)
    assert np.array_equal(utt.audio, audio[utt.start_sample : utt.end_sample])
    assert utt.audio.dtype == np.float32
    assert utt.duration_s == pytest.approx(utt.end_s - utt.start_s)


def test_tone_bounds_are_frame_exact() -> None:
    """A tone has sharp edges (webrtcvad calls tones voiced), so bounds can be checked tightly."""
    config = SegmenterConfig(preroll_ms=90, postroll_ms=60, end_silence_ms=300)
    audio = np.concatenate([silence(0.99), tone(1.5), silence(1.0)])  # tone on frames 33..82
    (utt,) = run(audio, config)
    assert utt.start_sample == (33 - 3) * 480
    assert utt.end_sample == (83 + 2) * 480
    assert utt.decided_at_sample == (83 + 9) * 480  # 90 % of ten 30 ms frames unvoiced


@pytest.mark.parametrize("noise", [0.0, 1e-4, 1e-3, 1e-2])
def test_two_sentences_apart_are_two_utterances_in_any_quiet_background(noise: float) -> None:
    a, b = speech("speech_a"), speech("speech_b")
    apart = run(with_noise(np.concatenate([silence(0.5), a, silence(1.2), b, silence(1.0)]), noise))
    assert len(apart) == 2
    assert apart[0].end_sample < apart[1].start_sample
    b_onset, b_offset = 0.5 + (len(a) / SR) + 1.2, 0.5 + (len(a) + len(b)) / SR + 1.2
    assert apart[1].start_s == pytest.approx(b_onset - 0.2, abs=3 * FRAME_S)
    assert apart[1].end_s == pytest.approx(b_offset + 0.1, abs=3 * FRAME_S)


def test_without_the_noise_gate_webrtcvad_misplaces_the_bounds() -> None:
    """Why min_snr_db exists: webrtcvad adapts slowly to the background and hangs over after loud sounds."""
    a = speech("speech_a")
    # Hiss from the first sample: webrtcvad alone starts the utterance at the session start.
    noisy = with_noise(np.concatenate([silence(0.5), a, silence(1.0)]), 1e-3)
    assert run(noisy, SegmenterConfig(min_snr_db=0.0))[0].start_sample == 0
    assert run(noisy)[0].start_s == pytest.approx(0.5 - 0.2, abs=2 * FRAME_S)
    # A tone into digital silence: webrtcvad alone keeps voicing a few frames after it stopped.
    config = SegmenterConfig(preroll_ms=0, postroll_ms=0)
    beep = np.concatenate([silence(0.99), tone(1.5), silence(1.0)])  # tone on frames 33..82
    assert run(beep, config)[0].end_sample == 83 * 480
    assert run(beep, SegmenterConfig(preroll_ms=0, postroll_ms=0, min_snr_db=0.0))[0].end_sample > 85 * 480


def test_close_together_sentences_are_one_utterance() -> None:
    a, b = speech("speech_a"), speech("speech_b")
    close = run(np.concatenate([silence(0.5), a, silence(0.25), b, silence(1.0)]))
    assert len(close) == 1
    assert close[0].duration_s > (len(a) + len(b)) / SR


@pytest.mark.parametrize(
    "burst",
    [
        tone(0.1, 1000.0, 0.5),  # a beep
        (0.5 * np.random.default_rng(3).standard_normal(int(0.15 * SR))).astype(np.float32),  # a knock
        np.ones(40, dtype=np.float32),  # a click
    ],
    ids=["tone", "noise", "click"],
)
def test_short_bursts_are_discarded_as_clicks(burst: np.ndarray) -> None:
    audio = with_noise(np.concatenate([silence(1.0), burst, silence(1.0)]), 1e-3)
    assert run(audio) == []


def test_silence_and_faint_noise_give_nothing_and_memory_stays_bounded() -> None:
    config = SegmenterConfig()
    seg = Segmenter(config)
    bound = (seg._onset_frames + seg._preroll_frames + 1) * config.frame_samples
    for second in range(120):
        assert seg.push(silence(1.0, 3e-4, seed=second)) == []
        assert seg.buffered_samples <= bound
    assert seg.flush() == []
    assert seg.samples_seen == 120 * SR
    assert seg.level_dbfs == pytest.approx(20 * np.log10(3e-4), abs=1.5)


def test_over_long_speech_is_split_not_dropped() -> None:
    a, b = speech("speech_a"), speech("speech_b")
    gap = silence(0.2)
    talk = np.concatenate([a, gap, b, gap, a, gap, b])  # ~12 s with no pause long enough to end it
    audio = with_noise(np.concatenate([silence(0.5), talk, silence(1.0)]), 1e-3)
    config = SegmenterConfig(max_utterance_ms=3000)
    utts = run(audio, config)
    assert len(utts) >= 4
    assert all(u.duration_s <= 3.0 for u in utts)
    for first, second in zip(utts, utts[1:]):
        assert first.end_sample == second.start_sample  # contiguous: nothing lost at a cut
        assert first.decided_at_sample >= first.end_sample
    covered = np.concatenate([u.audio for u in utts])
    assert np.array_equal(covered, audio[utts[0].start_sample : utts[-1].end_sample])
    assert utts[0].start_s < 0.5 and utts[-1].end_s > 0.5 + len(talk) / SR


def test_split_happens_at_the_quietest_frame_of_the_later_half() -> None:
    loud = tone(1.8, 300.0, 0.5)
    dip = tone(0.09, 300.0, 0.02)  # quiet, but still voiced
    audio = np.concatenate([silence(0.3), loud, dip, tone(3.0, 300.0, 0.5), silence(1.0)])
    config = SegmenterConfig(max_utterance_ms=3000, preroll_ms=0, postroll_ms=0)
    utts = run(audio, config)
    assert len(utts) >= 2
    dip_start, dip_end = 0.3 + 1.8, 0.3 + 1.8 + 0.09
    assert dip_start < utts[0].end_s <= dip_end + FRAME_S
    assert utts[0].end_sample == utts[1].start_sample


@pytest.mark.parametrize("seed", range(4))
def test_same_utterances_whatever_the_chunk_sizes(seed: int) -> None:
    a, b = speech("speech_a"), speech("speech_b")
    parts = [silence(0.7), a, silence(0.9), tone(0.08), silence(0.8), b, silence(0.3), a, silence(0.2)]
    audio = with_noise(np.concatenate(parts), 1e-3)
    config = SegmenterConfig(max_utterance_ms=2500)
    whole = run(audio, config)
    assert len(whole) >= 4  # includes splits and one utterance ended by flush
    rng = np.random.default_rng(seed)
    chunks = list(rng.integers(1, 5001, size=len(audio)))  # more than enough, run() stops at the end
    pieces = run(audio, config, chunks=_cumulative_cut(chunks, len(audio)))
    assert signature(pieces) == signature(whole)
    for x, y in zip(pieces, whole):
        assert np.array_equal(x.audio, y.audio)


def _cumulative_cut(sizes: list[int], total: int) -> list[int]:
    out, pos = [], 0
    for size in sizes:
        if pos >= total:
            break
        out.append(int(min(size, total - pos)))
        pos += out[-1]
    return out


def test_flush_emits_speech_cut_off_by_the_end_of_input() -> None:
    a = speech("speech_a")
    seg = Segmenter()
    audio = np.concatenate([silence(0.5), a[: len(a) - 100]])  # ends mid-word, no trailing silence
    assert seg.push(audio) == []
    assert seg.in_speech
    (utt,) = seg.flush()
    assert utt.end_sample == len(audio)  # the partial last frame is kept too
    assert utt.decided_at_sample == len(audio)
    assert not seg.in_speech
    assert seg.flush() == []


def test_flush_drops_a_pending_click_and_the_timeline_continues() -> None:
    seg = Segmenter()
    assert seg.push(np.concatenate([silence(0.5), tone(0.1)])) == []
    assert seg.flush() == []
    seen = seg.samples_seen
    assert seen == round(0.6 * SR)
    (utt,) = seg.push(np.concatenate([silence(0.5), speech("speech_b"), silence(1.0)]))
    assert utt.start_sample > seen
    assert utt.start_s == pytest.approx(0.6 + 0.5 - 0.2, abs=2 * FRAME_S)


def test_reset_starts_a_new_timeline() -> None:
    audio = np.concatenate([silence(0.5), speech("speech_b"), silence(1.0)])
    seg = Segmenter()
    first = seg.push(audio[: len(audio) // 2])
    seg.reset()
    assert seg.samples_seen == 0 and not seg.in_speech and seg.buffered_samples == 0
    assert first == []
    assert signature(seg.push(audio) + seg.flush()) == signature(run(audio))


def test_in_speech_and_level_follow_the_input() -> None:
    seg = Segmenter()
    assert seg.level_dbfs == SILENCE_DBFS
    seg.push(silence(0.5))
    assert not seg.in_speech and seg.level_dbfs == SILENCE_DBFS
    seg.push(tone(0.5, 440.0, 0.3))
    assert seg.in_speech
    assert seg.level_dbfs == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.2)


def test_channel_speaker_and_other_sample_rates() -> None:
    sr = 8000
    config = SegmenterConfig(sample_rate_hz=sr, frame_ms=20, preroll_ms=0, postroll_ms=0)
    seg = Segmenter(config, channel=1, speaker="B")
    t = np.arange(sr) / sr
    audio = np.concatenate([np.zeros(sr), 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(sr)]).astype(np.float32)
    (utt,) = seg.push(audio)
    assert (utt.channel, utt.speaker, utt.sample_rate_hz) == (1, "B", sr)
    assert utt.start_s == pytest.approx(1.0, abs=0.02) and utt.end_s == pytest.approx(2.0, abs=0.04)


def test_float64_input_is_accepted_and_out_of_range_values_are_kept() -> None:
    audio = np.concatenate([silence(0.5), tone(1.0, amplitude=0.9) * 1.5, silence(1.0)]).astype(np.float64)
    (utt,) = run(audio)
    assert utt.audio.dtype == np.float32
    assert utt.audio.max() > 1.0  # clipping is for the VAD only, the audio is untouched


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        (np.zeros((2, 100), dtype=np.float32), "mono 1-D"),
        (np.zeros(100, dtype=np.int16), "float samples"),
        (np.array([0.0, np.nan], dtype=np.float32), "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(samples: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Segmenter().push(samples)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate_hz": 44100}, "sample_rate_hz"),
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"frame_ms": 25}, "frame_ms"),
        ({"end_silence_ms": 0}, "end_silence_ms"),
        ({"preroll_ms": -10}, "preroll_ms"),
        ({"postroll_ms": 600}, "postroll_ms"),
        ({"min_utterance_ms": 1000, "max_utterance_ms": 1500}, "max_utterance_ms"),
        ({"onset_ratio": 0.0}, "onset_ratio"),
        ({"end_ratio": 1.5}, "end_ratio"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SegmenterConfig(**kwargs)


def test_utterance_checks_its_audio() -> None:
    with pytest.raises(ValueError, match="spans"):
        Utterance(0, 10, np.zeros(5, dtype=np.float32), decided_at_sample=10)
    with pytest.raises(ValueError, match="float32"):
        Utterance(0, 5, np.zeros(5), decided_at_sample=5)


def test_tentative_is_exactly_the_utterance_emitted_later():
    """What tentative() offers during the end-of-speech wait is what push() emits at the decision."""
    audio = load_audio(Path(__file__).parent.parent / "recordings" / "demo-office.flac")
    seg = Segmenter()
    offered = {}
    finals = []
    for start in range(0, len(audio), 480):
        out = seg.push(audio[start : start + 480])
        finals += out
        guess = seg.tentative()
        if guess is not None:
            assert guess.decided_at_sample == -1
            offered[(guess.start_sample, guess.end_sample)] = guess.audio
    finals += seg.flush()
    assert finals
    for utt in finals:
        assert (utt.start_sample, utt.end_sample) in offered
        np.testing.assert_array_equal(offered[(utt.start_sample, utt.end_sample)], utt.audio)
    assert Segmenter().tentative() is None
