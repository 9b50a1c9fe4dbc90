"""Where the live tracker's audio comes from: files, the microphone, and the session recording.

Everything leaves here as float32 at 16 kHz (the segmenter's and Whisper's rate): mono
``(n,)``, or ``(channels, n)`` when channels are kept apart (one speaker per channel).

* :func:`load_audio` decodes a whole clip: wav/flac/ogg through soundfile (libsndfile), and
  mp3/m4a/mp4/anything else with an audio track through PyAV (ffmpeg), then resamples with a
  polyphase filter (``scipy.signal.resample_poly``). The decoding itself is
  :mod:`streamer.decode`.
* :class:`FileSource` replays a file block by block, decoding as it goes (bounded memory),
  in real time (paced on samples delivered, with an injectable clock so tests don't wait)
  or as fast as possible.
* :class:`MicrophoneSource` captures from a sounddevice/PortAudio input. Its callback runs on
  PortAudio's thread and only copies the block into a bounded queue (dropping and counting
  blocks when the consumer falls behind, never blocking); resampling happens in the consumer.
* :class:`~streamer.recorder.Recorder` (re-exported here) writes the session to FLAC as it
  arrives, so a crash loses at most the last FLAC frame (about a quarter of a second).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol

import av
import numpy as np
from scipy.signal import resample_poly

from streamer.decode import SOUNDFILE_SUFFIXES, AudioError, AudioStream, PolyphaseStream
from streamer.options import DEFAULT_BLOCK_MS
from streamer.recorder import Recorder

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
__all__ = ["SOUNDFILE_SUFFIXES", "AudioError", "FileSource", "Recorder", "StreamResampler", "load_audio", "resample"]


class AudioSource(Protocol):
    """What the live pipeline consumes: an iterable of 16 kHz float32 blocks."""

    sample_rate_hz: int
    channels: int
    dropped_blocks: int

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...

    @property
    def description(self) -> str: ...


# -- decoding ------------------------------------------------------------------------------------


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample along the last axis with a polyphase anti-aliasing filter; returns float32."""
    if from_hz <= 0 or to_hz <= 0:
        raise AudioError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
    if from_hz == to_hz:
        return audio.astype(np.float32, copy=False)
    g = math.gcd(int(from_hz), int(to_hz))
    return resample_poly(audio, to_hz // g, from_hz // g, axis=-1).astype(np.float32)


def _check_path(path: Path, start_s: float | None, end_s: float | None) -> None:
    if start_s is not None and start_s < 0:
        raise AudioError(f"start_s must be >= 0, got {start_s}")
    if end_s is not None and end_s <= (start_s or 0.0):
        raise AudioError(f"end_s ({end_s}) must be after start_s ({start_s or 0.0})")
    if not path.exists():
        raise AudioError(f"audio file {path} does not exist; check the path")
    if not path.is_file():
        raise AudioError(f"{path} is not a file; give an audio or video file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); re-export or re-record it")


def _no_samples(path: Path, start_s: float | None) -> AudioError:
    where = "" if start_s is None else f" after {start_s} s"
    return AudioError(f"{path} contains no decodable audio samples{where}; check the file (or start_s)")


def load_audio(
    path: str | Path,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    start_s: float | None = None,
    end_s: float | None = None,
    mono: bool = True,
) -> np.ndarray:
    """Decode ``path`` (or its ``[start_s, end_s)`` part) -> float32 ``(n,)``, or ``(channels, n)`` if not mono.

    The whole part is held in memory: for utterance-sized clips. A long recording is
    replayed with :class:`FileSource`, which decodes as it goes."""
    path = Path(path)
    _check_path(path, start_s, end_s)
    stream = AudioStream(path, start_s, end_s)
    chunks = list(stream)
    stream.report_nonfinite()
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise _no_samples(path, start_s)
    data = resample(np.concatenate(chunks, axis=1), stream.rate, sample_rate_hz)
    return data.mean(axis=0) if mono else data


class StreamResampler:
    """Block-by-block resampling that keeps its filter state across blocks (for live input).

    One ffmpeg (swresample) mono resampler per channel; its output lags a few samples
    behind its input, ``flush()`` returns the rest at the end."""

    def __init__(self, from_hz: int, to_hz: int, channels: int) -> None:
        self.from_hz, self.to_hz = from_hz, to_hz
        self._resamplers = [av.AudioResampler(format="fltp", layout="mono", rate=to_hz) for _ in range(channels)]
        self._pending: list[list[np.ndarray]] = [[] for _ in range(channels)]

    def push(self, block: np.ndarray) -> np.ndarray:
        """(channels, n) float32 at from_hz -> (channels, m) float32 at to_hz."""
        for ch, resampler in enumerate(self._resamplers):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(block[ch : ch + 1], dtype=np.float32), "fltp", "mono"
            )
            frame.sample_rate = self.from_hz
            self._pending[ch].extend(out.to_ndarray()[0] for out in resampler.resample(frame))
        return self._take()

    def flush(self) -> np.ndarray:
        for ch, resampler in enumerate(self._resamplers):
            self._pending[ch].extend(out.to_ndarray()[0] for out in resampler.resample(None))
        return self._take()

    def _take(self) -> np.ndarray:
        # Channels may come out of their resamplers in different pieces; hand out what all have.
        joined = [np.concatenate(p) if p else np.zeros(0, np.float32) for p in self._pending]
        n = min(len(j) for j in joined)
        self._pending = [[j[n:]] if len(j) > n else [] for j in joined]
        return np.stack([j[:n] for j in joined]).astype(np.float32, copy=False)


# -- file replay ---------------------------------------------------------------------------------


class FileSource:
    """Replays a file in blocks of ``block_ms``, in real time or as fast as possible.

    The file is decoded as it is replayed (a second at a time, see :mod:`streamer.decode`),
    so memory stays bounded whatever its length. Real time is paced on samples delivered
    (block k is due at ``t0 + its end sample / rate``), like a microphone: a consumer that
    falls behind gets the overdue blocks at once. NaN/inf samples are replayed as silence
    and counted in ``nonfinite_samples`` (said once, at the end of the replay)."""

    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(
        self,
        path: str | Path,
        block_ms: int = DEFAULT_BLOCK_MS,
        speed: Literal["realtime", "max"] = "realtime",
        split_channels: bool = False,
        start_s: float | None = None,
        end_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if block_ms <= 0:
            raise AudioError(f"block_ms must be positive, got {block_ms}")
        if speed not in ("realtime", "max"):
            raise AudioError(f"speed must be 'realtime' or 'max', got {speed!r}")
        self.path = Path(path)
        self.block_ms, self.speed, self.split_channels = block_ms, speed, split_channels
        self.start_s, self.end_s = start_s, end_s
        self._clock, self._sleep = clock, sleep
        _check_path(self.path, start_s, end_s)
        probe = self._open()  # unreadable files fail here, before the session starts
        try:
            first = next(iter(probe), None)
        finally:
            probe.close()
        if first is None or not first.shape[1]:
            raise _no_samples(self.path, start_s)
        self._native_rate, self._native_channels = probe.rate, probe.channels
        self.channels = 1 if not split_channels else first.shape[0]
        frames = probe.frames
        self._frames = None if frames is None else -(-frames * SAMPLE_RATE_HZ // probe.rate)
        self.dropped_blocks = 0  # a file never drops audio; here for the AudioSource protocol
        self.nonfinite_samples = 0
        self._closed = threading.Event()

    def _open(self) -> AudioStream:
        return AudioStream(self.path, self.start_s, self.end_s)

    @property
    def duration_s(self) -> float | None:
        """Length at 16 kHz as the container states it (None when it does not say)."""
        return None if self._frames is None else self._frames / SAMPLE_RATE_HZ

    @property
    def description(self) -> str:
        length = "unknown length" if self.duration_s is None else f"{self.duration_s:.1f} s"
        return f"file {self.path.name} ({length}, {self.channels} ch, {self.speed})"

    def close(self) -> None:
        """Stop the iteration after the current block (safe from another thread)."""
        self._closed.set()

    def _samples(self, stream: AudioStream) -> Iterator[np.ndarray]:
        """16 kHz ``(n,)`` or ``(channels, n)`` pieces of any length, decoded and resampled as they come."""
        resampler = PolyphaseStream(stream.rate, SAMPLE_RATE_HZ, stream.channels)
        for chunk in stream:
            yield self._shape(resampler.push(chunk))
        yield self._shape(resampler.flush())

    def _shape(self, data: np.ndarray) -> np.ndarray:
        return data if self.split_channels else data.mean(axis=0)

    def _blocks(self, stream: AudioStream) -> Iterator[np.ndarray]:
        """The 16 kHz pieces re-cut into blocks of ``block_ms`` (the last one may be shorter)."""
        n = max(1, SAMPLE_RATE_HZ * self.block_ms // 1000)
        held: list[np.ndarray] = []
        count = 0
        for piece in self._samples(stream):
            if not piece.shape[-1]:
                continue
            held.append(piece)
            count += piece.shape[-1]
            if count >= n:
                joined = np.concatenate(held, axis=-1)
                full = count // n * n
                for start in range(0, full, n):
                    yield joined[..., start : start + n].copy()
                held, count = [joined[..., full:]], count - full
        if count:
            yield np.concatenate(held, axis=-1).copy()

    def __iter__(self) -> Iterator[np.ndarray]:
        self._closed.clear()
        stream = self._open()
        blocks = self._blocks(stream)
        t0 = None
        delivered = 0
        try:
            for block in blocks:
                if self._closed.is_set():
                    return
                if self.speed == "realtime":
                    if t0 is None:
                        t0 = self._clock()
                    wait = t0 + (delivered + block.shape[-1]) / SAMPLE_RATE_HZ - self._clock()
                    if wait > 0:
                        self._sleep(wait)
                delivered += block.shape[-1]
                yield block
        finally:
            blocks.close()
            stream.close()
            self.nonfinite_samples = stream.nonfinite
            stream.report_nonfinite()
