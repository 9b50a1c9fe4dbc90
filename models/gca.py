"""GCA: gated cross-modal attention with homogeneous feature discrepancy learning (Li & Luo).

The paper is trimodal with audio as the major modality. Without video, the two
inputs of the gated filter (eqs. 3-4) are the text-attended audio X^F1 (eq. 1:
audio as query, text as key/value) and the audio's own representation. Blocks,
named as in the paper: the auxiliary GRU of the text (A-GRU, Section 2.1), the
cross-modal attention CM_{A-T}, the gated filtering, the shared encoder SD of the
homogeneous features (eq. 5) and the classifier. The margin loss of eq. 6 lives in
:mod:`training.losses.gca`; this module exposes the homogeneous features for it.

``level`` picks the axis the blocks run along:

- ``utterance`` (the paper, default): inside each utterance, over its audio frames
  (log-mel + deltas through :class:`FrameEncoder`) and its word-piece token states,
  as MCFN's inputs. Each utterance is classified on its own.
- ``dialogue`` (ours, not the paper): the same blocks over the dialogue's utterance
  vectors (the 512-d selected functionals and the sentence vector), so the base
  class's ``online`` windows bound what each prediction sees. Checkpoints written
  before ``level`` existed are this variant and load as it.

Deviations from the paper at utterance level: wav2vec 2.0 (contextual, 50 frames/s)
is not available offline, so the audio frames are log-mel + deltas through a strided
two-layer 1-D convolution (:class:`FrameEncoder`); the text encoder is the bundled
MiniLM's token states instead of RoBERTa-base; the utterance vector the classifier
and eq. 5 see is the masked mean over frames (tokens), a pooling the paper leaves open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from models.base import ContextConfig, EmotionModel, ModelOutput
from models.batch import Batch
from models.blocks import (
    FeedForward,
    ScaledDotAttention,
    fill_missing,
    masked_mean,
    modality_masks,
    scatter,
    trim,
)

LEVELS = ("utterance", "dialogue")


@dataclass(frozen=True)
class GCAConfig:
    #: Which axis the A-GRU, self and cross attention run along (see the module docstring).
    level: str = "utterance"
    #: Utterance level: frame-level audio (log-mel + deltas) and token-level text widths.
    frame_dim: int = 120
    token_dim: int = 384
    #: Utterance level: stride of the frame encoder's first convolution (2: 50 frames/s, wav2vec 2.0's rate).
    frame_stride: int = 2
    #: Dialogue level: the utterance vectors' widths.
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

    #: Checkpoints saved before ``level`` existed hold the dialogue-level model.
    SAVED_BEFORE: ClassVar[dict[str, str]] = {"level": "dialogue"}

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        names = ("audio_dim", "text_dim", "frame_dim", "token_dim", "frame_stride", "num_classes", "d_model")
        for name in names + ("heads", "ffn_dim", "layers", "shared_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.margin < 0 or self.margin_weight < 0:
            raise ValueError("margin and margin_weight must be non-negative")


class AuxiliaryGRU(nn.Module):
    """A-GRU (Section 2.1): a GRU over the text sequence, then self attention with Add & Norm -> X^t.

    The sequence is an utterance's tokens (utterance level) or the dialogue's utterances
    (dialogue level). The GRU runs forward only, so right padding never reaches a real
    position's state, and under ``online`` windows it adds no look-ahead.
    """

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__()
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, batch_first=True)
        self.attention = ScaledDotAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, S, D), key mask (B, S) -> X^t (B, S, D); S tokens or utterances."""
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
        """X^a (B, Sa, D), X^t (B, St, D), text key mask (B, St) -> X^F1 (B, Sa, D); S frames/tokens or utterances."""
        z = x_a + self.dropout(self.attention(self.norm_q(x_a), self.norm_kv(x_t), mask))
        return z + self.dropout(self.ffn(self.norm_ff(z)))


class GatedFilter(nn.Module):
    """Eqs. 3-4 with two inputs: P = sigmoid(FC(X^F1 (+) X^a)); X^F = P * X^F1 + (1 - P) * X^a."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * d, d)

    def forward(self, attended: Tensor, own: Tensor) -> Tensor:
        """(B, S, D) x2 -> X^F (B, S, D)."""
        p = torch.sigmoid(self.fc(torch.cat([attended, own], -1)))
        return p * attended + (1 - p) * own


class GatedCrossModalAttention(nn.Module):
    """One gated cross-modal attention block: CM_{A-T} (eq. 1), then the gate (eqs. 3-4)."""

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__()
        self.cross = CrossModalAttention(cfg)
        self.gate = GatedFilter(cfg.d_model) if cfg.gate else None

    def forward(self, x_a: Tensor, x_t: Tensor, mask: Tensor) -> Tensor:
        """X^a (B, Sa, D), X^t (B, St, D), text key mask (B, St) -> X^F (B, Sa, D)."""
        attended = self.cross(x_a, x_t, mask)
        return self.gate(attended, x_a) if self.gate is not None else attended


class FrameEncoder(nn.Module):
    """Stand-in for wav2vec 2.0 (not available offline): log-mel + delta frames -> X^a.

    Conv1d (k=3, stride ``frame_stride``) -> GELU -> Conv1d (k=3) -> GELU -> LayerNorm: local
    acoustic context at 100/stride frames a second. Padded frames are zeroed before each
    convolution, so past an utterance's end it sees the same zeros as its own boundary
    padding, whatever the batch padded it to.
    """

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__()
        self.stride = cfg.frame_stride
        self.conv1 = nn.Conv1d(cfg.frame_dim, cfg.d_model, 3, stride=cfg.frame_stride, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, 3, padding=1)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(N, T, F), mask (N, T) -> X^a (N, T', D), mask (N, T') with T' = ceil(T / stride)."""
        x = (frames * mask[..., None].to(frames.dtype)).transpose(1, 2)
        x = nn.functional.gelu(self.conv1(x))
        lengths = mask.long().sum(1)
        out_mask = torch.arange(x.shape[-1], device=x.device)[None, :] * self.stride < lengths[:, None]
        x = nn.functional.gelu(self.conv2(x * out_mask[:, None, :].to(x.dtype)))
        return self.norm(x.transpose(1, 2)), out_mask


class GCA(EmotionModel):
    """GCA at ``level`` utterance (the paper's axis) or dialogue (ours); see the module docstring."""

    name = "gca"

    def __init__(self, cfg: GCAConfig) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.utterance_level = cfg.level == "utterance"
        if self.utterance_level:
            # A learned frame / token stands in for an absent modality, so every attention has a key.
            self.audio_missing = nn.Parameter(torch.zeros(cfg.frame_dim))
            self.text_missing = nn.Parameter(torch.zeros(cfg.token_dim))
            self.frame_encoder = FrameEncoder(cfg)
            self.text_project = nn.Linear(cfg.token_dim, d)
        else:
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

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("frames", "tokens") if self.utterance_level else ("audio", "text")

    @property
    def uses_context(self) -> bool:  # type: ignore[override]
        """At utterance level each utterance is classified from its own frames and tokens alone."""
        return not self.utterance_level

    def check_inputs(self, batch: Batch) -> None:
        super().check_inputs(batch)
        if not self.utterance_level:
            return
        for name, key in (("frames", "frame_dim"), ("tokens", "token_dim")):
            x, width = getattr(batch, name), getattr(self.config, key)
            if getattr(batch, name[:-1] + "_mask") is None:
                raise ValueError(f"batch field {name!r} comes without {name[:-1]}_mask: build it with models.collate")
            if x.dim() != 4 or x.shape[-1] != width:
                raise ValueError(f"GCA expects {name} (B, U, T, {width}), got {tuple(x.shape)}: set {key} to match")

    def fuse(self, x_a: Tensor, x_t: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor]:
        """A-GRU, the gated cross-modal attention stack and the closing norm: X^a (B, Sa, D), text (B, St, D)
        with its mask -> X^F (B, Sa, D), X^t (B, St, D)."""
        if self.text_gru is not None:
            x_t = self.text_gru(x_t, text_mask)
        x_f = x_a
        for block in self.blocks:
            x_f = block(x_f, x_t, text_mask)
        return self.norm(x_f), x_t

    def classify(self, x_f: Tensor, x_a: Tensor, x_t: Tensor) -> ModelOutput:
        """Per-position vectors (..., D) -> logits and reps; eq. 5 on the unfused features."""
        reps = {"x_f": x_f}
        parts = [x_f]
        if self.shared is not None:
            com_a, com_t = self.shared(x_a), self.shared(x_t)
            reps.update(com_a=com_a, com_t=com_t)
            if self.classify_common:
                parts += [com_a, com_t]
        return ModelOutput(self.classifier(self.dropout(torch.cat(parts, -1))), reps)

    def forward_context(self, batch: Batch) -> ModelOutput:
        """Utterance level: frames (B, U, T, F), tokens (B, U, L, Dt) -> logits (B, U, C); dialogue level:
        (B, U, Da), (B, U, Dt) -> logits (B, U, C). reps x_f (B, U, D), com_a, com_t (B, U, shared)."""
        if self.utterance_level:
            return self._within_utterances(batch)
        mask = batch.mask
        x_a = self.audio_project(fill_missing(batch.audio, batch.audio_present, mask, self.audio_missing))
        x_t = self.text_project(fill_missing(batch.text, batch.text_present, mask, self.text_missing))
        x_f, x_t = self.fuse(x_a, x_t, mask)
        return self.classify(x_f, x_a, x_t)

    def _within_utterances(self, batch: Batch) -> ModelOutput:
        """Each valid utterance on its own: frames query its tokens; mean over frames (tokens) -> (B, U, ...)."""
        sel, shape = batch.mask, batch.shape
        frame_mask, token_mask = modality_masks(batch)
        frames, fm = self._fill(*trim(batch.frames[sel], frame_mask[sel]), self.audio_missing)
        tokens, tm = self._fill(*trim(batch.tokens[sel], token_mask[sel]), self.text_missing)
        x_a, am = self.frame_encoder(frames, fm)
        x_t = self.text_project(tokens)
        x_f, x_t = self.fuse(x_a, x_t, tm)
        out = self.classify(masked_mean(x_f, am, 1), masked_mean(x_a, am, 1), masked_mean(x_t, tm, 1))
        return ModelOutput(scatter(out.logits, sel, shape), {k: scatter(v, sel, shape) for k, v in out.reps.items()})

    @staticmethod
    def _fill(x: Tensor, mask: Tensor, missing: Tensor) -> tuple[Tensor, Tensor]:
        """Utterances with no valid frame (token): their modality is absent, so the learned one stands at position 0."""
        empty = ~mask.any(1)
        if not empty.any():
            return x, mask
        x, mask = x.clone(), mask.clone()
        x[empty, 0] = missing.to(x.dtype)
        mask[empty, 0] = True
        return x, mask
