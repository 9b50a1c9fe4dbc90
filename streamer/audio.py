"""Where the live tracker's audio comes from: files, the microphone, and the session recording.

Everything leaves here as float32 at 16 kHz (the segmenter's and Whisper's rate): mono
``(n,)``, or ``(channels, n)`` when channels are kept apart (one speaker per channel).

* :func:`load_audio` decodes a whole file: wav/flac/ogg through soundfile (libsndfile), and
  mp3/m4a/mp4/anything else with an audio track through PyAV (ffmpeg), then resamples with a
  polyphase filter (``scipy.signal.resample_poly``).
* :class:`FileSource` replays a file block by block, in real time (paced on samples delivered,
  with an injectable clock so tests don't wait) or as fast as possible.
* :class:`MicrophoneSource` captures from a sounddevice/PortAudio input. Its callback runs on
  PortAudio's thread and only copies the block into a bounded queue (dropping and counting
  blocks when the consumer falls behind, never blocking); resampling happens in the consumer.
* :class:`Recorder` writes the session to FLAC as it arrives, so a crash loses at most the
  last FLAC frame (about a quarter of a second).
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
import soundfile as sf
from scipy.signal import resample_poly

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
#: Containers libsndfile reads itself; the rest (mp3 included: ffmpeg handles its encoder delay) go to PyAV.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".w64", ".rf64", ".caf"})
_UNKNOWN_LENGTH = 2**62  # libsndfile's frame count for a stream whose header was never finalised


class AudioError(ValueError):
    """An audio input or output problem, stated in one sentence with the fix."""


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


def load_audio(
    path: str | Path,
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    start_s: float | None = None,
    end_s: float | None = None,
    mono: bool = True,
) -> np.ndarray:
    """Decode ``path`` (or its ``[start_s, end_s)`` part) -> float32 ``(n,)``, or ``(channels, n)`` if not mono."""
    path = Path(path)
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
    data: np.ndarray | None = None
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            data, rate = _read_soundfile(path, start_s, end_s)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            logger.debug("soundfile could not read %s (%s); trying PyAV", path, exc)
    if data is None:
        data, rate = _read_av(path, start_s, end_s)
    if data.shape[1] == 0:
        where = "" if start_s is None else f" after {start_s} s"
        raise AudioError(f"{path} contains no decodable audio samples{where}; check the file (or start_s)")
    data = resample(data, rate, sample_rate_hz)
    return data.mean(axis=0) if mono else data


def _bounds(rate: int, start_s: float | None, end_s: float | None) -> tuple[int, int | None]:
    start = round((start_s or 0.0) * rate)
    return start, None if end_s is None else round(end_s * rate)


def _read_soundfile(path: Path, start_s: float | None, end_s: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(path) as f:
        if f.frames >= _UNKNOWN_LENGTH:
            raise ValueError("length unknown (the file was never closed)")
        start, stop = _bounds(f.samplerate, start_s, end_s)
        stop = f.frames if stop is None else min(stop, f.frames)
        if start >= stop:
            return np.zeros((f.channels, 0), dtype=np.float32), f.samplerate
        f.seek(start)
        data = f.read(stop - start, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), f.samplerate


def _read_av(path: Path, start_s: float | None, end_s: float | None) -> tuple[np.ndarray, int]:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise AudioError(f"cannot decode {path} ({reason}); is it an audio or video file?") from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio track; give a file with sound")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # planar float, same layout and rate
        chunks: list[np.ndarray] = []
        rate = stream.rate or 0
        start = stop = None
        seen = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    rate = out.sample_rate
                    if start is None:
                        start, stop = _bounds(rate, start_s, end_s)
                    chunks.append(out.to_ndarray())
                    seen += out.samples
                if stop is not None and seen >= stop:
                    break
            else:
                chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.FFmpegError as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise AudioError(f"cannot decode the audio of {path} ({reason}); the file looks corrupt") from exc
        if not chunks:
            return np.zeros((stream.channels or 1, 0), dtype=np.float32), rate or SAMPLE_RATE_HZ
        data = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
        return np.ascontiguousarray(data[:, start:stop]), rate


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
    """Replays a decoded file in blocks of ``block_ms``, in real time or as fast as possible.

    Real time is paced on samples delivered (block k is due at ``t0 + its end sample / rate``),
    like a microphone: a consumer that falls behind gets the overdue blocks at once."""

    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(
        self,
        path: str | Path,
        block_ms: int = 100,
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
        self._clock, self._sleep = clock, sleep
        self.audio = load_audio(self.path, SAMPLE_RATE_HZ, start_s, end_s, mono=not split_channels)
        self.channels = 1 if self.audio.ndim == 1 else self.audio.shape[0]
        self.dropped_blocks = 0  # a file never drops audio; here for the AudioSource protocol
        self._closed = threading.Event()

    @property
    def duration_s(self) -> float:
        return self.audio.shape[-1] / SAMPLE_RATE_HZ

    @property
    def description(self) -> str:
        return f"file {self.path.name} ({self.duration_s:.1f} s, {self.channels} ch, {self.speed})"

    def close(self) -> None:
        """Stop the iteration after the current block (safe from another thread)."""
        self._closed.set()

    def __iter__(self) -> Iterator[np.ndarray]:
        self._closed.clear()
        n = max(1, SAMPLE_RATE_HZ * self.block_ms // 1000)
        total = self.audio.shape[-1]
        t0 = None
        for start in range(0, total, n):
            if self._closed.is_set():
                return
            end = min(start + n, total)
            if self.speed == "realtime":
                if t0 is None:
                    t0 = self._clock()
                wait = t0 + end / SAMPLE_RATE_HZ - self._clock()
                if wait > 0:
                    self._sleep(wait)
            yield self.audio[..., start:end].copy()


# -- recording ------------------------------------------------------------------------------------


class Recorder:
    """Writes the session audio to FLAC block by block, flushing each, so a crash loses little."""

    def __init__(self, path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".flac":
            raise AudioError(f"Recorder writes FLAC; give a path ending in .flac, not {self.path.name}")
        if not self.path.parent.is_dir():
            raise AudioError(f"cannot record to {self.path}: folder {self.path.parent} does not exist")
        self.sample_rate_hz = sample_rate_hz
        self.samples_written = 0
        self._file: sf.SoundFile | None = None
        self._channels = 0

    def write(self, block: np.ndarray) -> None:
        """A block of float32 ``(n,)`` or ``(channels, n)``; the first block fixes the channel count."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim not in (1, 2):
            raise AudioError(f"Recorder.write takes (n,) or (channels, n) blocks, got shape {block.shape}")
        frames = block[:, None] if block.ndim == 1 else block.T
        if self._file is None:
            self._channels = frames.shape[1]
            try:
                self._file = sf.SoundFile(
                    self.path, "w", samplerate=self.sample_rate_hz, channels=self._channels, format="FLAC"
                )
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                raise AudioError(f"cannot record to {self.path} ({exc}); check the folder is writable") from exc
        elif frames.shape[1] != self._channels:
            raise AudioError(f"Recorder got a {frames.shape[1]}-channel block after {self._channels}-channel ones")
        self._file.write(np.clip(frames, -1.0, 1.0))
        self._file.flush()
        self.samples_written += frames.shape[0]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
