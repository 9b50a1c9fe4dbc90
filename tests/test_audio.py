"""Audio decoding, file replay and the recorder (the microphone: tests/test_microphone.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from streamer.audio import AudioError, FileSource, Recorder, load_audio, resample

SR = 16000
FIXTURES = Path(__file__).parent / "fixtures"


def tones(rate: int, seconds: float, freqs: list[float], amplitude: float = 0.5) -> np.ndarray:
    """(channels, n) float32, one sine per channel."""
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def write_av(path: Path, audio: np.ndarray, rate: int, codec: str, video: bool = False) -> Path:
    """Encode (channels, n) float audio with PyAV (optionally with a small video track too)."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        vstream = None
        if video:
            vstream = container.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
        astream = container.add_stream(codec, rate=rate, layout=layout)
        for i, start in enumerate(range(0, audio.shape[1], 1024)):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(astream.encode(frame))
            if vstream is not None and i % 4 == 0:
                image = np.full((32, 32, 3), i % 255, dtype=np.uint8)
                container.mux(vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(astream.encode(None))
        if vstream is not None:
            container.mux(vstream.encode(None))
    return path


def write_video_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


# -- load_audio ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "writer"),
    [
        ("wav", lambda p, x, r: sf.write(p, x.T, r, subtype="PCM_16")),
        ("flac", lambda p, x, r: sf.write(p, x.T, r)),
        ("ogg", lambda p, x, r: sf.write(p, x.T, r, format="OGG", subtype="VORBIS")),
        ("mp3", lambda p, x, r: write_av(p, x, r, "libmp3lame")),
        ("m4a", lambda p, x, r: write_av(p, x, r, "aac")),
        ("mp4", lambda p, x, r: write_av(p, x, r, "aac", video=True)),
    ],
)
def test_every_format_decodes_to_16k(tmp_path: Path, suffix: str, writer: Any) -> None:
    rate = 44100
    path = tmp_path / f"tone.{suffix}"
    writer(path, tones(rate, 1.0, [440.0]), rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # Lossy codecs pad to whole frames (AAC's last 1024-sample frame is not always trimmed).
    assert abs(len(audio) - SR) <= (0 if suffix in ("wav", "flac") else 1024 * SR // rate + 1)
    assert peak_hz(audio[2000:14000]) == pytest.approx(440.0, abs=3.0)
    assert 0.3 < np.abs(audio[2000:14000]).max() < 0.6


def test_speech_fixture_round_trips_through_lossless_formats(tmp_path: Path) -> None:
    speech = load_audio(FIXTURES / "speech_b.flac")
    assert len(speech) == sf.info(FIXTURES / "speech_b.flac").frames
    sf.write(tmp_path / "s.wav", speech, SR, subtype="FLOAT")
    assert np.array_equal(load_audio(tmp_path / "s.wav"), speech)


def test_8k_mono_is_upsampled(tmp_path: Path) -> None:
    sf.write(tmp_path / "phone.wav", tones(8000, 1.5, [440.0])[0], 8000)
    audio = load_audio(tmp_path / "phone.wav")
    assert len(audio) == 24000
    assert peak_hz(audio) == pytest.approx(440.0, abs=1.0)


def test_48k_stereo_is_downsampled_and_downmixed_or_kept(tmp_path: Path) -> None:
    sf.write(tmp_path / "stereo.flac", tones(48000, 1.0, [440.0, 1000.0]).T, 48000)
    both = load_audio(tmp_path / "stereo.flac", mono=False)
    assert both.shape == (2, SR) and both.dtype == np.float32
    assert peak_hz(both[0]) == pytest.approx(440.0, abs=1.0)
    assert peak_hz(both[1]) == pytest.approx(1000.0, abs=1.0)
    mono = load_audio(tmp_path / "stereo.flac")
    assert mono.shape == (SR,)
    np.testing.assert_allclose(mono, both.mean(axis=0), atol=1e-6)
    # A tone above the new Nyquist is filtered out, not aliased to 16000 - 10000 = 6000 Hz.
    sf.write(tmp_path / "high.wav", tones(48000, 1.0, [10000.0])[0], 48000)
    assert np.abs(load_audio(tmp_path / "high.wav")[1000:-1000]).max() < 0.01


@pytest.mark.parametrize("suffix", ["wav", "m4a"])
def test_start_and_end_select_a_part(tmp_path: Path, suffix: str) -> None:
    rate = 22050
    audio = np.concatenate([tones(rate, 1.0, [300.0]), tones(rate, 1.0, [1200.0])], axis=1)
    path = tmp_path / f"two.{suffix}"
    if suffix == "wav":
        sf.write(path, audio.T, rate)
    else:
        write_av(path, audio, rate, "aac")
    part = load_audio(path, start_s=1.25, end_s=1.75)
    assert len(part) == pytest.approx(8000, abs=1)
    assert peak_hz(part) == pytest.approx(1200.0, abs=3.0)
    head = load_audio(path, end_s=0.5)
    assert peak_hz(head[1000:]) == pytest.approx(300.0, abs=3.0)


def test_resample_keeps_lengths_and_rejects_bad_rates() -> None:
    x = tones(22050, 2.0, [440.0])
    assert resample(x, 22050, SR).shape == (1, 32000)
    assert np.array_equal(resample(x, 22050, 22050), x)
    with pytest.raises(AudioError, match="positive"):
        resample(x, 0, SR)


def test_load_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.mp3")
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="no decodable audio samples"):
        load_audio(tmp_path / "zero.wav")
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(write_video_only(tmp_path / "silent_film.mp4"))
    sf.write(tmp_path / "short.wav", np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="after 5"):
        load_audio(tmp_path / "short.wav", start_s=5.0)
    with pytest.raises(AudioError, match="end_s"):
        load_audio(tmp_path / "short.wav", start_s=0.5, end_s=0.2)
    with pytest.raises(AudioError, match="start_s"):
        load_audio(tmp_path / "short.wav", start_s=-1.0)


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3", "m4a", "mkv"])
def test_corrupt_files_are_a_clear_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"junk.{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="junk") as info:
        load_audio(path)
    assert "\n" not in str(info.value)


# -- FileSource ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_file_source_paces_on_samples_delivered() -> None:
    fake = FakeClock()
    src = FileSource(FIXTURES / "speech_b.flac", block_ms=100, clock=fake.clock, sleep=fake.sleep)
    delivered, times = 0, []
    for block in src:
        delivered += len(block)
        times.append((fake.now - 1000.0, delivered))
    # Each block arrives when its last sample would have been spoken, like a microphone.
    for t, n in times:
        assert t == pytest.approx(n / SR)
    assert sum(fake.sleeps) == pytest.approx(src.duration_s)
    assert delivered == len(load_audio(FIXTURES / "speech_b.flac"))
    assert src.dropped_blocks == 0 and "speech_b.flac" in src.description


def test_file_source_catches_up_after_a_slow_consumer() -> None:
    fake = FakeClock()
    src = FileSource(FIXTURES / "speech_b.flac", block_ms=100, clock=fake.clock, sleep=fake.sleep)
    blocks = iter(src)
    next(blocks)
    fake.now += 0.5  # the consumer spends 0.5 s on the first block
    sleeps_before = len(fake.sleeps)
    for _ in range(4):  # blocks 2..5 are already due: no waiting
        next(blocks)
    assert len(fake.sleeps) == sleeps_before
    next(blocks)  # block 6 is due at 0.6 s
    assert fake.sleeps[-1] == pytest.approx(0.1)


def test_file_source_max_speed_and_split_channels(tmp_path: Path) -> None:
    sf.write(tmp_path / "st.wav", tones(SR, 1.05, [440.0, 880.0]).T, SR)
    fake = FakeClock()
    src = FileSource(tmp_path / "st.wav", block_ms=200, speed="max", split_channels=True, sleep=fake.sleep)
    blocks = list(src)
    assert fake.sleeps == []
    assert src.channels == 2
    assert [b.shape for b in blocks] == [(2, 3200)] * 5 + [(2, 800)]
    assert np.array_equal(np.concatenate(blocks, axis=1), load_audio(tmp_path / "st.wav", mono=False))
    assert all(b.ndim == 1 for b in FileSource(tmp_path / "st.wav", speed="max"))


def test_file_source_close_and_bad_arguments() -> None:
    src = FileSource(FIXTURES / "speech_b.flac", speed="max", block_ms=100)
    seen = 0
    for _ in src:
        seen += 1
        if seen == 3:
            src.close()
    assert seen == 3
    with pytest.raises(AudioError, match="speed"):
        FileSource(FIXTURES / "speech_b.flac", speed="fast")  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="block_ms"):
        FileSource(FIXTURES / "speech_b.flac", block_ms=0)
    with pytest.raises(AudioError, match="does not exist"):
        FileSource(FIXTURES / "nope.flac")


# -- Recorder ---------------------------------------------------------------------------------------


def test_recorder_writes_flac_incrementally(tmp_path: Path) -> None:
    speech = load_audio(FIXTURES / "speech_a.flac")
    path = tmp_path / "session.flac"
    rec = Recorder(path)
    blocks = np.array_split(speech, 20)
    for block in blocks[:12]:
        rec.write(block)
    # A crash now: the bytes on disk so far must already be decodable.
    shutil.copy(path, tmp_path / "crashed.flac")
    crashed = load_audio(tmp_path / "crashed.flac")
    written = sum(len(b) for b in blocks[:12])
    assert written - 4096 <= len(crashed) <= written
    np.testing.assert_allclose(crashed, speech[: len(crashed)], atol=1.5 / 32768)
    for block in blocks[12:]:
        rec.write(block)
    rec.close()
    rec.close()  # idempotent
    assert rec.samples_written == len(speech)
    np.testing.assert_allclose(load_audio(path), speech, atol=1.5 / 32768)


def test_recorder_stereo_and_errors(tmp_path: Path) -> None:
    with Recorder(tmp_path / "two.flac") as rec:
        rec.write(tones(SR, 0.5, [440.0, 880.0]))
        with pytest.raises(AudioError, match="1-channel block after 2-channel"):
            rec.write(np.zeros(100, dtype=np.float32))
        with pytest.raises(AudioError, match="shape"):
            rec.write(np.zeros((1, 2, 3), dtype=np.float32))
    assert load_audio(tmp_path / "two.flac", mono=False).shape == (2, 8000)
    with pytest.raises(AudioError, match="ending in .flac"):
        Recorder(tmp_path / "x.wav")
    with pytest.raises(AudioError, match="does not exist"):
        Recorder(tmp_path / "no" / "x.flac")
