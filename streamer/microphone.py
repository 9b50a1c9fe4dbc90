"""Live input from a microphone (sounddevice/PortAudio), delivered as 16 kHz float32 blocks.

The stream callback runs on PortAudio's thread and only copies each block into a bounded
queue (dropping and counting blocks when the consumer falls behind, never blocking);
resampling to 16 kHz happens in the consumer. ``sounddevice`` is imported lazily, so a
machine without PortAudio can still replay files, and fails here with one sentence.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from streamer.audio import SAMPLE_RATE_HZ, AudioError, StreamResampler
from streamer.decode import silence_nonfinite
from streamer.options import DEFAULT_BLOCK_MS

#: The microphone's queue holds this much audio while the pipeline is busy, whatever the block length.
QUEUE_MS = 5000

logger = logging.getLogger(__name__)

# -- microphone ----------------------------------------------------------------------------------


def import_sounddevice() -> ModuleType:
    """sounddevice, imported only when a microphone is used (it needs the PortAudio C library)."""
    try:
        return importlib.import_module("sounddevice")
    except (ImportError, OSError) as exc:
        raise AudioError(
            f"cannot use a microphone because sounddevice/PortAudio did not load ({exc}); "
            "install PortAudio with `apt-get install libportaudio2` or replay a file instead"
        ) from exc


def _input_devices(sd: Any) -> list[tuple[int, dict]]:
    return [(i, dict(d)) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def list_devices(sounddevice: ModuleType | None = None) -> str:
    """The input devices, one a line (``*`` marks the default), for ``--list-devices``."""
    sd = sounddevice or import_sounddevice()
    inputs = _input_devices(sd)
    if not inputs:
        return "no audio input devices found"
    default = _default_input(sd)
    lines = []
    for index, dev in inputs:
        mark = "*" if index == default else " "
        rate = int(dev.get("default_samplerate") or 0)
        lines.append(f"{mark} {index:3d}  {dev['name']}  ({dev['max_input_channels']} in, {rate} Hz)")
    return "\n".join(lines)


def _default_input(sd: Any) -> int | None:
    try:
        index = sd.default.device[0]
    except (AttributeError, IndexError, TypeError):
        return None
    return int(index) if index is not None and int(index) >= 0 else None


def resolve_input_device(sd: Any, device: int | str | None) -> tuple[int, dict]:
    """A device index or (case-insensitive, unique) name part -> (index, device info)."""
    inputs = _input_devices(sd)
    if not inputs:
        raise AudioError("no audio input device found; plug in a microphone or replay a file instead")
    by_index = dict(inputs)
    if device is None:
        index = _default_input(sd)
        if index in by_index:
            return index, by_index[index]
        logger.info("no default input device; using %s", inputs[0][1]["name"])
        return inputs[0]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        index = int(device)
        if index not in by_index:
            raise AudioError(f"input device {index} does not exist or has no inputs; see --list-devices")
        return index, by_index[index]
    needle = device.strip().lower()
    matches = [(i, d) for i, d in inputs if needle in d["name"].lower()]
    exact = [(i, d) for i, d in matches if d["name"].lower() == needle]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise AudioError(f"no input device matches {device!r}; see --list-devices")
    names = ", ".join(f"{i}: {d['name']}" for i, d in matches)
    raise AudioError(f"input device {device!r} is ambiguous ({names}); give its index")


class MicrophoneSource:
    """Live input from a PortAudio device, delivered as 16 kHz float32 blocks.

    Iterating opens the stream; breaking out of the loop or ``close()`` ends it. If the device
    stops delivering (unplugged: the stream finishes or goes silent for ``timeout_s``), the
    blocks already captured are delivered first, then :class:`AudioError` is raised.

    ``device`` is an index or a unique part of a name (None: the system default);
    ``sample_rate_hz`` is the capture rate (None: 16 kHz if the device takes it, else its own
    default rate); ``sounddevice`` replaces the module (tests pass a fake)."""

    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(
        self,
        device: int | str | None = None,
        sample_rate_hz: int | None = None,
        block_ms: int = DEFAULT_BLOCK_MS,
        queue_blocks: int | None = None,
        channels: int = 1,
        timeout_s: float = 2.0,
        sounddevice: ModuleType | Any | None = None,
    ) -> None:
        if queue_blocks is None:  # 5 s of audio, whatever the block length
            queue_blocks = -(-QUEUE_MS // max(1, block_ms))
        if block_ms <= 0 or queue_blocks <= 0 or channels <= 0 or timeout_s <= 0:
            raise AudioError(
                f"block_ms, queue_blocks, channels and timeout_s must be positive, "
                f"got {block_ms}, {queue_blocks}, {channels}, {timeout_s}"
            )
        self._sd = sounddevice or import_sounddevice()
        self.device_index, info = resolve_input_device(self._sd, device)
        self.device_name = str(info["name"])
        if info["max_input_channels"] < channels:
            raise AudioError(
                f"input device {self.device_name!r} has {info['max_input_channels']} channels, {channels} asked for"
            )
        self.channels, self.block_ms, self.timeout_s = channels, block_ms, timeout_s
        self.native_rate_hz = self._choose_rate(sample_rate_hz, info)
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_blocks)
        self.dropped_blocks = 0  # blocks the consumer was too slow for (queue full)
        self.status_flags = 0  # callbacks that reported a PortAudio status (e.g. input overflow)
        self.nonfinite_samples = 0  # NaN/inf samples replaced by silence
        self._stop = threading.Event()
        self._finished = threading.Event()

    @property
    def description(self) -> str:
        return f"microphone {self.device_index}: {self.device_name} ({self.native_rate_hz} Hz, {self.channels} ch)"

    def _choose_rate(self, requested: int | None, info: dict) -> int:
        rates = [requested] if requested else [SAMPLE_RATE_HZ, int(info.get("default_samplerate") or 0)]
        for rate in rates:
            if rate <= 0:
                continue
            try:
                self._sd.check_input_settings(
                    device=self.device_index, channels=self.channels, dtype="float32", samplerate=rate
                )
                return rate
            except Exception as exc:  # sounddevice raises PortAudioError or ValueError here
                logger.debug("input device %s rejects %d Hz: %s", self.device_name, rate, exc)
        if requested:
            raise AudioError(
                f"input device {self.device_name!r} does not support {requested} Hz; "
                "leave the rate unset to use its own"
            )
        raise AudioError(f"input device {self.device_name!r} supports neither 16 kHz nor its default rate")

    def close(self) -> None:
        """End the iteration within a poll interval (safe from another thread)."""
        self._stop.set()

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's real-time thread: copy and hand over, never block, never log.
        if status:
            self.status_flags += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.dropped_blocks += 1

    def __iter__(self) -> Iterator[np.ndarray]:
        self._stop.clear()
        self._finished.clear()
        while not self._queue.empty():  # blocks left over from an earlier, abandoned iteration
            self._queue.get_nowait()
        resampler = None
        if self.native_rate_hz != SAMPLE_RATE_HZ:
            resampler = StreamResampler(self.native_rate_hz, SAMPLE_RATE_HZ, self.channels)
        try:
            stream = self._sd.InputStream(
                device=self.device_index,
                samplerate=self.native_rate_hz,
                channels=self.channels,
                dtype="float32",
                blocksize=max(1, self.native_rate_hz * self.block_ms // 1000),
                callback=self._callback,
                finished_callback=self._finished.set,
            )
            stream.start()
        except Exception as exc:  # PortAudioError, or OSError/ValueError from a vanished device
            raise AudioError(f"cannot open input device {self.device_name!r} ({exc}); see --list-devices") from exc
        logger.info("capturing from %s", self.description)
        failure = None
        try:
            last = time.monotonic()
            while not self._stop.is_set():
                try:
                    block = self._queue.get(timeout=min(0.05, self.timeout_s))
                except queue.Empty:
                    failure = self._check_alive(stream, time.monotonic() - last)
                    if failure:
                        break
                    continue
                last = time.monotonic()
                out = self._convert(block, resampler)
                if out.shape[-1]:
                    yield out
            # Stopped or failed: what was captured is still delivered.
            while not self._queue.empty():
                out = self._convert(self._queue.get_nowait(), resampler)
                if out.shape[-1]:
                    yield out
            if resampler is not None:
                tail = resampler.flush()
                if tail.shape[-1]:
                    yield tail[0] if self.channels == 1 else tail
        finally:
            try:
                stream.close()
            except Exception as exc:  # a vanished device may fail to close; nothing left to save
                logger.debug("closing %s failed: %s", self.device_name, exc)
        if failure:
            raise AudioError(failure)

    def _check_alive(self, stream: Any, silent_s: float) -> str | None:
        name = self.device_name
        if self._finished.is_set() and not self._stop.is_set():
            return f"input device {name!r} stopped delivering audio (disconnected?); reconnect it and restart"
        try:
            active = stream.active
        except Exception as exc:
            return f"input device {name!r} failed ({exc}); reconnect it and restart"
        if not active and not self._stop.is_set():
            return f"input device {name!r} stopped delivering audio (disconnected?); reconnect it and restart"
        if silent_s > self.timeout_s:
            return f"input device {name!r} delivered no audio for {silent_s:.1f} s (disconnected?); check it"
        return None

    def _convert(self, block: np.ndarray, resampler: StreamResampler | None) -> np.ndarray:
        data = np.ascontiguousarray(block.T, dtype=np.float32)  # (frames, channels) -> (channels, n)
        data, bad = silence_nonfinite(data)  # a broken driver's NaN must not end the session
        if bad and not self.nonfinite_samples:
            logger.warning(
                "input device %r delivered non-finite samples; they are treated as silence", self.device_name
            )
        self.nonfinite_samples += bad
        if resampler is not None:
            data = resampler.push(data)
        return data[0] if self.channels == 1 else data
