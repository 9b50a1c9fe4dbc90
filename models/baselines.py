"""Baselines: utterance-level text-only and audio-only classifiers, and MELD's bc-LSTM.

The unimodal baselines look at one utterance only (no context), which is what
"how much does one modality tell on its own" asks. bc-LSTM (Poria et al. 2017,
MELD's baseline) runs a bidirectional LSTM over the utterance sequence per
modality, then a second one over the concatenated contextual features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.base import ContextConfig, EmotionModel, ModelOutput
from models.batch import Batch
from models.blocks import run_packed


@dataclass(frozen=True)
class UnimodalConfig:
    input_dim: int = 384
    num_classes: int = 7
    hidden: int = 256
    dropout: float = 0.2
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        if min(self.input_dim, self.num_classes, self.hidden) < 1:
            raise ValueError("input_dim, num_classes and hidden must be positive")


class _Unimodal(EmotionModel):
    uses_context = False
    field_name = ""

    def __init__(self, cfg: UnimodalConfig) -> None:
        super().__init__(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.input_dim, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
        )
        self.classifier = nn.Linear(cfg.hidden, cfg.num_classes)

    def forward_context(self, batch: Batch) -> ModelOutput:
        """(B, U, D) -> logits (B, U, C), each utterance on its own."""
        h = self.mlp(getattr(batch, self.field_name))
        return ModelOutput(self.classifier(h), {"h": h})


class TextOnly(_Unimodal):
    name = "text"
    inputs = ("text",)
    field_name = "text"


class AudioOnly(_Unimodal):
    name = "audio"
    inputs = ("audio",)
    field_name = "audio"


@dataclass(frozen=True)
class BCLSTMConfig:
    audio_dim: int = 512
    text_dim: int = 384
    num_classes: int = 7
    hidden: int = 128
    fusion_hidden: int = 128
    dropout: float = 0.2
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        if min(self.audio_dim, self.text_dim, self.num_classes, self.hidden, self.fusion_hidden) < 1:
            raise ValueError("all BCLSTM sizes must be positive")


class ContextualLSTM(nn.Module):
    """Dense -> bidirectional LSTM over the utterances of a dialogue (one bc-LSTM level)."""

    def __init__(self, input_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(input_dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, U, D), mask (B, U) -> (B, U, 2H)."""
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.dropout(run_packed(self.lstm, x, mask))


class BCLSTM(EmotionModel):
    name = "bclstm"
    inputs = ("audio", "text")

    def __init__(self, cfg: BCLSTMConfig) -> None:
        super().__init__(cfg)
        self.audio_lstm = ContextualLSTM(cfg.audio_dim, cfg.hidden, cfg.dropout)
        self.text_lstm = ContextualLSTM(cfg.text_dim, cfg.hidden, cfg.dropout)
        self.fusion_lstm = ContextualLSTM(4 * cfg.hidden, cfg.fusion_hidden, cfg.dropout)
        self.classifier = nn.Linear(2 * cfg.fusion_hidden, cfg.num_classes)

    def forward_context(self, batch: Batch) -> ModelOutput:
        """(B, U, Da), (B, U, Dt) -> logits (B, U, C)."""
        a = self.audio_lstm(batch.audio, batch.mask)
        t = self.text_lstm(batch.text, batch.mask)
        h = self.fusion_lstm(torch.cat([a, t], -1), batch.mask)
        return ModelOutput(self.classifier(h), {"h_a": a, "h_l": t, "h_m": h})
