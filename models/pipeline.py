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

TEXT_POOLINGS = ("mean_last4",)


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
    """Hugging Face encoder (name or local path) pooled as the mean of its last 4 layers."""

    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    pooling: str = "mean_last4"
    dim: int = 384
    max_tokens: int = 128

    def __post_init__(self) -> None:
        if self.pooling not in TEXT_POOLINGS:
            raise ValueError(f"text pooling must be one of {TEXT_POOLINGS}")


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
class FeaturePipeline:
    audio: AudioPipeline | None = None
    text: TextPipeline | None = None
    frames: FramePipeline | None = None
    tokens: bool = False
    commonsense: bool = False

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
        return cls(audio, text, frames, bool(d.get("tokens", False)), bool(d.get("commonsense", False)))
