"""Streaming decode: an audio file as a sequence of short native-rate chunks, never the whole file.

Replaying an hour of 48 kHz stereo used to decode the whole file up front (about 3 GB at
peak); :class:`AudioStream` reads a second at a time instead, and
:class:`PolyphaseStream` resamples chunk by chunk with the same filter
``scipy.signal.resample_poly`` applies to a whole file, so memory stays bounded whatever
the length and the samples match a whole-file decode.

Non-finite samples (NaN, inf: a broken encoder or a float file written by a buggy tool)
are replaced by silence here and counted, so one bad sample never stops an analysis.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

logger = logging.getLogger(__name__)

#: Containers libsndfile reads itself; the rest (mp3 included: ffmpeg handles its encoder delay) go to PyAV.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".w64", ".rf64", ".caf"})
_UNKNOWN_LENGTH = 2**62  # libsndfile's frame count for a stream whose header was never finalised
CHUNK_S = 1.0  # seconds of native-rate audio read at a time


class AudioError(ValueError):
    """An audio input or output problem, stated in one sentence with the fix."""


def silence_nonfinite(chunk: np.ndarray) -> tuple[np.ndarray, int]:
    """``chunk`` with NaN/inf samples set to 0 (in place when writable), and how many there were."""
    bad = ~np.isfinite(chunk)
    count = int(bad.sum())
    if count:
        if not chunk.flags.writeable:
            chunk = chunk.copy()
        chunk[bad] = 0.0
    return chunk, count


def _bounds(rate: int, start_s: float | None, end_s: float | None) -> tuple[int, int | None]:
    start = round((start_s or 0.0) * rate)
    return start, None if end_s is None else round(end_s * rate)


def _within(data: np.ndarray, seen: int, start: int, stop: int | None) -> np.ndarray:
    """The part of ``data`` (its first sample is sample ``seen`` of the file) inside ``[start, stop)``."""
    n = data.shape[1]
    a, b = max(start - seen, 0), n if stop is None else max(0, min(stop - seen, n))
    return data[:, a:b] if b > a else data[:, :0]


class AudioStream:
    """One decoding pass over ``path`` (or its ``[start_s, end_s)`` part) at the file's own rate.

    Opening probes the file (so an unreadable file fails here, in one sentence); iterating
    yields float32 ``(channels, n)`` chunks of about :data:`CHUNK_S` and closes the file at
    the end. ``rate``, ``channels`` and ``frames`` (None when the container does not say)
    are known before the first chunk. ``nonfinite`` counts the samples set to silence.
    """

    def __init__(self, path: str | Path, start_s: float | None = None, end_s: float | None = None) -> None:
        self.path = Path(path)
        self.start_s, self.end_s = start_s, end_s
        self.nonfinite = 0
        self.damaged: str | None = None  # why decoding stopped early (a damaged tail), if it did
        self._chunks: Iterator[np.ndarray] | None = None
        if self.path.suffix.lower() in SOUNDFILE_SUFFIXES:
            try:
                self._open_soundfile()
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                logger.debug("soundfile could not read %s (%s); trying PyAV", self.path, exc)
        if self._chunks is None:
            self._open_av()

    # -- soundfile (libsndfile) -----------------------------------------------------------------

    def _open_soundfile(self) -> None:
        f = sf.SoundFile(self.path)
        if f.frames >= _UNKNOWN_LENGTH:
            f.close()
            raise ValueError("length unknown (the file was never closed)")
        self.rate, self.channels = f.samplerate, f.channels
        start, stop = _bounds(f.samplerate, self.start_s, self.end_s)
        stop = f.frames if stop is None else min(stop, f.frames)
        self.frames = max(0, stop - start)
        self._chunks = self._soundfile_chunks(f, start, stop)

    def _soundfile_chunks(self, f: sf.SoundFile, start: int, stop: int) -> Iterator[np.ndarray]:
        step = max(1, round(self.rate * CHUNK_S))
        with f:
            if start >= stop:
                return
            f.seek(start)
            left = stop - start
            while left > 0:
                try:
                    data = f.read(min(step, left), dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    self._damaged(exc, stop - start - left)
                    return
                if not len(data):
                    return
                left -= len(data)
                yield np.ascontiguousarray(data.T)

    def _damaged(self, exc: BaseException, good: int) -> None:
        """A file cut short (crash, full disk) ends in a damaged frame: keep what came before it."""
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())
        if good == 0:
            raise AudioError(f"cannot decode the audio of {self.path} ({reason}); the file looks corrupt") from exc
        self.damaged = reason
        logger.warning(
            "%s is damaged after %.1f s (%s); using the audio before that", self.path, good / self.rate, reason
        )

    # -- PyAV (ffmpeg) ---------------------------------------------------------------------------

    def _open_av(self) -> None:
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise AudioError(f"cannot decode {self.path} ({reason}); is it an audio or video file?") from exc
        if not container.streams.audio:
            container.close()
            raise AudioError(f"{self.path} has no audio track; give a file with sound")
        stream = container.streams.audio[0]
        self.rate = stream.rate or 0
        self.channels = stream.channels or 1
        self.frames = None
        if stream.duration is not None and stream.time_base is not None and self.rate:
            start, stop = _bounds(self.rate, self.start_s, self.end_s)
            total = round(float(stream.duration * stream.time_base) * self.rate)
            self.frames = max(0, (total if stop is None else min(stop, total)) - start)
        self._chunks = self._av_chunks(container, stream)

    def _av_chunks(self, container, stream) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp")  # planar float, same layout and rate
        pending: list[np.ndarray] = []
        held = 0
        seen = 0
        start = stop = None
        with container:
            try:
                frames = container.decode(stream)
                for frame in frames:
                    for out in resampler.resample(frame):
                        if start is None:
                            self.rate = out.sample_rate
                            start, stop = _bounds(self.rate, self.start_s, self.end_s)
                        part = _within(out.to_ndarray(), seen, start, stop)
                        seen += out.samples
                        if part.shape[1]:
                            pending.append(part)
                            held += part.shape[1]
                    if stop is not None and seen >= stop:
                        break
                    if held >= self.rate * CHUNK_S:
                        yield np.ascontiguousarray(np.concatenate(pending, axis=1), dtype=np.float32)
                        pending, held = [], 0
                else:
                    for out in resampler.resample(None):
                        part = _within(out.to_ndarray(), seen, start or 0, stop)
                        seen += out.samples
                        if part.shape[1]:
                            pending.append(part)
            except av.FFmpegError as exc:
                self._damaged(exc, seen)
            if pending:
                yield np.ascontiguousarray(np.concatenate(pending, axis=1), dtype=np.float32)

    # -- iteration -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._chunks is None:
            raise AudioError(f"the decoding pass over {self.path} was already used; open the file again")
        chunks, self._chunks = self._chunks, None
        try:
            for chunk in chunks:
                chunk, bad = silence_nonfinite(chunk)
                self.nonfinite += bad
                yield chunk
        finally:
            chunks.close()  # type: ignore[attr-defined]  - releases the file at once

    def close(self) -> None:
        """Release the file when the pass is abandoned early."""
        if self._chunks is not None:
            self._chunks.close()  # type: ignore[attr-defined]
            self._chunks = None

    def report_nonfinite(self) -> None:
        """Say once, at the end of a pass, how many samples were not numbers."""
        if self.nonfinite:
            logger.warning(
                "%s holds %d non-finite samples (NaN or infinity); they were treated as silence",
                self.path,
                self.nonfinite,
            )


class PolyphaseStream:
    """``resample_poly`` applied chunk by chunk, with the same result as on the whole signal.

    Each chunk is resampled with ``pad`` input samples of context on both sides (at least
    the filter's half length, a multiple of ``down`` so outputs stay on the global grid),
    and only the centre is kept; the signal's ends see zeros, as a whole-signal call does.
    """

    def __init__(self, from_hz: int, to_hz: int, channels: int) -> None:
        if from_hz <= 0 or to_hz <= 0:
            raise AudioError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
        g = math.gcd(int(from_hz), int(to_hz))
        self.up, self.down = to_hz // g, from_hz // g
        half = 10 * max(self.up, self.down)  # resample_poly's default half filter length (upsampled samples)
        self.pad = self.down * math.ceil((math.ceil(half / self.up) + 1) / self.down)
        self.step = self.down * max(1, math.ceil(from_hz * CHUNK_S / self.down))
        self._buf = np.zeros((channels, self.pad), np.float32)
        self._seen = self._given = 0

    def _run(self, window: np.ndarray, n_out: int) -> np.ndarray:
        if self.up == self.down == 1:
            return window[:, self.pad : self.pad + n_out]
        y = resample_poly(window, self.up, self.down, axis=-1)
        first = self.pad * self.up // self.down
        return y[:, first : first + n_out].astype(np.float32, copy=False)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """(channels, n) at the input rate -> (channels, m) at the output rate (m may be 0)."""
        self._buf = np.concatenate([self._buf, chunk.astype(np.float32, copy=False)], axis=1)
        self._seen += chunk.shape[1]
        outs = []
        pos = self.pad
        while self._buf.shape[1] - pos >= self.step + self.pad:
            n_out = self.step * self.up // self.down
            outs.append(self._run(self._buf[:, pos - self.pad : pos + self.step + self.pad], n_out))
            self._given += n_out
            pos += self.step
        self._buf = self._buf[:, pos - self.pad :]
        return np.concatenate(outs, axis=1) if outs else np.zeros((self._buf.shape[0], 0), np.float32)

    def flush(self) -> np.ndarray:
        """The rest: the output a whole-signal call gives, ``ceil(n * up / down)`` samples in all."""
        total = -(-self._seen * self.up // self.down)
        window = np.concatenate([self._buf, np.zeros((self._buf.shape[0], self.pad), np.float32)], axis=1)
        out = self._run(window, max(0, total - self._given))
        self._given = total
        self._buf = self._buf[:, :0]
        return out
