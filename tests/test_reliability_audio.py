"""Issue #12, audio side: streaming decode (bounded memory), NaN/inf samples, a recording cut short."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.audio import FileSource, load_audio
from streamer.decode import PolyphaseStream
from streamer.events import StatusEvent, UtteranceEvent
from streamer.pipeline import LivePipeline
from tests.test_pipeline import processor

ROOT = Path(__file__).parent.parent
SR = 16000


def noise(rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((round(rate * seconds), channels))).astype(np.float32)


def test_polyphase_stream_matches_a_whole_signal_resample():
    from scipy.signal import resample_poly

    x = noise(44100, 2.3, 2).T
    whole = resample_poly(x, 160, 441, axis=-1).astype(np.float32)
    stream = PolyphaseStream(44100, SR, 2)
    cuts = [0, 7, 5000, 44100, 70000, x.shape[1]]
    parts = [stream.push(x[:, a:b]) for a, b in zip(cuts, cuts[1:])] + [stream.flush()]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


@pytest.mark.parametrize("split", [False, True])
def test_file_source_replays_what_a_whole_file_decode_gives(tmp_path, split):
    path = tmp_path / "call.wav"
    sf.write(path, noise(44100, 3.3, 2), 44100, subtype="FLOAT")
    blocks = list(FileSource(path, block_ms=100, speed="max", split_channels=split))
    assert all(b.shape[-1] == 1600 for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks, axis=-1), load_audio(path, mono=not split))


def write_pcm_mka(path: Path, audio: np.ndarray, rate: int) -> Path:
    """(n, 2) float audio as 16-bit PCM in Matroska: a container only PyAV (ffmpeg) reads here."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        for start in range(0, len(audio), rate):
            part = (audio[start : start + rate] * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(part.reshape(1, -1), "s16", "stereo")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("suffix", [".wav", ".mka"])
def test_file_source_decodes_block_wise_so_memory_stays_bounded(tmp_path, suffix):
    # 60 s of 48 kHz stereo: a whole-file decode holds 23 MB of float32 before resampling.
    path = tmp_path / f"long{suffix}"
    if suffix == ".wav":
        sf.write(path, noise(48000, 60.0, 2), 48000, subtype="PCM_16")
    else:
        write_pcm_mka(path, noise(48000, 60.0, 2), 48000)
    whole_mb = 60 * 48000 * 2 * 4 / 1e6
    src = FileSource(path, block_ms=100, speed="max")
    tracemalloc.start()
    try:
        n = sum(len(block) for block in src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 60 * SR
    assert peak / 1e6 < whole_mb / 4, f"replaying used {peak / 1e6:.1f} MB at peak"


def test_nonfinite_samples_are_silence_said_once_and_the_analysis_goes_on(tmp_path, caplog):
    speech = load_audio(ROOT / "recordings" / "demo-office.flac")
    broken = speech.copy()
    broken[SR : SR + 50] = np.nan  # one second in: the first utterance
    broken[SR + 100] = np.inf
    path = tmp_path / "broken.wav"
    sf.write(path, broken, SR, subtype="FLOAT")
    clean_path = tmp_path / "clean.wav"
    sf.write(clean_path, np.where(np.isfinite(broken), broken, 0.0).astype(np.float32), SR, subtype="FLOAT")

    def run(p):
        events = []
        LivePipeline(FileSource(p, speed="max"), processor()).run(events.append, threading.Event(), threading.Event())
        return events

    with caplog.at_level(logging.WARNING):
        events = run(path)
    said = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(said) == 1 and "51 non-finite samples" in said[0]
    status = [e.message for e in events if isinstance(e, StatusEvent) and "non-finite" in e.message]
    assert status == ["51 non-finite samples (NaN or infinity) were treated as silence"]
    got = [(e.start_s, e.end_s, e.label) for e in events if isinstance(e, UtteranceEvent)]
    want = [(e.start_s, e.end_s, e.label) for e in run(clean_path) if isinstance(e, UtteranceEvent)]
    assert got == want and got[-1][1] > 30  # every utterance, to the end of the 33 s recording
    assert not any(isinstance(e, StatusEvent) and e.error for e in events)


FULL_DISK = """
import resource, signal, sys
import numpy as np
from streamer.audio import AudioError, Recorder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # the disk is full at 150 kB
rec = Recorder(sys.argv[1])
noise = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32) * 0.1
try:
    for block in np.split(noise, 200):
        rec.write(block)
except AudioError as exc:
    print(exc)
rec.write(noise[:1600])  # after the failure: ignored, no second message
rec.close()
"""


def test_recording_cut_short_by_a_full_disk_stays_a_valid_file(tmp_path):
    path = tmp_path / "session.flac"
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("stopped recording to") == 1 and "valid FLAC" in out.stdout
    audio = load_audio(path)  # ser-live reads back what it wrote
    assert 2 * SR < len(audio) < 20 * SR
    with sf.SoundFile(path) as f:  # and so does libsndfile: a well-formed FLAC stream
        assert f.read(SR).shape == (SR,)
    expected = np.random.default_rng(0).standard_normal(16000 * 20).astype(np.float32) * 0.1
    np.testing.assert_allclose(audio, expected[: len(audio)], atol=1.5 / 32768)


def test_a_failing_recording_is_reported_and_the_analysis_goes_on(tmp_path):
    from streamer.audio import AudioError

    class DiskFull:
        def __init__(self):
            self.blocks = 0

        def write(self, block):
            self.blocks += 1
            if self.blocks == 30:
                raise AudioError("stopped recording to x.flac after 3.0 s (no space left on the disk)")

        def close(self):
            pass

    recorder = DiskFull()
    events = []
    src = FileSource(ROOT / "recordings" / "demo-office.flac", speed="max")
    LivePipeline(src, processor(), recorder=recorder).run(events.append, threading.Event(), threading.Event())
    errors = [e.message for e in events if isinstance(e, StatusEvent) and e.error]
    assert errors == ["stopped recording to x.flac after 3.0 s (no space left on the disk); the analysis goes on"]
    assert recorder.blocks == 30  # not called again after it failed
    utts = [e for e in events if isinstance(e, UtteranceEvent)]
    assert len(utts) >= 5 and utts[-1].end_s > 30 and events[-1].finished


@pytest.mark.parametrize("closed", [True, False])
def test_a_file_with_a_damaged_tail_is_read_up_to_the_damage(tmp_path, caplog, closed):
    """A crash or a copy cut short leaves half a FLAC frame at the end: keep what came before it."""
    from streamer.audio import Recorder

    speech = noise(SR, 5.0, 1)[:, 0]
    rec = Recorder(tmp_path / "rec.flac")
    for block in np.split(speech, 50):
        rec.write(block)
    if closed:
        rec.close()
    cut = tmp_path / "cut.flac"
    cut.write_bytes((tmp_path / "rec.flac").read_bytes()[:-3000])
    with caplog.at_level(logging.WARNING):
        audio = load_audio(cut)
        replayed = np.concatenate(list(FileSource(cut, speed="max")))
    assert 3 * SR < len(audio) < 5 * SR and np.array_equal(replayed, audio)
    np.testing.assert_allclose(audio, speech[: len(audio)], atol=1.5 / 32768)
    assert any("is damaged after" in r.getMessage() for r in caplog.records)
