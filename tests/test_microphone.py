"""The microphone source against a fake sounddevice module."""

from __future__ import annotations

import importlib.abc
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from streamer.audio import AudioError, StreamResampler
from streamer.microphone import MicrophoneSource, import_sounddevice, list_devices
from tests.test_audio import peak_hz, tones

SR = 16000

# -- MicrophoneSource against a fake sounddevice ------------------------------------------------------


class FakePortAudioError(Exception):
    pass


class FakeStream:
    """Calls the callback from its own thread with the device's script, like PortAudio."""

    def __init__(self, sd: FakeSoundDevice, **kwargs: Any) -> None:
        self.sd, self.kwargs = sd, kwargs
        self.callback, self.finished_callback = kwargs["callback"], kwargs["finished_callback"]
        self.closed = threading.Event()
        self._active = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.sd.fail_open:
            raise FakePortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        self._active = True
        self._thread.start()
        if self.sd.synchronous:
            self._thread.join()

    def _run(self) -> None:
        audio, n = self.sd.audio, self.kwargs["blocksize"]
        assert audio.shape[0] == self.kwargs["channels"]
        for start in range(0, audio.shape[1], n):
            if self.closed.is_set():
                return
            block = np.ascontiguousarray(audio[:, start : start + n].T)  # PortAudio gives (frames, channels)
            self.callback(block, len(block), None, self.sd.status)
            if self.sd.block_pause_s:
                time.sleep(self.sd.block_pause_s)
        if self.sd.ending == "finish":  # the device vanished: PortAudio stops the stream
            self._active = False
            self.finished_callback()
        elif self.sd.ending == "broken":
            self.sd.broken = True
        # "hang": the callbacks just stop coming

    @property
    def active(self) -> bool:
        if self.sd.broken:
            raise FakePortAudioError("Unanticipated host error [PaErrorCode -9999]")
        return self._active

    def close(self) -> None:
        self.closed.set()
        self._thread.join(timeout=5)
        self.sd.closed_streams += 1


class FakeSoundDevice:
    PortAudioError = FakePortAudioError

    def __init__(self, audio: np.ndarray | None = None, rates: dict[int, set[int]] | None = None) -> None:
        self.devices = [
            {"name": "Built-in Microphone", "max_input_channels": 2, "default_samplerate": 48000.0},
            {"name": "HDMI Output", "max_input_channels": 0, "default_samplerate": 48000.0},
            {"name": "USB Headset Mic", "max_input_channels": 1, "default_samplerate": 44100.0},
            {"name": "USB Desk Mic", "max_input_channels": 1, "default_samplerate": 16000.0},
        ]
        self.rates = rates or {0: {16000, 48000}, 2: {44100}, 3: {16000}}
        self.default = type("Default", (), {"device": [0, 1]})()
        self.audio = audio if audio is not None else tones(16000, 1.0, [440.0])
        self.ending, self.status, self.block_pause_s = "finish", None, 0.0
        self.fail_open = self.synchronous = self.broken = False
        self.streams: list[FakeStream] = []
        self.closed_streams = 0

    def query_devices(self) -> list[dict]:
        return self.devices

    def check_input_settings(self, device: int, channels: int, dtype: str, samplerate: int) -> None:
        if samplerate not in self.rates.get(device, set()):
            raise FakePortAudioError("Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, **kwargs: Any) -> FakeStream:  # noqa: N802 - sounddevice's name
        self.streams.append(FakeStream(self, **kwargs))
        return self.streams[-1]


def collect(mic: MicrophoneSource) -> tuple[list[np.ndarray], AudioError | None]:
    blocks = []
    try:
        for block in mic:
            blocks.append(block)
    except AudioError as exc:
        return blocks, exc
    return blocks, None


def test_microphone_delivers_blocks_then_reports_the_device_gone() -> None:
    audio = tones(SR, 1.0, [440.0])
    sd = FakeSoundDevice(audio)
    mic = MicrophoneSource(sounddevice=sd, block_ms=100)
    assert mic.native_rate_hz == SR and mic.device_index == 0
    blocks, error = collect(mic)
    assert [b.shape for b in blocks] == [(1600,)] * 10
    assert np.array_equal(np.concatenate(blocks), audio[0])  # nothing captured is lost
    assert error is not None and "stopped delivering" in str(error)
    assert sd.closed_streams == 1 and mic.dropped_blocks == 0
    assert sd.streams[0].kwargs["samplerate"] == SR and sd.streams[0].kwargs["dtype"] == "float32"


def test_microphone_queue_holds_five_seconds_whatever_the_block() -> None:
    """The queue rides out 5 s of a busy pipeline, whatever the block length."""
    sd = FakeSoundDevice(tones(SR, 1.0, [440.0]))
    assert MicrophoneSource(sounddevice=sd)._queue.maxsize == 50  # 100 ms blocks
    assert MicrophoneSource(sounddevice=sd, block_ms=30)._queue.maxsize == 167  # 5000 / 30, rounded up
    assert MicrophoneSource(sounddevice=sd, block_ms=100, queue_blocks=7)._queue.maxsize == 7


def test_microphone_close_ends_the_iteration_without_error() -> None:
    sd = FakeSoundDevice(tones(SR, 5.0, [440.0]))
    sd.block_pause_s = 0.005
    mic = MicrophoneSource(sounddevice=sd, block_ms=20)
    got = 0
    for _ in mic:
        got += 1
        if got == 5:
            mic.close()
    assert 5 <= got < 250
    assert sd.closed_streams == 1


def test_breaking_out_closes_the_stream() -> None:
    sd = FakeSoundDevice(tones(SR, 5.0, [440.0]))
    sd.block_pause_s = 0.005
    for _ in MicrophoneSource(sounddevice=sd, block_ms=20):
        break
    assert sd.closed_streams == 1


def test_queue_overflow_drops_and_counts_blocks() -> None:
    audio = tones(SR, 2.0, [440.0])
    sd = FakeSoundDevice(audio)
    sd.synchronous = True  # all 20 callbacks fire before the consumer takes anything
    mic = MicrophoneSource(sounddevice=sd, block_ms=100, queue_blocks=4)
    blocks, error = collect(mic)
    assert mic.dropped_blocks == 16
    assert len(blocks) == 4
    assert np.array_equal(np.concatenate(blocks), audio[0, :6400])  # the oldest blocks are the ones kept
    assert error is not None


def test_device_without_16k_is_opened_natively_and_resampled() -> None:
    audio = tones(44100, 1.0, [1000.0])
    sd = FakeSoundDevice(audio)
    mic = MicrophoneSource("headset", sounddevice=sd, block_ms=50)
    assert (mic.device_index, mic.native_rate_hz) == (2, 44100)
    assert sd.streams == []  # nothing opened before iterating
    blocks, error = collect(mic)
    assert sd.streams[0].kwargs["samplerate"] == 44100
    out = np.concatenate(blocks)
    assert abs(len(out) - SR) <= 32  # the resampler's tail is flushed at the end
    assert peak_hz(out[1000:-1000]) == pytest.approx(1000.0, abs=2.0)
    assert 0.45 < np.abs(out[1000:-1000]).max() < 0.55
    assert error is not None


def test_requested_rate_and_stereo_channels() -> None:
    sd = FakeSoundDevice(tones(48000, 0.5, [440.0, 880.0]))
    mic = MicrophoneSource(0, sample_rate_hz=48000, channels=2, sounddevice=sd)
    blocks, _ = collect(mic)
    out = np.concatenate(blocks, axis=1)
    assert out.shape[0] == 2 and abs(out.shape[1] - 8000) <= 32
    assert peak_hz(out[0, 500:-500]) == pytest.approx(440.0, abs=3.0)
    assert peak_hz(out[1, 500:-500]) == pytest.approx(880.0, abs=3.0)
    with pytest.raises(AudioError, match="does not support 22050 Hz"):
        MicrophoneSource(0, sample_rate_hz=22050, sounddevice=sd)
    with pytest.raises(AudioError, match="has 1 channels, 2 asked"):
        MicrophoneSource(2, channels=2, sounddevice=sd)


def test_device_that_goes_silent_times_out() -> None:
    sd = FakeSoundDevice(tones(SR, 0.3, [440.0]))
    sd.ending = "hang"
    mic = MicrophoneSource(sounddevice=sd, timeout_s=0.2)
    started = time.monotonic()
    blocks, error = collect(mic)
    assert time.monotonic() - started < 2.0
    assert len(np.concatenate(blocks)) == 4800
    assert error is not None and "no audio for" in str(error)


def test_stream_that_breaks_or_fails_to_open_is_a_clear_error() -> None:
    sd = FakeSoundDevice(tones(SR, 0.3, [440.0]))
    sd.ending = "broken"
    blocks, error = collect(MicrophoneSource(sounddevice=sd))
    assert len(np.concatenate(blocks)) == 4800
    assert error is not None and "host error" in str(error)
    sd = FakeSoundDevice()
    sd.fail_open = True
    with pytest.raises(AudioError, match="cannot open input device 'Built-in Microphone'"):
        next(iter(MicrophoneSource(sounddevice=sd)))


def test_status_flags_are_counted() -> None:
    sd = FakeSoundDevice(tones(SR, 0.5, [440.0]))
    sd.status = "input overflow"
    mic = MicrophoneSource(sounddevice=sd, block_ms=100)
    collect(mic)
    assert mic.status_flags == 5  # one per 100 ms block


def test_device_selection() -> None:
    sd = FakeSoundDevice()
    assert MicrophoneSource(sounddevice=sd).device_index == 0
    assert MicrophoneSource(3, sounddevice=sd).device_index == 3
    assert MicrophoneSource("3", sounddevice=sd).device_index == 3
    assert MicrophoneSource("usb desk", sounddevice=sd).device_name == "USB Desk Mic"
    with pytest.raises(AudioError, match="ambiguous"):
        MicrophoneSource("usb", sounddevice=sd)
    with pytest.raises(AudioError, match="no input device matches 'webcam'"):
        MicrophoneSource("webcam", sounddevice=sd)
    with pytest.raises(AudioError, match="input device 1 does not exist or has no inputs"):
        MicrophoneSource(1, sounddevice=sd)
    with pytest.raises(AudioError, match="input device 9 does not exist"):
        MicrophoneSource(9, sounddevice=sd)
    sd.default.device = [-1, -1]
    assert MicrophoneSource(sounddevice=sd).device_index == 0
    sd.devices = [d for d in sd.devices if d["max_input_channels"] == 0]
    with pytest.raises(AudioError, match="no audio input device found"):
        MicrophoneSource(sounddevice=sd)


def test_list_devices() -> None:
    sd = FakeSoundDevice()
    listing = list_devices(sd)
    assert listing.splitlines()[0].startswith("*   0  Built-in Microphone  (2 in, 48000 Hz)")
    assert "USB Headset Mic" in listing and "HDMI" not in listing
    sd.devices = []
    assert list_devices(sd) == "no audio input devices found"


class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


def test_missing_portaudio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(AudioError, match="apt-get install libportaudio2") as info:
        MicrophoneSource()
    assert "PortAudio library not found" in str(info.value)
    with pytest.raises(AudioError, match="libportaudio2"):
        list_devices()
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # not installed at all
    with pytest.raises(AudioError, match="libportaudio2"):
        import_sounddevice()


def test_stream_resampler_matches_the_rate_and_keeps_state() -> None:
    x = tones(48000, 1.0, [440.0, 3000.0])
    rs = StreamResampler(48000, SR, channels=2)
    pieces = [rs.push(x[:, i : i + 777]) for i in range(0, x.shape[1], 777)] + [rs.flush()]
    out = np.concatenate(pieces, axis=1)
    assert abs(out.shape[1] - SR) <= 32
    assert peak_hz(out[0, 500:-500]) == pytest.approx(440.0, abs=2.0)
    assert peak_hz(out[1, 500:-500]) == pytest.approx(3000.0, abs=2.0)
    # No clicks at block edges: the waveform is as smooth as a sine sampled at 16 kHz.
    step = np.abs(np.diff(out[0, 500:-500])).max()
    assert step < 0.5 * 2 * np.pi * 440 / SR * 1.05
