"""Cut a stream of audio into utterances with webrtcvad.

A plain object (no threads, I/O or clocks): ``push(samples) -> list[Utterance]``.
Every decision is taken on whole VAD frames and every time is a sample count, so the
same audio yields exactly the same utterances whatever chunk sizes it arrives in; a
recording replayed offline therefore segments like the live session did.

A frame is voiced when webrtcvad says so *and* it stands ``min_snr_db`` above the noise floor
(a low percentile of the frame levels over the last ``noise_window_ms``). webrtcvad adapts to
the background slowly: at start-up it calls a -60 dBFS hiss speech, and it hangs over for a
few frames after loud sounds; the gate keeps those out of the utterance bounds (and lets a
user ignore quiet distant talkers). Per frame the state machine is then the classic webrtcvad
one, with sample-exact bookkeeping:

* outside speech, a ring of the last ``onset_window_ms`` frames is watched; when at least
  ``onset_ratio`` of it is voiced, the utterance starts ``preroll_ms`` before the first
  voiced frame of the ring (soft consonants before the VAD fires are kept);
* inside speech, the utterance ends once the last ``end_silence_ms`` frames are at least
  ``end_ratio`` unvoiced; it ends ``postroll_ms`` after its last voiced frame, and the
  decision is stamped ``decided_at_sample`` so the live latency can be measured from it;
* detections whose voiced span is shorter than ``min_utterance_ms`` are clicks and dropped;
* speech longer than ``max_utterance_ms`` is split at the quietest frame of its later half,
  never dropped, so ASR and the classifier get bounded inputs;
* inside a long utterance, a pause of ``cut_pause_ms`` (too short to end it) at least
  ``min_piece_ms`` after the previous cut marks a *cut*: a place where its transcript may be
  decoded in pieces (``Utterance.cuts``). Cuts are decided causally, frame by frame, so the
  utterance in progress (:meth:`Segmenter.in_progress`) and the finished one share them and
  a piece decoded while the speaker goes on is the finished utterance's piece too.

Outside speech only the ring and the preroll are kept, so memory stays bounded in silence.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

logger = logging.getLogger(__name__)

#: Floor for the level meter: the level of digital silence instead of -inf.
SILENCE_DBFS = -120.0


@dataclass(frozen=True)
class SegmenterConfig:
    """VAD segmentation settings; durations are rounded up to whole ``frame_ms`` frames."""

    sample_rate_hz: int = 16000
    aggressiveness: int = 2  # webrtcvad mode: 0 (least) .. 3 (most aggressive in rejecting non-speech)
    frame_ms: int = 30
    end_silence_ms: int = 500  # this much (mostly) unvoiced audio ends an utterance
    preroll_ms: int = 200  # audio kept before the first voiced frame
    postroll_ms: int = 100  # audio kept after the last voiced frame (<= end_silence_ms)
    min_utterance_ms: int = 300  # shorter voiced spans are discarded as clicks
    max_utterance_ms: int = 15000  # longer speech is split at the quietest point
    onset_window_ms: int = 150  # ring watched for the speech onset
    onset_ratio: float = 0.6  # fraction of voiced frames in that ring that starts speech
    end_ratio: float = 0.9  # fraction of unvoiced frames in the end_silence ring that ends it
    min_snr_db: float = 10.0  # a voiced frame must also be this far above the noise floor (0 = no gate)
    noise_window_ms: int = 5000  # the noise floor is a low percentile of the frame levels in this window
    noise_percentile: float = 10.0  # (not the minimum: one digitally silent frame must not lower it)
    #: An unvoiced run this long inside speech may cut the transcript (0 = never, the default until
    #: the piecewise WER and latency are measured: docs/benchmarks.md).
    cut_pause_ms: int = 0
    min_piece_ms: int = 3000  # every piece between cuts (and after the last) is at least this long

    def __post_init__(self) -> None:
        if self.sample_rate_hz not in (8000, 16000, 32000, 48000):
            raise ValueError(
                f"sample_rate_hz must be one of 8000/16000/32000/48000 (webrtcvad), got {self.sample_rate_hz}"
            )
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (webrtcvad), got {self.frame_ms}")
        for name in ("end_silence_ms", "min_utterance_ms", "max_utterance_ms", "onset_window_ms", "noise_window_ms"):
            value = getattr(self, name)
            if value < self.frame_ms:
                raise ValueError(f"{name} must be at least one frame ({self.frame_ms} ms), got {value}")
        for name in ("preroll_ms", "postroll_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.postroll_ms > self.end_silence_ms:
            raise ValueError(f"postroll_ms ({self.postroll_ms}) must not exceed end_silence_ms ({self.end_silence_ms})")
        if self.max_utterance_ms < 2 * self.min_utterance_ms:
            raise ValueError(
                f"max_utterance_ms ({self.max_utterance_ms}) must be at least twice "
                f"min_utterance_ms ({self.min_utterance_ms}) so split pieces are not clicks"
            )
        for name in ("onset_ratio", "end_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0.0 <= self.noise_percentile < 50.0:
            raise ValueError(f"noise_percentile must be in [0, 50), got {self.noise_percentile}")
        if self.cut_pause_ms < 0 or self.cut_pause_ms >= self.end_silence_ms:
            raise ValueError(
                f"cut_pause_ms must be in [0, end_silence_ms ({self.end_silence_ms})), got {self.cut_pause_ms}"
            )
        if self.min_piece_ms < 1000:
            raise ValueError(f"min_piece_ms must be at least 1000 ms (Whisper needs context), got {self.min_piece_ms}")
        if self.min_snr_db < 0:
            raise ValueError(f"min_snr_db must be >= 0 (0 disables the noise gate), got {self.min_snr_db}")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate_hz * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        """A duration in whole frames, rounded up (at least the duration asked for)."""
        return -(-ms // self.frame_ms)


@dataclass(frozen=True, eq=False)
class Utterance:
    """One stretch of speech. Samples count from the start of the session (or the channel)."""

    start_sample: int
    end_sample: int
    audio: np.ndarray = field(repr=False)  # float32 mono (end_sample - start_sample,)
    decided_at_sample: int  # the sample count at which the end was decided (latency origin)
    sample_rate_hz: int = 16000
    channel: int | None = None
    speaker: str | None = None
    #: Sample offsets (from ``start_sample``, increasing, inside the audio) of pauses where the
    #: transcript may be decoded in pieces; empty: one piece (see the module docstring).
    cuts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.audio.ndim != 1 or self.audio.dtype != np.float32:
            raise ValueError(f"Utterance audio must be 1-D float32, got {self.audio.dtype} {self.audio.shape}")
        if len(self.audio) != self.end_sample - self.start_sample:
            raise ValueError(
                f"Utterance audio has {len(self.audio)} samples but spans {self.end_sample - self.start_sample}"
            )
        bounds = (0, *self.cuts, len(self.audio))
        if any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"Utterance cuts must increase strictly inside the audio, got {self.cuts}")

    def pieces(self) -> list[tuple[int, int]]:
        """(start, end) sample offsets of the pieces the cuts make (one piece without cuts)."""
        bounds = (0, *self.cuts, len(self.audio))
        return list(zip(bounds, bounds[1:]))

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate_hz

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / self.sample_rate_hz

    @property
    def decided_at_s(self) -> float:
        return self.decided_at_sample / self.sample_rate_hz


@dataclass
class _Frame:
    index: int  # frame number since the last reset/flush; session sample = offset + index * frame_samples
    audio: np.ndarray
    voiced: bool
    energy: float  # mean square


class Segmenter:
    """``push(float32 samples) -> finished utterances``; see the module docstring for the rules."""

    def __init__(self, config: SegmenterConfig | None = None, channel: int | None = None, speaker: str | None = None):
        self.config = config or SegmenterConfig()
        self.channel = channel
        self.speaker = speaker
        c = self.config
        self._n = c.frame_samples
        self._onset_frames = c.frames(c.onset_window_ms)
        self._preroll_frames = c.frames(c.preroll_ms)
        self._postroll_frames = c.frames(c.postroll_ms)
        self._end_frames = c.frames(c.end_silence_ms)
        self._noise_frames = c.frames(c.noise_window_ms)
        self._min_samples = c.min_utterance_ms * c.sample_rate_hz // 1000
        self._max_frames = c.max_utterance_ms // c.frame_ms
        self._cut_frames = c.frames(c.cut_pause_ms) if c.cut_pause_ms else 0
        self._piece_frames = c.frames(c.min_piece_ms)
        self.reset()

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything, including the sample count: the next push is sample 0."""
        self._offset = 0  # session sample of frame 0 (moves on at flush)
        self._level_dbfs = SILENCE_DBFS
        self._restart()

    def _restart(self) -> None:
        # A fresh webrtcvad too: it adapts to the audio it has seen, and the next input may be unrelated.
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self._pending = np.zeros(0, dtype=np.float32)  # < one frame of not yet framed samples
        self._next_frame = 0
        self._levels: deque[float] = deque(maxlen=self._noise_frames)  # frame levels (dB) for the floor
        self._floor_dbfs = SILENCE_DBFS
        self._idle: deque[_Frame] = deque(maxlen=self._onset_frames + self._preroll_frames)
        self._clear_speech()

    def _clear_speech(self) -> None:
        self._in_speech = False
        self._speech: list[_Frame] = []
        self._last_voiced = -1
        self._tail: deque[bool] = deque(maxlen=self._end_frames)  # voiced flags since the onset
        self._continued = False  # the utterance is the rest of a split one
        self._cuts: list[int] = []  # frame indices where the transcript may be cut (see Utterance.cuts)
        self._unvoiced_run = 0  # unvoiced frames since the last voiced one

    @property
    def in_speech(self) -> bool:
        """Whether the segmenter is currently inside an utterance (the UI's listening/speech)."""
        return self._in_speech

    @property
    def level_dbfs(self) -> float:
        """RMS level of the last whole frame in dBFS (a full-scale square wave is 0 dBFS)."""
        return self._level_dbfs

    @property
    def noise_floor_dbfs(self) -> float:
        """Estimated background level (what a voiced frame must stand ``min_snr_db`` above)."""
        return self._floor_dbfs

    @property
    def samples_seen(self) -> int:
        """Samples pushed so far (the session clock)."""
        return self._offset + self._next_frame * self._n + len(self._pending)

    @property
    def buffered_samples(self) -> int:
        """Audio samples held in memory; outside speech bounded by the onset ring + preroll."""
        held = self._speech if self._in_speech else self._idle
        return len(self._pending) + sum(len(f.audio) for f in held)

    def tentative(self) -> Utterance | None:
        """The utterance that will be emitted if the current pause turns out to be its end.

        Inside speech, once ``postroll_ms`` of unvoiced audio follow the last voiced frame,
        the would-be utterance's audio is fixed: if no voiced frame comes before the end
        decision, ``push`` emits exactly this utterance (same samples), later. A consumer
        may start transcribing it now and use the result when the end is decided. Pure: it
        changes no state. ``decided_at_sample`` is -1 (nothing is decided yet).
        """
        if not self._in_speech or not self._speech:
            return None
        last = self._speech[-1].index
        end_frame = self._last_voiced + 1 + self._postroll_frames
        if last + 1 < end_frame or len(self._speech) >= self._max_frames:
            return None
        return self._make(self._speech[0].index, end_frame, -1)

    def in_progress(self) -> Utterance | None:
        """The utterance being spoken, up to the last whole frame (None outside speech).

        For interim transcripts while the speaker goes on: its ``cuts`` are the ones the
        finished utterance will have (the last may be dropped if too little follows it), so
        its pieces before the last cut are pieces of the finished utterance. Pure; its
        ``decided_at_sample`` is -1 and ``end_sample`` tells how much has been heard.
        """
        if not self._in_speech or not self._speech:
            return None
        return self._make(self._speech[0].index, self._speech[-1].index + 1, -1, final=False)

    def skip(self, n_samples: int) -> None:
        """Let ``n_samples`` pass unheard (paused input): the utterance in progress is dropped,
        the session clock moves on, so later utterances keep their true times."""
        if n_samples < 0:
            raise ValueError(f"cannot skip a negative number of samples ({n_samples})")
        self._offset = self.samples_seen + int(n_samples)
        self._restart()

    # -- input ---------------------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> list[Utterance]:
        """Float samples in [-1, 1], any length (values beyond are clipped for the VAD only)."""
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(f"Segmenter.push takes mono 1-D samples, got shape {samples.shape}; push one channel")
        if not np.issubdtype(samples.dtype, np.floating):
            raise ValueError(f"Segmenter.push takes float samples in [-1, 1], got {samples.dtype}; convert first")
        if samples.size and not np.isfinite(samples).all():
            raise ValueError("Segmenter.push got NaN or infinite samples; check the audio source")
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = len(data) // self._n * self._n
        self._pending = data[whole:].copy()
        out: list[Utterance] = []
        for start in range(0, whole, self._n):
            out.extend(self._frame(data[start : start + self._n].copy()))
        return out

    def flush(self) -> list[Utterance]:
        """End of input: emit the pending utterance if it is long enough, then start afresh.

        The sample count carries on (a trailing partial frame counts as consumed), so audio
        pushed after a flush (e.g. after a pause) continues the same timeline."""
        out: list[Utterance] = []
        end_of_input = self.samples_seen
        if self._in_speech:
            last = self._speech[-1].index + 1
            end_frame = min(self._last_voiced + 1 + self._postroll_frames, last)
            # Speech cut off by the end of input: the partial last frame belongs to it as well.
            extra = self._pending if end_frame == last and self._postroll_frames else None
            utt = self._make(self._speech[0].index, end_frame, end_of_input, extra=extra)
            if utt is not None:
                out.append(utt)
        self._offset = end_of_input
        self._restart()
        return out

    # -- per frame -------------------------------------------------------------------------------

    def _frame(self, audio: np.ndarray) -> list[Utterance]:
        c = self.config
        index = self._next_frame
        self._next_frame += 1
        energy = float(np.mean(np.square(audio, dtype=np.float64)))
        level = max(SILENCE_DBFS, 10.0 * np.log10(energy)) if energy > 0 else SILENCE_DBFS
        self._level_dbfs = level
        self._levels.append(level)
        self._floor_dbfs = float(np.percentile(self._levels, c.noise_percentile))
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        voiced = self._vad.is_speech(pcm, c.sample_rate_hz)
        if c.min_snr_db > 0:
            voiced = voiced and level >= self._floor_dbfs + c.min_snr_db
        frame = _Frame(index, audio, voiced, energy)
        if not self._in_speech:
            self._idle.append(frame)
            ring = list(self._idle)[-self._onset_frames :]
            if len(ring) == self._onset_frames and sum(f.voiced for f in ring) >= c.onset_ratio * self._onset_frames:
                self._start_speech(ring)
            return []
        self._speech.append(frame)
        self._tail.append(voiced)
        if voiced:
            self._last_voiced = index
            self._maybe_cut(index)
        else:
            self._unvoiced_run += 1
        unvoiced = len(self._tail) - sum(self._tail)
        if len(self._tail) == self._end_frames and unvoiced >= c.end_ratio * self._end_frames:
            end_frame = min(self._last_voiced + 1 + self._postroll_frames, index + 1)
            utt = self._make(self._speech[0].index, end_frame, self._sample(index + 1))
            self._end_speech()
            return [utt] if utt is not None else []
        if len(self._speech) >= self._max_frames:
            return self._split()
        return []

    def _maybe_cut(self, index: int) -> None:
        """A voiced frame after a pause of ``cut_pause_ms``: cut in the middle of the pause,
        if the piece before it is long enough. Causal: decided on frames already seen."""
        run, self._unvoiced_run = self._unvoiced_run, 0
        if not self._cut_frames or run < self._cut_frames:
            return
        cut = index - (run + 1) // 2
        previous = self._cuts[-1] if self._cuts else self._speech[0].index
        if cut - previous >= self._piece_frames:
            self._cuts.append(cut)

    def _start_speech(self, ring: list[_Frame]) -> None:
        voiced = [f.index for f in ring if f.voiced]
        start = voiced[0] - self._preroll_frames
        self._speech = [f for f in self._idle if f.index >= start]
        self._idle.clear()
        self._in_speech = True
        self._last_voiced = voiced[-1]
        self._tail.clear()
        self._cuts, self._unvoiced_run = [], 0
        logger.debug("speech onset at sample %d", self._sample(self._speech[0].index))

    def _end_speech(self) -> None:
        # Frames after the utterance's end stay available as the next one's preroll.
        keep = [f for f in self._speech if f.index > self._last_voiced + self._postroll_frames]
        self._clear_speech()
        self._idle.extend(keep)

    def _split(self) -> list[Utterance]:
        """Too long: cut after the quietest frame of the later half, keep speaking in the rest."""
        frames = self._speech
        half = len(frames) // 2
        quiet = half + int(np.argmin([f.energy for f in frames[half:]]))
        cut = frames[quiet].index + 1
        utt = self._make(frames[0].index, cut, self._sample(frames[-1].index + 1), split=True)
        self._speech = frames[quiet + 1 :]
        self._cuts = [c for c in self._cuts if c - cut >= self._piece_frames]
        self._continued = True  # the rest is speech already: no click filter on it
        logger.debug("utterance longer than %d ms split at sample %d", self.config.max_utterance_ms, self._sample(cut))
        return [utt] if utt is not None else []

    def _sample(self, frame_index: int) -> int:
        return self._offset + frame_index * self._n

    def _make(
        self,
        start_frame: int,
        end_frame: int,
        decided_at: int,
        extra: np.ndarray | None = None,
        split: bool = False,
        final: bool = True,
    ) -> Utterance | None:
        frames = [f for f in self._speech if start_frame <= f.index < end_frame]
        voiced = [f.index for f in frames if f.voiced]
        if not voiced:
            return None
        span = (voiced[-1] + 1 - voiced[0]) * self._n
        if not (split or self._continued) and span < self._min_samples:
            logger.debug("dropped a %d ms detection as a click", span * 1000 // self.config.sample_rate_hz)
            return None
        parts = [f.audio for f in frames] + ([extra] if extra is not None and len(extra) else [])
        audio = np.concatenate(parts).astype(np.float32, copy=False)
        start = self._sample(start_frame)
        cuts = [c for c in self._cuts if start_frame < c < end_frame]
        if final and cuts and end_frame - cuts[-1] < self._piece_frames:
            cuts.pop()  # too little after the last cut: that piece would be too short for Whisper
        return Utterance(
            start_sample=start,
            end_sample=start + len(audio),
            audio=audio,
            decided_at_sample=decided_at,
            sample_rate_hz=self.config.sample_rate_hz,
            channel=self.channel,
            speaker=self.speaker,
            cuts=tuple((c - start_frame) * self._n for c in cuts),
        )
