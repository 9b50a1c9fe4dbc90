"""The live pipeline: audio blocks -> segmenter -> ASR -> features -> model -> events.

:class:`UtteranceProcessor` turns one finished utterance into an
:class:`~streamer.events.UtteranceEvent` (no threads, no I/O besides the models).
:class:`LivePipeline` drives a source through segmenters and the processor and
implements the :class:`~streamer.events.Pipeline` protocol the UI and the
headless runner consume. It runs in whatever thread calls ``run``; the only
other thread is the audio callback of a microphone source, which just queues.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.checkpoint import Checkpoint
from streamer.events import UNCERTAIN, Event, InterimEvent, LevelEvent, StatusEvent, UtteranceEvent
from streamer.interim import PieceTranscripts
from streamer.options import check_uncertain_below
from streamer.segmenter import Segmenter, SegmenterConfig, Utterance
from streamer.speakers import SpeakerStage, Voice
from streamer.text_context import DialogueHistory
from streamer.work import STALE, Work

log = logging.getLogger(__name__)

SPEAKER_NAMES = "ABCDEFGH"


class Transcribes(Protocol):
    """The part of :class:`streamer.asr.Transcriber` the processor uses (tests pass fakes)."""

    def transcribe(self, audio: np.ndarray) -> str: ...


@dataclass(frozen=True)
class PipelineConfig:
    level_every_ms: int = 100
    #: Start ASR and features on an utterance as soon as its audio is fixed (``postroll_ms``
    #: after the last voiced frame), in a worker thread, while the segmenter still waits
    #: ``end_silence_ms`` to be sure; at the decision only the model is left. Results are
    #: identical (same audio in, same work); only the waiting time is used.
    speculate: bool = True
    #: Run the audio-only features (openSMILE, log-mel) in a second worker thread while Whisper
    #: transcribes the same audio: Whisper leaves part of a 2-core CPU idle, so this hides most
    #: of openSMILE's time (~45 ms of a 3 s utterance, ~110 ms of a 9 s one). Same results.
    #: ``speculate=False, overlap=False`` is the plain sequential pipeline.
    overlap: bool = True
    #: Interim words (:class:`~streamer.events.InterimEvent`) while an utterance goes on past
    #: ``interim_after_ms``, at most every ``interim_every_ms`` of audio, decoded in the worker
    #: only when it is idle (needs ``speculate``). They never change the final events.
    interim: bool = False
    interim_after_ms: int = 1500
    interim_every_ms: int = 1000

    def __post_init__(self) -> None:
        if self.level_every_ms < 10:
            raise ValueError("level_every_ms must be at least 10 ms")
        if self.interim_after_ms < 0 or self.interim_every_ms < 100:
            raise ValueError(
                f"interim_after_ms must be >= 0 and interim_every_ms >= 100 ms, got "
                f"{self.interim_after_ms} and {self.interim_every_ms}"
            )
        if self.interim and not self.speculate:
            raise ValueError("interim words need speculate=True (they are decoded in the worker thread)")


class UtteranceProcessor:
    """ASR -> features -> streaming model for one utterance; keeps the dialogue state.

    A failure (ASR error, non-finite features, model error) becomes an event with
    ``error`` set; the dialogue state is left as it was, so the session continues.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        features,
        transcriber: Transcribes | None,
        speakers: SpeakerStage | None = None,
        uncertain_below: float = 0.0,
    ) -> None:
        self.checkpoint = checkpoint
        #: Below this confidence the event says :data:`UNCERTAIN` (the best answer kept as its ``guess``).
        self.uncertain_below = check_uncertain_below(uncertain_below)
        #: Gives mono utterances a speaker (stereo channels come with theirs); None: no tracking.
        self.speakers = speakers
        self.features = features
        self.transcriber = transcriber
        self.classifier = checkpoint.classifier()
        #: One Whisper encoder pass serves transcription and the audio features.
        self.shared_encoder = transcriber is not None and bool(getattr(features, "shares_encoder", False))
        self.labels = checkpoint.labels
        self.count = 0
        text = checkpoint.pipeline.text
        #: The past transcripts the text encoder reads with each line (dialogue state, like the classifier's).
        self.history = DialogueHistory(text.context_turns if text is not None else 0)
        #: Transcripts of long utterances piece by piece (cut at pauses), each piece decoded once.
        self.pieces = PieceTranscripts(transcriber) if transcriber is not None else None

    def reset(self) -> None:
        self.classifier.reset()
        self.history.reset()
        if self.speakers is not None:
            self.speakers.reset()
        self.count = 0

    def prepare(
        self, utt: Utterance, audio_pool: Executor | None = None, stale: threading.Event | None = None
    ) -> Prepared:
        """ASR and features of one utterance: a pure function of its audio (no dialogue state).

        With ``audio_pool`` (one thread) the audio-only features run there while Whisper
        transcribes here; each extractor is still used by one thread at a time. ``stale``
        (a speculative guess's flag): once set, the guess is abandoned after the stage it is
        in (the shared encoder pass, the decode: neither can be interrupted), so the decoder,
        the text encoder and the speaker embedding are not spent on audio that speech has
        already outgrown, and the worker is free sooner for the utterance that will end.
        """
        latency: dict[str, float] = {}
        text = ""
        ahead = audio_pool.submit(self.features.audio_part, utt.audio) if audio_pool is not None else None
        # the voice vector needs only the audio: in the audio thread it runs while Whisper transcribes
        track = self.speakers is not None and utt.speaker is None
        voice_ahead: Future | None = None

        def start_voice() -> None:
            nonlocal voice_ahead
            if track and audio_pool is not None and voice_ahead is None:
                voice_ahead = audio_pool.submit(self._voice, utt.audio)

        if stale is None or not self.shared_encoder:
            start_voice()
        # else a guess: many go stale during their encoder pass (speech went on after a short
        # pause), so it embeds the voice once that pass is through, beside the decode

        def drop_ahead() -> None:
            for job in (ahead, voice_ahead):
                if job is not None:
                    job.cancel()

        def outgrown() -> bool:
            if stale is None or not stale.is_set():
                return False
            latency["asr"] = (time.perf_counter() - t) * 1000
            drop_ahead()
            return True

        try:
            t = time.perf_counter()
            encoded = None
            if self.shared_encoder:
                encoded = self.transcriber.encode(utt.audio)  # the audio features' pass, whatever the cuts
                if outgrown():  # a long turn's decode is the larger half of its ASR
                    return Prepared(text, None, latency, STALE)
                start_voice()
                text = self.pieces.text(utt, encoded)
            else:
                text = self.pieces.text(utt) if self.pieces is not None else ""
            latency["asr"] = (time.perf_counter() - t) * 1000
            if outgrown():
                return Prepared(text, None, latency, STALE)
            speaker = utt.speaker
            speaker_id = SPEAKER_NAMES.index(speaker) if speaker and speaker in SPEAKER_NAMES else 0
            audio_part = ahead.result() if ahead is not None else None
            voice = None
            if track:
                waited = time.perf_counter()
                voice, latency["speaker_embed"] = voice_ahead.result() if voice_ahead else self._voice(utt.audio)
                if voice_ahead is not None:  # how long the text waited for the voice (it needs the speaker)
                    latency["speaker_wait"] = (time.perf_counter() - waited) * 1000
            # the dialogue tagged as it will be at the decision, so the text is read once, here
            context = self.history.context(self._expected_speaker(voice) if track else speaker)
            extra = {"text_context": context} if self.history.turns else {}
            feats, stage_ms = self.features.utterance(
                utt.audio, text, speaker=speaker_id, audio_part=audio_part, encoded=encoded, norm_key=speaker, **extra
            )
            latency.update(stage_ms)
            for name, value in feats.items():
                if hasattr(value, "isfinite") and not bool(value.isfinite().all()):
                    raise ValueError(f"non-finite {name} features")
        except Exception as exc:  # one bad utterance must not end the session
            drop_ahead()
            return Prepared(text, None, latency, str(exc) or type(exc).__name__)
        return Prepared(text, feats, latency, text_context=context, voice=voice)

    def _expected_speaker(self, voice: Voice | None) -> str | None:
        """The speaker the tracker would give ``voice`` now (None if unknown). The assignment
        proper happens in order at the end decision; when it differs (another utterance was
        assigned in between, or overlap), ``__call__`` reads the line again with the right tags."""
        if voice is None or self.history.turns == 0:
            return None
        try:
            return self.speakers.peek(voice).speaker
        except Exception as exc:  # a guess at the tags only: the decision reads the line again if it was wrong
            log.debug("no speaker expected for this utterance: %s", exc)
            return None

    def _voice(self, audio: np.ndarray) -> tuple[Voice | None, float]:
        """The utterance's voice vector (None if it cannot be had) and the milliseconds it took."""
        t = time.perf_counter()
        try:
            voice = self.speakers.embed(audio)
        except Exception as exc:  # no speaker for this one; its emotion is still worth having
            log.warning("no speaker embedding for this utterance: %s", exc)
            voice = None
        return voice, (time.perf_counter() - t) * 1000

    def interim(self, utt: Utterance, abandon: threading.Event | None = None) -> InterimEvent | None:
        """Words so far of an utterance in progress (see :mod:`streamer.interim`); no dialogue state.
        None when ``abandon`` was set before the decode (the worker is wanted elsewhere)."""
        t = time.perf_counter()
        text = self.pieces.interim(utt, abandon) if self.pieces is not None else ""
        if text is None:
            return None
        return InterimEvent.of(utt, text, (time.perf_counter() - t) * 1000)

    def __call__(self, utt: Utterance, decided_at: float | None = None, prepared: Prepared | None = None):
        """Classify one utterance (preparing it here unless ``prepared`` is given); latencies
        are measured from ``decided_at`` (perf_counter), the segmenter's end decision."""
        t0 = decided_at if decided_at is not None else time.perf_counter()
        prepared = prepared if prepared is not None else self.prepare(utt)
        latency = dict(prepared.latency)
        index = self.count
        self.count += 1
        speaker, overlap, features = utt.speaker, (), prepared.features
        if prepared.voice is not None:  # in order, at the end decision: labels never change afterwards
            t = time.perf_counter()
            assigned = self.speakers.assign(prepared.voice)
            latency["speaker_assign"] = (time.perf_counter() - t) * 1000
            speaker, overlap = assigned.speaker, assigned.overlap
            features = _with_speaker(features, speaker)
        args = (index, round(utt.start_s, 3), round(utt.end_s, 3), speaker, prepared.text)
        error = prepared.error
        if error is None:
            try:
                context = self.history.context(speaker)
                if self.history.turns and context != prepared.text_context:
                    # prepared before the previous line's transcript or this line's tracked speaker
                    # were known: read the line with the dialogue as it stands now
                    features = {**features, "text": self.features.text_vector(prepared.text, context, latency)}
                t = time.perf_counter()
                probs = self.classifier.push(features, per_channel=True)
                latency["model"] = (time.perf_counter() - t) * 1000
                self.history.push(speaker, prepared.text)
            except Exception as exc:  # the dialogue state is left as it was
                error = str(exc) or type(exc).__name__
        latency["total"] = (time.perf_counter() - t0) * 1000
        voice = prepared.voice.embedding if prepared.voice is not None else None  # for a replay's second pass
        if error is not None:
            log.warning("utterance %d failed: %s", index, error)
            return UtteranceEvent(*args, None, 0.0, {}, latency, error, overlap=overlap, voice=voice)
        best = int(probs.argmax())
        probs_by_label = {label: round(float(p), 4) for label, p in zip(self.labels, probs)}
        channels = {
            name: {
                "label": self.labels[int(p.argmax())],
                "confidence": round(float(p.max()), 4),
                "probs": {label: round(float(q), 4) for label, q in zip(self.labels, p)},
            }
            for name, p in self.classifier.last_channels.items()
        }
        label, guess = self.labels[best], None
        if float(probs[best]) < self.uncertain_below:  # the dialogue state learnt from it all the same
            label, guess = UNCERTAIN, label
        return UtteranceEvent(
            *args,
            label,
            float(probs[best]),
            probs_by_label,
            latency,
            channels=channels,
            overlap=overlap,
            guess=guess,
            voice=voice,
        )


def _with_speaker(features: dict, speaker: str | None) -> dict:
    """The model inputs with a tracked speaker: HBAF's speaker slot and the normalisation key."""
    features = dict(features)
    if "speaker" in features:
        features["speaker"] = SPEAKER_NAMES.index(speaker) if speaker in SPEAKER_NAMES else 0
    if "norm_key" in features:
        features["norm_key"] = speaker  # overlapping speech (None) is standardised as the session
    return features


@dataclass
class Prepared:
    """What ASR and feature extraction made of one utterance (or why they failed)."""

    text: str
    features: dict | None
    latency: dict[str, float]
    error: str | None = None
    #: The dialogue context the text vector was computed with (see UtteranceProcessor.history).
    text_context: str | None = None
    voice: Voice | None = None  # the speaker embedding of a mono utterance, when tracking


class LivePipeline:
    """Source -> one segmenter per channel (or one for the downmix) -> processor -> events."""

    def __init__(
        self,
        source,
        processor: UtteranceProcessor,
        segmenter: SegmenterConfig | None = None,
        config: PipelineConfig | None = None,
        recorder=None,
        description: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.processor = processor
        self.segmenter_config = segmenter or SegmenterConfig()
        self.config = config or PipelineConfig()
        self.recorder = recorder
        self._description = description or {}
        channels = getattr(source, "channels", 1)
        if channels > 1:
            self.segmenters = [Segmenter(self.segmenter_config, c, SPEAKER_NAMES[c]) for c in range(channels)]
        else:
            self.segmenters = [Segmenter(self.segmenter_config)]

    def describe(self) -> dict[str, str]:
        return dict(self._description)

    def run(self, emit: Callable[[Event], None], stop: threading.Event, paused: threading.Event) -> None:
        """Consume the source until it ends or ``stop`` is set, emitting events as they happen."""
        rate = self.segmenter_config.sample_rate_hz
        level_every = rate * self.config.level_every_ms // 1000
        since_level = 0
        last_dropped = 0
        d = self._description
        emit(
            StatusEvent(
                f"listening: {getattr(self.source, 'description', '')}", d.get("model", ""), d.get("device", "")
            )
        )
        interim_after = rate * self.config.interim_after_ms // 1000 if self.config.interim else None
        work = Work(self.processor, self.config.speculate, self.config.overlap, guess_words_after=interim_after)
        interim_every = rate * self.config.interim_every_ms // 1000
        recorder = self.recorder
        try:
            for block in self.source:
                if stop.is_set():
                    break
                if recorder is not None:
                    try:
                        recorder.write(block)
                    except ValueError as exc:  # AudioError: full disk... the analysis goes on
                        log.info("%s", exc)  # said once, by the status event
                        emit(StatusEvent(f"{exc}; the analysis goes on", error=True))
                        recorder = None
                if paused.is_set():
                    # Paused audio is not heard: a half-heard utterance is dropped, the clock runs on.
                    for seg in self.segmenters:
                        seg.skip(block.shape[-1])
                    work.drop_guesses()
                    continue
                blocks = block if block.ndim == 2 else block[None, :]
                if len(self.segmenters) == 1 and blocks.shape[0] > 1:
                    blocks = blocks.mean(axis=0, keepdims=True)
                for k, (seg, samples) in enumerate(zip(self.segmenters, blocks)):
                    utts = seg.push(samples)
                    for utt in utts:
                        emit(work.finish(k, utt))
                    if not utts:
                        guess = seg.tentative()
                        work.speculate(k, guess)
                        if interim_after is not None and guess is None and seg.in_speech:
                            work.interim(k, seg, interim_after, interim_every)
                for interim in work.interims():
                    emit(interim)
                since_level += blocks.shape[1]
                if since_level >= level_every:
                    since_level = 0
                    dropped = getattr(self.source, "dropped_blocks", 0)
                    if dropped != last_dropped:  # the consumer fell behind: say so while it happens
                        last_dropped = dropped
                        emit(
                            StatusEvent(
                                f"dropped {dropped} audio blocks (processing fell behind)", dropped_blocks=dropped
                            )
                        )
                    seg = self.segmenters[0]
                    emit(
                        LevelEvent(
                            seg.samples_seen / rate, _finite(seg.level_dbfs), any(s.in_speech for s in self.segmenters)
                        )
                    )
            # Also after a stop (Ctrl-C, SIGTERM, quit): speech already captured is not thrown away.
            for k, seg in enumerate(self.segmenters):
                for utt in seg.flush():
                    emit(work.finish(k, utt))
            nonfinite = getattr(self.source, "nonfinite_samples", 0)
            if nonfinite:
                emit(StatusEvent(f"{nonfinite} non-finite samples (NaN or infinity) were treated as silence"))
            dropped = getattr(self.source, "dropped_blocks", 0)
            emit(StatusEvent("input ended", dropped_blocks=dropped, finished=True))
        except Exception as exc:  # source failure (device gone...): report, keep what was recorded
            log.error("input failed: %s", exc)
            if not stop.is_set():  # the speech heard before the failure still gets its event
                for k, seg in enumerate(self.segmenters):
                    try:
                        for utt in seg.flush():
                            emit(work.finish(k, utt))
                    except Exception as flush_exc:  # noqa: BLE001 - report the original failure
                        log.error("could not finish the last utterance: %s", flush_exc)
            emit(
                StatusEvent(
                    f"input failed: {exc}",
                    error=True,
                    finished=True,
                    dropped_blocks=getattr(self.source, "dropped_blocks", 0),
                )
            )
        finally:
            work.close()
            if self.recorder is not None:
                self.recorder.close()
            close = getattr(self.source, "close", None)
            if close is not None:
                close()


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -120.0
