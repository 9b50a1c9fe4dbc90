"""The session recording: captured audio written to FLAC as it arrives.

Each block is flushed at once, so a crash loses at most the last FLAC frame. When writing
fails mid-session (full disk, file size limit, removed drive) the recorder does not take
the session down with it: it cuts the file back to the last block that was written whole,
marks its length as unknown in the header (valid FLAC: decoders then read to the end),
and raises one :class:`~streamer.decode.AudioError` sentence; the caller reports it and
goes on without recording.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from streamer.decode import AudioError

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000
_STREAMINFO_SAMPLES = 18  # offset of the 8 bytes ending with the 36-bit total sample count
_STREAMINFO_MD5 = 26  # offset of the 16-byte MD5 of the audio (all zero: not computed)


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
        self.failed: str | None = None  # the one-sentence reason recording stopped, if it did
        self._file: sf.SoundFile | None = None
        self._channels = 0
        self._good_bytes = 0  # file size after the last block written whole

    def write(self, block: np.ndarray) -> None:
        """A block of float32 ``(n,)`` or ``(channels, n)``; the first block fixes the channel count."""
        if self.failed is not None:
            return  # already reported once; the session goes on unrecorded
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
        try:
            self._file.write(np.clip(np.nan_to_num(frames), -1.0, 1.0))
            self._file.flush()
            self._good_bytes = self.path.stat().st_size
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            self._give_up(exc)
        self.samples_written += frames.shape[0]

    def _give_up(self, exc: BaseException) -> None:
        """Close what can be closed, cut the file back to whole frames, and say so once."""
        reason = _reason(exc, self.path)
        try:
            if self._file is not None:
                self._file.close()
        except (sf.LibsndfileError, RuntimeError, OSError) as close_exc:
            logger.debug("closing %s after a write failure failed too: %s", self.path, close_exc)
        self._file = None
        kept = self.samples_written / self.sample_rate_hz
        try:
            _cut_to_whole_frames(self.path, self._good_bytes)
        except OSError as fix_exc:
            logger.warning("could not repair %s after the write failure: %s", self.path, fix_exc)
        self.failed = (
            f"stopped recording to {self.path} after {kept:.1f} s ({reason}); the audio recorded until then is "
            "kept as a valid FLAC file, free some space or record elsewhere next time"
        )
        raise AudioError(self.failed) from exc

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                self._file = None
                self._give_up(exc)
            self._file = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException, path: Path) -> str:
    """libsndfile says only "System error." for a full disk: name the likely cause where we can."""
    err = getattr(exc, "errno", None)
    if isinstance(err, int) and err > 0:
        return os.strerror(err)
    try:
        if shutil.disk_usage(path.parent).free < 1 << 20:
            return "no space left on the disk"
    except OSError:
        pass
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def _cut_to_whole_frames(path: Path, good_bytes: int) -> None:
    """Truncate ``path`` to ``good_bytes`` (a frame boundary) and mark its length unknown.

    FLAC's STREAMINFO allows 0 total samples ("unknown") and an all-zero MD5 ("not
    computed"); a length written by a close that could not write the last frame would lie."""
    if good_bytes <= 0 or not path.is_file():
        return
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size > good_bytes:
            f.truncate(good_bytes)
        head = f.read(4)
        if head != b"fLaC" or good_bytes < _STREAMINFO_MD5 + 16:
            return
        f.seek(_STREAMINFO_SAMPLES)
        packed = int.from_bytes(f.read(8), "big") & ~((1 << 36) - 1)
        f.seek(_STREAMINFO_SAMPLES)
        f.write(packed.to_bytes(8, "big"))
        f.write(bytes(16))
