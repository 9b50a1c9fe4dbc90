"""ser-live from Python: :class:`EmotionTracker`, in the style of faster-whisper's ``WhisperModel``.

Build it once (it loads the checkpoint, Whisper and the text encoder: seconds), then

* ``tracker.track("call.flac")`` or ``tracker.track(array, sample_rate)``: an iterator of
  :class:`~streamer.events.UtteranceEvent`, each conversation with a fresh dialogue context;
* ``tracker.push(samples, sample_rate)`` / ``flush()`` / ``reset()``: audio that arrives from
  elsewhere (WebRTC, telephony, a notebook), any rate and channel count, float or int16;
  ``tracker.stream()`` gives further independent conversations sharing the loaded models.

The events are the objects the ``ser-live`` command prints and writes to JSONL: the
command builds its pipeline through this class, so both give the same events for the
same audio (tests/test_api.py checks it on a demo recording).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamer.events import UtteranceEvent
from streamer.options import (
    BUNDLED_MODEL,
    TEXT_RUNTIMES,
    check_asr_threads,
    check_model_options,
    check_uncertain_below,
)
from streamer.pipeline import LivePipeline, PipelineConfig, UtteranceProcessor
from streamer.segmenter import SegmenterConfig
from streamer.speakers import SpeakerConfig, SpeakerStage, load_embedder
from streamer.stream import SAMPLE_RATE_HZ, EmotionStream, as_channels, check_rate

log = logging.getLogger(__name__)

#: How :meth:`EmotionTracker.track` cuts an array: small enough that events come out as
#: the conversation goes, large enough that the per-call overhead does not matter.
_ARRAY_BLOCK_S = 1.0


class EmotionTracker:
    """The loaded models of a ser-live session, and the ways to feed them audio.

    ``model``: a checkpoint written by ``python -m training train`` (default: the bundled
    HBAF). ``asr_model``: ``tiny.en`` or a local faster-whisper folder (never downloaded).
    ``device``: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
    ``segmenter``: VAD settings; ``pipeline``: the live pipeline's settings (used by
    :meth:`live_pipeline`). ``split_channels``: each channel of the input is one speaker.
    ``speakers``: how mono audio is split into speakers (default ``SpeakerConfig()``: up to 8,
    found as they come; see :mod:`streamer.speakers`). ``text_runtime``: ``auto`` (ONNX Runtime
    on the CPU, the same vectors as torch about twice as fast), ``onnx`` or ``torch``.
    ``uncertain_below``: events whose confidence is below it are labelled ``"uncertain"``, the
    model's answer kept as their ``guess`` (0, the default: always the model's answer).
    ``asr_threads``: Whisper's CPU threads (default: half the cores, at most 4; 0: CTranslate2's own);
    torch's threads follow it (the two share one OpenMP runtime).
    Any bad option or file raises one-sentence :class:`ValueError` (checkpoint and audio
    errors are ValueErrors too).
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        asr_model: str = "tiny.en",
        device: str = "auto",
        compute_type: str = "auto",
        language: str | None = None,
        text_encoder: str | None = None,
        text_runtime: str = "auto",
        segmenter: SegmenterConfig | None = None,
        pipeline: PipelineConfig | None = None,
        split_channels: bool = False,
        speakers: SpeakerConfig | None = None,
        uncertain_below: float = 0.0,
        asr_threads: int | None = None,
    ) -> None:
        import models
        from streamer.asr import EncodePolicy, Transcriber
        from streamer.features import FeatureExtractor

        if segmenter is not None and not isinstance(segmenter, SegmenterConfig):
            raise ValueError(f"segmenter must be a SegmenterConfig, got {type(segmenter).__name__}")
        if pipeline is not None and not isinstance(pipeline, PipelineConfig):
            raise ValueError(f"pipeline must be a PipelineConfig, got {type(pipeline).__name__}")
        self.segmenter = segmenter or SegmenterConfig()
        if self.segmenter.sample_rate_hz != SAMPLE_RATE_HZ:
            raise ValueError(
                f"segmenter.sample_rate_hz must be {SAMPLE_RATE_HZ}: ser-live resamples every input to 16 kHz"
            )
        self.pipeline_config = pipeline or PipelineConfig()
        self.split_channels = bool(split_channels)
        if speakers is not None and not isinstance(speakers, SpeakerConfig):
            raise ValueError(f"speakers must be a SpeakerConfig, got {type(speakers).__name__}")
        self.speakers = speakers or SpeakerConfig()
        self.uncertain_below = check_uncertain_below(uncertain_below)
        asr_threads = check_asr_threads(asr_threads)
        check_model_options(asr_model, device, compute_type)
        if text_runtime not in TEXT_RUNTIMES:
            raise ValueError(f"text_runtime must be one of {', '.join(TEXT_RUNTIMES)}, got {text_runtime!r}")
        #: The voice encoder behind mono speaker tracking (None: its weights are not installed).
        self.voice_embedder = load_embedder(explicit=speakers is not None)
        if model is None and not BUNDLED_MODEL.is_file():
            raise ValueError("this installation has no bundled model; pass a checkpoint (--model, or model= in Python)")
        model_path = Path(model) if model is not None else BUNDLED_MODEL
        self.checkpoint = models.load(model_path, device=device)
        features = self.checkpoint.pipeline
        if text_encoder and features.text is not None:
            features = dataclasses.replace(features, text=dataclasses.replace(features.text, encoder=text_encoder))
            self.checkpoint = dataclasses.replace(self.checkpoint, pipeline=features)
        policy = None
        if features.whisper is not None:  # transcribe under the checkpoint's encode policy: one encoder pass
            policy = EncodePolicy(features.whisper.min_window_s, features.whisper.pad_s)
        self.transcriber = Transcriber(
            asr_model,
            device=device,
            compute_type=compute_type,
            language=language,
            cpu_threads=asr_threads,
            policy=policy,
        )
        if asr_threads and self.transcriber.device == "cpu":
            # torch (the voice encoder, the fusion model) on Whisper's thread count: the setting
            # measured (docs/benchmarks.md, session 18). Building Whisper leaves the caller's count
            # alone (streamer.asr), so this is the one place it is chosen.
            import torch

            torch.set_num_threads(asr_threads)
        self.features = FeatureExtractor(
            features, device=device, whisper_encoder=self.transcriber, text_runtime=text_runtime
        )
        if features.whisper is not None and not self.features.shares_encoder:
            log.warning(
                "--asr-model %s is not the checkpoint's audio encoder (%s): the audio features take a second "
                "Whisper encoder pass per utterance",
                asr_model,
                features.whisper.encoder,
            )
        self.description = {
            "model": f"{self.checkpoint.model.name} ({model_path.name})",
            "device": str(next(self.checkpoint.model.parameters()).device),
            "asr": asr_model,
        }
        self._stream: EmotionStream | None = None

    @property
    def labels(self) -> list[str]:
        """The emotions the model tells apart, in the order of its outputs."""
        return list(self.checkpoint.labels)

    def processor(self) -> UtteranceProcessor:
        """ASR -> features -> model for one conversation (its own dialogue context), sharing the models."""
        stage = SpeakerStage(self.voice_embedder, self.speakers) if self.voice_embedder is not None else None
        return UtteranceProcessor(self.checkpoint, self.features, self.transcriber, stage, self.uncertain_below)

    def stream(self, split_channels: bool | None = None) -> EmotionStream:
        """A new conversation fed with ``push``; several can run side by side (one per call)."""
        split = self.split_channels if split_channels is None else split_channels
        return EmotionStream(self.processor(), self.segmenter, split)

    def live_pipeline(self, source, recorder=None, config: PipelineConfig | None = None) -> LivePipeline:
        """The threaded live pipeline over ``source`` (a microphone, a paced file): what the CLI and UI run."""
        return LivePipeline(
            source,
            self.processor(),
            self.segmenter,
            config or self.pipeline_config,
            recorder=recorder,
            description=self.description,
        )

    def track(
        self,
        audio: str | os.PathLike | np.ndarray,
        sample_rate: int | None = None,
        *,
        split_channels: bool | None = None,
    ) -> Iterator[UtteranceEvent]:
        """Events of one conversation, as its utterances end: a file path or an array.

        A file (any audio or video file with an audio track) is decoded as it goes, so a
        long one takes bounded memory; its rate is the file's (``sample_rate`` must then be
        None). An array needs ``sample_rate``; 1-D is mono, 2-D is (samples, channels),
        float in [-1, 1] or int16. Each call starts with a fresh dialogue context."""
        from streamer.audio import FileSource

        split = self.split_channels if split_channels is None else split_channels
        stream = EmotionStream(self.processor(), self.segmenter, split)
        if isinstance(audio, str | os.PathLike):
            if sample_rate is not None:
                raise ValueError("sample_rate is for arrays: a file's own rate is used; leave it out")
            source = FileSource(audio, speed="max", split_channels=split)
            return self._track_file(stream, source)
        if sample_rate is None:
            raise ValueError("track(array) needs sample_rate= (e.g. 16000): an array does not carry its rate")
        rate = check_rate(sample_rate)
        data = as_channels(audio, split)  # checked here, before the caller starts iterating
        return self._track_array(stream, data, rate)

    @staticmethod
    def _track_file(stream: EmotionStream, source) -> Iterator[UtteranceEvent]:
        try:
            for block in source:
                yield from stream.push_16k(block)
        finally:
            source.close()
        if source.nonfinite_samples:
            log.warning("%d non-finite samples (NaN or infinity) were treated as silence", source.nonfinite_samples)
        yield from stream.flush()

    @staticmethod
    def _track_array(stream: EmotionStream, data: np.ndarray, rate: int) -> Iterator[UtteranceEvent]:
        step = max(1, round(rate * _ARRAY_BLOCK_S))
        for start in range(0, data.shape[1], step):
            yield from stream.push(data[:, start : start + step].T, rate)
        yield from stream.flush()

    # -- the tracker's own push conversation ---------------------------------------------------

    def push(self, samples: object, sample_rate: int) -> list[UtteranceEvent]:
        """Feed audio of the tracker's own conversation; returns the utterances it completed.

        Float in [-1, 1] or int16; 1-D mono or 2-D (samples, channels); any sample rate,
        fixed until :meth:`reset`. For several conversations at once use :meth:`stream`."""
        if self._stream is None:
            self._stream = self.stream()
        return self._stream.push(samples, sample_rate)

    def flush(self) -> list[UtteranceEvent]:
        """End of input: the utterance in progress becomes an event (the conversation may go on)."""
        return self._stream.flush() if self._stream is not None else []

    def reset(self) -> None:
        """Start a new conversation: audio in progress, dialogue context and clock are forgotten."""
        if self._stream is not None:
            self._stream.reset()
