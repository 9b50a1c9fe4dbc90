"""The feature pipeline a checkpoint expects, saved inside it.

Training fits the audio scaler and the SVM feature selection; live inference must
apply exactly the same, so they travel with the weights. The extractors that
implement these settings live in :mod:`streamer.features` (openSMILE),
:mod:`streamer.text_encoder` and :mod:`streamer.frames`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: ``mean_last4``: every token (special ones too) of the last-4-layer mean; the
#: ``utterance_*`` poolings average only the current utterance's tokens (its dialogue
#: context, when in the input, shapes them through attention but is not averaged).
TEXT_POOLINGS = ("mean_last4", "utterance_last4", "utterance_last")


@dataclass(frozen=True)
class AudioPipeline:
    """openSMILE functionals -> standardise -> keep ``selected`` columns."""

    feature_set: str = "ComParE_2016"
    feature_level: str = "Functionals"
    sample_rate_hz: int = 16000
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scale: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    selected: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.scale):
            raise ValueError("scaler mean and scale differ in length")
        if len(self.selected) and (self.selected.min() < 0 or self.selected.max() >= max(len(self.mean), 1)):
            raise ValueError("selected feature indices fall outside the scaler's features")

    @property
    def dim(self) -> int:
        return int(len(self.selected)) if len(self.selected) else int(len(self.mean))

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """(..., n_raw) openSMILE functionals -> (..., dim) model input."""
        if raw.shape[-1] != len(self.mean):
            raise ValueError(f"expected {len(self.mean)} {self.feature_set} features, got {raw.shape[-1]}")
        z = (raw - self.mean) / self.scale
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        return (z[..., self.selected] if len(self.selected) else z).astype(np.float32)


@dataclass(frozen=True)
class TextPipeline:
    """Hugging Face encoder (name or local path), optionally fine-tuned, and how it is read.

    ``context_turns`` past turns enter the input after the current line
    (:mod:`streamer.text_context`); ``adapter`` is the fine-tuned delta over the base
    encoder (:class:`streamer.text_adapter.TextAdapter` as a dict of plain types and tensors).
    """

    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: str = "mean_last4"
    dim: int = 384
    max_tokens: int = 128
    context_turns: int = 0
    adapter: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.pooling not in TEXT_POOLINGS:
            raise ValueError(f"text pooling must be one of {TEXT_POOLINGS}")
        if not isinstance(self.context_turns, int) or not 0 <= self.context_turns <= 16:
            raise ValueError(f"text context_turns must be an integer from 0 to 16, got {self.context_turns!r}")
        if self.context_turns and self.pooling == "mean_last4":
            raise ValueError("a text input with dialogue context needs an utterance_* pooling")


@dataclass(frozen=True)
class FramePipeline:
    """Frame-level log-mel (+ deltas) for models such as MCFN."""

    n_mels: int = 40
    deltas: bool = True
    hop_ms: int = 10
    win_ms: int = 25
    max_frames: int = 600

    @property
    def dim(self) -> int:
        return self.n_mels * (3 if self.deltas else 1)


@dataclass(frozen=True)
class WhisperPipeline:
    """Whisper encoder states of the utterance's speech frames, pooled as mean and std.

    ``encoder`` is the Whisper model (``tiny.en``: the bundled one); ``min_window_s`` and
    ``pad_s`` are the :class:`streamer.asr.EncodePolicy` the states were computed under
    (the speech frames' states depend on the window). When the live ASR model is this
    encoder with this policy, one encoder pass serves transcription and features.
    """

    encoder: str = "tiny.en"
    min_window_s: float = 15.0
    pad_s: float = 1.0
    pooling: str = "mean_std"
    dim: int = 768

    def __post_init__(self) -> None:
        if self.pooling != "mean_std":
            raise ValueError("whisper pooling must be 'mean_std'")
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"whisper feature dim must be an even number >= 2, got {self.dim}")


@dataclass(frozen=True)
class SpeakerNormPipeline:
    """Causal per-speaker standardisation of the audio vector (see :mod:`models.normalize`).

    ``prior_mean``/``prior_var`` are the training split's statistics of the audio vector;
    ``prior_weight`` is how many utterances' worth of trust the prior gets while a
    speaker's own running statistics are still thin. ``nuisance`` (k, dim), orthonormal
    rows in coordinates divided by ``nuisance_scale`` (dim,), spans directions removed from
    every vector before its statistics are taken: the within-speaker variation of voices
    that carry no emotion (what is said, how long), see :func:`models.normalize.fit_nuisance`;
    None when nothing is removed.
    """

    prior_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    prior_var: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    prior_weight: float = 4.0
    nuisance: np.ndarray | None = None
    nuisance_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.prior_mean) != len(self.prior_var):
            raise ValueError("speaker normalisation: prior mean and variance differ in length")
        if not self.prior_weight > 0:
            raise ValueError(f"speaker normalisation prior_weight must be positive, got {self.prior_weight}")
        if len(self.prior_var) and not (np.all(np.isfinite(self.prior_var)) and np.all(self.prior_var > 0)):
            raise ValueError("speaker normalisation prior variance must be finite and positive")
        if self.nuisance is not None:
            b = np.asarray(self.nuisance)
            if b.ndim != 2 or b.shape[1] != len(self.prior_mean) or not np.all(np.isfinite(b)):
                raise ValueError(
                    f"speaker normalisation nuisance basis must be finite (k, {len(self.prior_mean)}), got {b.shape}"
                )
            sc = np.asarray(self.nuisance_scale) if self.nuisance_scale is not None else np.zeros(0)
            if sc.shape != (len(self.prior_mean),) or not np.all(sc > 0):
                raise ValueError("speaker normalisation nuisance scale must be positive, one value a dimension")

    @property
    def dim(self) -> int:
        return int(len(self.prior_mean))

    @property
    def nuisance_dims(self) -> int:
        return 0 if self.nuisance is None else int(len(self.nuisance))


@dataclass(frozen=True)
class FeaturePipeline:
    """What a checkpoint's model takes. The model's ``audio`` input is the concatenation of
    the openSMILE vector (``audio``) and the pooled Whisper states (``whisper``), whichever
    are set, then standardised per speaker when ``speaker_norm`` is set."""

    audio: AudioPipeline | None = None
    text: TextPipeline | None = None
    frames: FramePipeline | None = None
    tokens: bool = False
    commonsense: bool = False
    whisper: WhisperPipeline | None = None
    speaker_norm: SpeakerNormPipeline | None = None

    @property
    def has_audio_vector(self) -> bool:
        return self.audio is not None or self.whisper is not None

    @property
    def audio_dim(self) -> int:
        return (self.audio.dim if self.audio is not None else 0) + (self.whisper.dim if self.whisper else 0)

    @property
    def audio_kind(self) -> str:
        """``opensmile``, ``whisper``, ``both`` or ``none``: which audio features the model takes."""
        kinds = [k for k, v in (("opensmile", self.audio), ("whisper", self.whisper)) if v is not None]
        return "both" if len(kinds) == 2 else (kinds[0] if kinds else "none")

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors only, so ``torch.load(weights_only=True)`` reads it."""
        out: dict[str, Any] = {"tokens": self.tokens, "commonsense": self.commonsense}
        if self.audio is not None:
            a = self.audio
            out["audio"] = {
                "feature_set": a.feature_set,
                "feature_level": a.feature_level,
                "sample_rate_hz": a.sample_rate_hz,
                "mean": torch.from_numpy(np.asarray(a.mean, np.float32)),
                "scale": torch.from_numpy(np.asarray(a.scale, np.float32)),
                "selected": torch.from_numpy(np.asarray(a.selected, np.int64)),
            }
        if self.text is not None:
            out["text"] = dict(vars(self.text))
        if self.frames is not None:
            out["frames"] = dict(vars(self.frames))
        if self.whisper is not None:
            out["whisper"] = dict(vars(self.whisper))
        if self.speaker_norm is not None:
            n = self.speaker_norm
            out["speaker_norm"] = {
                "prior_mean": torch.from_numpy(np.asarray(n.prior_mean, np.float32)),
                "prior_var": torch.from_numpy(np.asarray(n.prior_var, np.float32)),
                "prior_weight": float(n.prior_weight),
            }
            if n.nuisance is not None:
                out["speaker_norm"]["nuisance"] = torch.from_numpy(np.asarray(n.nuisance, np.float32))
                out["speaker_norm"]["nuisance_scale"] = torch.from_numpy(np.asarray(n.nuisance_scale, np.float32))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeaturePipeline:
        audio = None
        if d.get("audio") is not None:
            a = dict(d["audio"])
            for key, dtype in (("mean", np.float32), ("scale", np.float32), ("selected", np.int64)):
                a[key] = np.asarray(a[key].numpy() if hasattr(a[key], "numpy") else a[key], dtype)
            audio = AudioPipeline(**a)
        text = TextPipeline(**d["text"]) if d.get("text") is not None else None
        frames = FramePipeline(**d["frames"]) if d.get("frames") is not None else None
        whisper = WhisperPipeline(**d["whisper"]) if d.get("whisper") is not None else None
        norm = None
        if d.get("speaker_norm") is not None:
            n = dict(d["speaker_norm"])
            for key in ("prior_mean", "prior_var", "nuisance", "nuisance_scale"):
                if key in n:
                    n[key] = np.asarray(n[key].numpy() if hasattr(n[key], "numpy") else n[key], np.float32)
            norm = SpeakerNormPipeline(**n)
        return cls(
            audio, text, frames, bool(d.get("tokens", False)), bool(d.get("commonsense", False)), whisper, norm
        )
