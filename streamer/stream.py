"""Audio pushed from elsewhere (WebRTC, telephony, a notebook) -> utterance events.

:class:`EmotionStream` is the push interface of :class:`streamer.api.EmotionTracker`:
``push(samples, sample_rate) -> list[UtteranceEvent]``, ``flush()``, ``reset()``. It is a
plain object (no threads, I/O or clocks), like the segmenter it drives, so a caller can
feed it from any loop, callback or coroutine, and the same audio gives the same events
whatever the chunk sizes: the segmenter decides on whole VAD frames and the resampler
(:class:`streamer.decode.PolyphaseStream`) gives the same samples as on the whole signal.

Work happens in the caller's thread: ``push`` returns once the utterances it completed
are transcribed and classified (a few hundred ms each on a CPU), which is what a caller
without its own scheduling wants. The CLI, which must keep reading a microphone while
Whisper runs, uses :class:`streamer.pipeline.LivePipeline` over the same processor instead.
"""

from __future__ import annotations

import logging

import numpy as np

from streamer.decode import PolyphaseStream, silence_nonfinite
from streamer.events import UtteranceEvent
from streamer.pipeline import SPEAKER_NAMES, UtteranceProcessor
from streamer.segmenter import Segmenter, SegmenterConfig

log = logging.getLogger(__name__)

#: The rate every stage after the resampler works at (webrtcvad, Whisper, openSMILE).
SAMPLE_RATE_HZ = 16000
#: Integer sample formats and the value of full scale.
_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def as_channels(samples: object, split_channels: bool) -> np.ndarray:
    """Any supported array -> float32 ``(channels, n)`` in [-1, 1] (one channel unless split).

    1-D arrays are mono; 2-D arrays are ``(samples, channels)``, the layout soundfile,
    sounddevice and most telephony/WebRTC frames use. A 2-D array with more than 8
    columns is almost surely channels-first, and guessing would silently cut speech
    into 1-sample "channels": it is refused with the fix instead.
    """
    data = np.asarray(samples)
    if data.dtype in _FULL_SCALE:
        data = data.astype(np.float32) / _FULL_SCALE[data.dtype]
    elif np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32, copy=False)
    else:
        raise ValueError(f"samples must be float (in [-1, 1]) or int16/int32 PCM, got dtype {data.dtype}")
    if data.ndim == 1:
        data = data[None, :]
    elif data.ndim == 2:
        if data.shape[1] > len(SPEAKER_NAMES):
            raise ValueError(
                f"samples of shape {data.shape} would have {data.shape[1]} channels; 2-D samples are "
                "(samples, channels): pass samples.T if yours are channels-first"
            )
        data = data.T
    else:
        raise ValueError(f"samples must be 1-D (mono) or 2-D (samples, channels), got shape {data.shape}")
    if not split_channels and data.shape[0] > 1:
        data = data.mean(axis=0, keepdims=True)
    data, bad = silence_nonfinite(np.ascontiguousarray(data))
    if bad:
        log.warning("%d non-finite samples (NaN or infinity) were treated as silence", bad)
    return data


def check_rate(sample_rate: object) -> int:
    """A sample rate as a positive int, or one sentence saying what was given."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz (e.g. 48000), got {sample_rate!r}")
    return int(sample_rate)


class EmotionStream:
    """One conversation fed by ``push``: resampler -> one segmenter per channel -> processor.

    ``split_channels=False`` (the default) downmixes whatever channel count arrives to
    one speaker; ``True`` makes each channel its own speaker (A, B, ...: a stereo call
    recording with one party per channel). Sample rate and channel count may be anything,
    but stay fixed within a conversation, because the resampler's filter and each
    channel's segmenter carry state from one push to the next; ``reset()`` starts a new one.
    """

    def __init__(
        self, processor: UtteranceProcessor, segmenter: SegmenterConfig | None = None, split_channels: bool = False
    ) -> None:
        self.processor = processor
        self.segmenter_config = segmenter or SegmenterConfig()
        if self.segmenter_config.sample_rate_hz != SAMPLE_RATE_HZ:
            raise ValueError(
                f"segmenter.sample_rate_hz must be {SAMPLE_RATE_HZ}: ser-live resamples every input to 16 kHz, "
                f"got {self.segmenter_config.sample_rate_hz}"
            )
        self.split_channels = split_channels
        self.reset()

    def reset(self) -> None:
        """Forget everything: audio in progress, the dialogue context, the clock, rate and channels."""
        self.processor.reset()
        self._segmenters: list[Segmenter] = []
        self._rate: int | None = None
        self._resampler: PolyphaseStream | None = None

    @property
    def time_s(self) -> float:
        """Seconds of audio consumed so far (the clock the events' times are on)."""
        return self._segmenters[0].samples_seen / SAMPLE_RATE_HZ if self._segmenters else 0.0

    def push(self, samples: object, sample_rate: int) -> list[UtteranceEvent]:
        """Feed audio; returns the events of the utterances it completed (often none).

        ``samples``: float in [-1, 1] or int16/int32 PCM; 1-D mono or 2-D (samples, channels).
        """
        rate = check_rate(sample_rate)
        data = as_channels(samples, self.split_channels)
        if self._rate is not None and rate != self._rate:
            raise ValueError(
                f"sample_rate changed from {self._rate} to {rate} Hz within one conversation; call reset() first"
            )
        if self._segmenters and data.shape[0] != len(self._segmenters):
            raise ValueError(
                f"the channel count changed from {len(self._segmenters)} to {data.shape[0]} within one "
                "conversation; call reset() first"
            )
        if not self._segmenters:
            self._start(rate, data.shape[0])
        if self._resampler is not None:
            data = self._resampler.push(data)
        return self.push_16k(data)

    def push_16k(self, block: np.ndarray) -> list[UtteranceEvent]:
        """Feed float32 16 kHz audio as the sources deliver it: ``(n,)``, or ``(channels, n)`` when split."""
        blocks = block if block.ndim == 2 else block[None, :]
        if not self._segmenters:
            self._start(SAMPLE_RATE_HZ, blocks.shape[0])
        if len(self._segmenters) == 1 and blocks.shape[0] > 1:
            blocks = blocks.mean(axis=0, keepdims=True)
        events: list[UtteranceEvent] = []
        for seg, samples in zip(self._segmenters, blocks):
            events.extend(self.processor(utt) for utt in seg.push(samples))
        return events

    def flush(self) -> list[UtteranceEvent]:
        """End of input: the utterance in progress (if long enough) becomes an event.

        The clock and the dialogue context carry on: audio pushed afterwards (after a
        pause, a reconnect) continues the same conversation; ``reset()`` starts a new one."""
        events: list[UtteranceEvent] = []
        if self._resampler is not None:
            events.extend(self.push_16k(self._resampler.flush()))
            self._resampler = PolyphaseStream(self._rate, SAMPLE_RATE_HZ, len(self._segmenters))
        for seg in self._segmenters:
            events.extend(self.processor(utt) for utt in seg.flush())
        return events

    def _start(self, rate: int, channels: int) -> None:
        if channels > 1:
            self._segmenters = [Segmenter(self.segmenter_config, c, SPEAKER_NAMES[c]) for c in range(channels)]
        else:
            self._segmenters = [Segmenter(self.segmenter_config)]
        self._rate = rate
        self._resampler = PolyphaseStream(rate, SAMPLE_RATE_HZ, channels) if rate != SAMPLE_RATE_HZ else None
