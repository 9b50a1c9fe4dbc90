"""Small building blocks shared by several fusion models."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.base import ContextConfig
from models.batch import Batch


class ScaledDotAttention(nn.Module):
    """Multi-head scaled dot-product attention with bias-free Q/K/V projections.

    HBAF eqs. 7-9 and BCAF eqs. 4-6 use this form: query from one sequence,
    key/value from another (the same one for self-attention).
    """

    def __init__(self, d_model: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """(B, Uq, D), (B, Uk, D), key_mask (B, Uk) bool -> (B, Uq, D)."""
        b, uq, d = query.shape
        uk = key.shape[1]
        h = self.heads
        q = self.q(query).view(b, uq, h, d // h).transpose(1, 2)
        k = self.k(key).view(b, uk, h, d // h).transpose(1, 2)
        v = self.v(key).view(b, uk, h, d // h).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        attn = self.dropout(torch.softmax(scores, dim=-1))
        return (attn @ v).transpose(1, 2).reshape(b, uq, d)


class FeedForward(nn.Module):
    """Position-wise two-layer FFN."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return self.net(x)


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is True."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def config_from_dict(cls: type, values: dict[str, Any]):
    """Rebuild a (frozen) config dataclass saved with ``dataclasses.asdict``.

    Unknown keys are an error: a checkpoint written by a different model version
    should fail loudly rather than silently drop settings. A field missing from the
    saved dict gets the class's ``SAVED_BEFORE`` value when it names one (the value
    that reproduces checkpoints written before the field existed), else its default.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    kwargs = {**{k: v for k, v in getattr(cls, "SAVED_BEFORE", {}).items() if k not in values}, **values}
    if isinstance(kwargs.get("context"), dict):
        kwargs["context"] = ContextConfig(**kwargs["context"])
    for key, value in kwargs.items():
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    return cls(**kwargs)


def fill_missing(x: Tensor, present: Tensor | None, mask: Tensor, missing: Tensor) -> Tensor:
    """Replace the vectors of real utterances whose modality is absent by a learned one.

    Padded positions stay zero: the audio convolution relies on it.
    """
    if present is None:
        return x
    absent = (~present & mask)[..., None]
    return torch.where(absent, missing.expand_as(x), x)


def run_packed(rnn: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """A batch-first RNN over only the valid steps of each sequence: (B, U, D), mask (B, U) -> (B, U, H).

    Packing keeps padding out of the backward direction of bidirectional RNNs, so a
    dialogue's outputs do not depend on how much the batch padded it.
    """
    lengths = mask.long().sum(1).clamp(min=1).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


# ---- per-utterance sequences (frames, tokens): MCFN and GCA classify each utterance from its own


def modality_masks(batch: Batch) -> tuple[Tensor | None, Tensor | None]:
    """Valid frames (B, U, T) and tokens (B, U, L): padding, padded utterances and absent modalities excluded."""
    out = []
    for seq, present in ((batch.frame_mask, batch.audio_present), (batch.token_mask, batch.text_present)):
        if seq is not None:
            seq = seq & batch.mask[..., None]
            if present is not None:
                seq = seq & present[..., None]
        out.append(seq)
    return out[0], out[1]


def trim(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop trailing positions no utterance uses (exact: padding never matters); keep at least one."""
    used = mask.any(0).nonzero()
    length = int(used[-1]) + 1 if len(used) else 1
    if x.shape[1] == 0:  # no utterance has any frame (token): one empty position keeps the shapes valid
        return x.new_zeros(x.shape[0], 1, *x.shape[2:]), mask.new_zeros(mask.shape[0], 1)
    return x[:, :length], mask[:, :length]


def scatter(x: Tensor, sel: Tensor, shape: tuple[int, int]) -> Tensor:
    """Per-utterance values (N, ...) of the valid utterances -> (B, U, ...), zero at padding."""
    out = x.new_zeros(shape + tuple(x.shape[1:]))
    out[sel] = x
    return out
