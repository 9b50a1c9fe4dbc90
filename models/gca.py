"""GCA: gated cross-modal attention with homogeneous feature discrepancy learning (Li & Luo).

The paper is trimodal with audio as the major modality. Without video, the two
inputs of the gated filter (eqs. 3-4) are the text-attended audio X^F1 (eq. 1:
audio as query, text as key/value) and the audio's own representation. Blocks,
named as in the paper: the auxiliary GRU of the text (A-GRU, Section 2.1), the
cross-modal attention CM_{A-T}, the gated filtering, the shared encoder SD of the
homogeneous features (eq. 5) and the classifier. The margin loss of eq. 6 lives in
:mod:`training.losses.gca`; this module exposes the homogeneous features for it.

Attention and the GRU run over the utterances of the dialogue, so the base class's
``online`` windows bound what each prediction sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.base import ContextConfig, EmotionModel, ModelOutput
from models.batch import Batch
from models.blocks import FeedForward, ScaledDotAttention, fill_missing


@dataclass(frozen=True)
class GCAConfig:
    audio_dim: int = 512
    text_dim: int = 384
    num_classes: int = 7
    d_model: int = 256
    heads: int = 4
    ffn_dim: int = 512
    #: Stacked gated cross-modal attention blocks (Section 3.2: 3).
    layers: int = 3
    #: Width of the homogeneous features X_com (eq. 5).
    shared_dim: int = 128
    dropout: float = 0.1
    #: A-GRU (Section 2.1): a GRU and self attention give the text its global features.
    text_gru: bool = True
    #: False removes the gate (Section 4.1's A+T ablation): X^F = X^F1 (eq. 4 with P = 1).
    gate: bool = True
    #: False removes the shared encoder and the margin loss (Section 4.1's A+T ablation).
    homogeneous: bool = True
    #: The paper leaves open what the classifier sees: True adds the homogeneous features
    #: X_com^a, X_com^t (eq. 5) to the fused X^F; False classifies X^F alone.
    classify_common: bool = True
    #: alpha of eq. 6 (not given in the paper).
    margin: float = 0.2
    #: lambda of eq. 8 (Table 2: best at 1).
    margin_weight: float = 1.0
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        for name in ("audio_dim", "text_dim", "num_classes", "d_model", "heads", "ffn_dim", "layers", "shared_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.margin < 0 or self.margin_weight < 0:
            raise ValueError("margin and margin_weight must be non-negative")


class AuxiliaryGRU(nn.Module):
    """A-GRU (Section 2.1): a GRU over the utterances, then self attention with Add & Norm -> X^t.

    The GRU runs forward only, so under ``online`` windows it adds no look-ahead; right
    padding never reaches a real utterance's state.
    """

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, batch_first=True)
        self.attention = ScaledDotAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, U, D), key mask (B, U) -> X^t (B, U, D)."""
        g, _ = self.gru(x)
        return self.norm(g + self.dropout(self.attention(g, g, mask)))


class CrossModalAttention(nn.Module):
    """Eq. 1: X^F1 = CM_{A-T}(X^a, X^t), a pre-norm cross-modal transformer block (as in MulT):
    Z = X^a + Attn(Q = LN(X^a); K, V = LN(X^t)); X^F1 = Z + FFN(LN(Z))."""

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(cfg.d_model)
        self.norm_kv = nn.LayerNorm(cfg.d_model)
        self.attention = ScaledDotAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm_ff = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x_a: Tensor, x_t: Tensor, mask: Tensor) -> Tensor:
        """X^a, X^t (B, U, D), key mask (B, U) -> X^F1 (B, U, D)."""
        z = x_a + self.dropout(self.attention(self.norm_q(x_a), self.norm_kv(x_t), mask))
        return z + self.dropout(self.ffn(self.norm_ff(z)))


class GatedFilter(nn.Module):
    """Eqs. 3-4 with two inputs: P = sigmoid(FC(X^F1 (+) X^a)); X^F = P * X^F1 + (1 - P) * X^a."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * d, d)

    def forward(self, attended: Tensor, own: Tensor) -> Tensor:
        """(B, U, D) x2 -> X^F (B, U, D)."""
        p = torch.sigmoid(self.fc(torch.cat([attended, own], -1)))
        return p * attended + (1 - p) * own


class GatedCrossModalAttention(nn.Module):
    """One gated cross-modal attention block: CM_{A-T} (eq. 1), then the gate (eqs. 3-4)."""

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__()
        self.cross = CrossModalAttention(cfg)
        self.gate = GatedFilter(cfg.d_model) if cfg.gate else None

    def forward(self, x_a: Tensor, x_t: Tensor, mask: Tensor) -> Tensor:
        """X^a, X^t (B, U, D) -> X^F (B, U, D)."""
        attended = self.cross(x_a, x_t, mask)
        return self.gate(attended, x_a) if self.gate is not None else attended


class GCA(EmotionModel):
    name = "gca"
    inputs = ("audio", "text")

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.audio_missing = nn.Parameter(torch.zeros(cfg.audio_dim))
        self.text_missing = nn.Parameter(torch.zeros(cfg.text_dim))
        # The pre-trained encoders' vectors differ in width; the shared encoder (eq. 5) and
        # the cross attention need one width, so each modality is first mapped to d_model.
        self.audio_project = nn.Linear(cfg.audio_dim, d)
        self.text_project = nn.Linear(cfg.text_dim, d)
        self.text_gru = AuxiliaryGRU(cfg) if cfg.text_gru else None
        self.blocks = nn.ModuleList([GatedCrossModalAttention(cfg) for _ in range(cfg.layers)])
        self.norm = nn.LayerNorm(d)  # closes the pre-norm stack of blocks, as in MulT
        self.shared = nn.Linear(d, cfg.shared_dim) if cfg.homogeneous else None  # SD, eq. 5
        self.classify_common = cfg.homogeneous and cfg.classify_common
        self.dropout = nn.Dropout(cfg.dropout)
        width = d + (2 * cfg.shared_dim if self.classify_common else 0)
        self.classifier = nn.Linear(width, cfg.num_classes)

    def forward_context(self, batch: Batch) -> ModelOutput:
        """(B, U, Da), (B, U, Dt) -> logits (B, U, C); reps x_f (B, U, D), com_a, com_t (B, U, shared)."""
        mask = batch.mask
        x_a = self.audio_project(fill_missing(batch.audio, batch.audio_present, mask, self.audio_missing))
        x_t = self.text_project(fill_missing(batch.text, batch.text_present, mask, self.text_missing))
        if self.text_gru is not None:
            x_t = self.text_gru(x_t, mask)
        x_f = x_a
        for block in self.blocks:
            x_f = block(x_f, x_t, mask)
        x_f = self.norm(x_f)
        reps = {"x_f": x_f}
        parts = [x_f]
        if self.shared is not None:
            com_a, com_t = self.shared(x_a), self.shared(x_t)  # eq. 5 on the unfused features
            reps.update(com_a=com_a, com_t=com_t)
            if self.classify_common:
                parts += [com_a, com_t]
        return ModelOutput(self.classifier(self.dropout(torch.cat(parts, -1))), reps)
