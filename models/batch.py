"""Padded dialogue batches and the windowing that makes `online` context exact.

A :class:`Batch` holds one or more dialogues, right-padded to the same number of
utterances ``U``. Every per-utterance field starts with the ``(B, U)`` dims, so the
same gather code windows all of them, whatever inputs a model uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

# Fields that carry per-utterance data with leading (B, U) dims.
UTTERANCE_FIELDS = (
    "audio",
    "text",
    "speaker",
    "commonsense",
    "frames",
    "frame_mask",
    "tokens",
    "token_mask",
    "audio_present",
    "text_present",
)


@dataclass
class Batch:
    """Inputs of the fusion models for ``B`` dialogues of up to ``U`` utterances.

    ``mask`` is True for real utterances. Padding must sit on the right, so the
    valid utterances of dialogue ``b`` are ``0..mask[b].sum()-1``. Optional fields:

    - ``audio`` (B, U, Da): utterance-level acoustic vector (selected openSMILE functionals).
    - ``text`` (B, U, Dt): utterance-level text vector (encoder, mean of last 4 layers).
    - ``speaker`` (B, U) long: speaker index per utterance, when known.
    - ``commonsense`` (B, U, 3, Dc): external/internal/purpose relation vectors.
    - ``frames`` (B, U, T, F) with ``frame_mask`` (B, U, T): frame-level audio (MCFN).
    - ``tokens`` (B, U, L, Dt) with ``token_mask`` (B, U, L): token-level text (MCFN).
    - ``audio_present`` / ``text_present`` (B, U) bool: False where a modality was
      dropped (modality dropout) or is unavailable; models may use it to ignore it.
    """

    mask: Tensor
    audio: Tensor | None = None
    text: Tensor | None = None
    speaker: Tensor | None = None
    commonsense: Tensor | None = None
    frames: Tensor | None = None
    frame_mask: Tensor | None = None
    tokens: Tensor | None = None
    token_mask: Tensor | None = None
    audio_present: Tensor | None = None
    text_present: Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    def to(self, device: torch.device | str) -> Batch:
        return self.map(lambda t: t.to(device))

    def map(self, fn) -> Batch:
        """Apply ``fn`` to every tensor field (the mask included)."""
        values = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            values[f.name] = fn(v) if isinstance(v, Tensor) else v
        return Batch(**values)

    def lengths(self) -> Tensor:
        """(B,) number of valid utterances per dialogue."""
        return self.mask.long().sum(dim=1)

    def windows(self, window: int) -> tuple[Batch, Tensor]:
        """Cut one left-truncated window per valid utterance.

        For utterance ``t`` of dialogue ``b`` the window holds utterances
        ``max(0, t-K+1)..t`` at positions ``0..n-1`` (right padding), which is
        exactly what a live tracker holding the last ``K`` utterances sees.
        Returns the windows as a batch of ``N`` dialogues (N = valid utterances) and
        the ``(N, 2)`` index of ``(b, t)`` each window ends at.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        index = self.mask.nonzero(as_tuple=False)  # (N, 2), row-major: b then t
        b, t = index[:, 0], index[:, 1]
        offsets = torch.arange(window, device=self.mask.device)
        n = torch.clamp(t + 1, max=window)  # utterances in each window
        start = t + 1 - n
        pos = start[:, None] + offsets[None, :]  # (N, K)
        valid = offsets[None, :] < n[:, None]
        pos = torch.where(valid, pos, torch.zeros_like(pos))
        bb = b[:, None].expand_as(pos)

        def gather(x: Tensor) -> Tensor:
            out = x[bb, pos]
            zero = torch.zeros((), dtype=out.dtype, device=out.device)
            shape = valid.shape + (1,) * (out.dim() - 2)
            return torch.where(valid.view(shape), out, zero)

        values = {"mask": valid}
        for name in UTTERANCE_FIELDS:
            v = getattr(self, name)
            values[name] = gather(v) if v is not None else None
        return Batch(**values), index

    def masked(self) -> Batch:
        """Zero every per-utterance field at padded positions.

        Padding content must not matter; zeroing it makes convolutions over the
        utterance axis see the same zeros as their own boundary padding.
        """
        m = self.mask

        def zero(x: Tensor) -> Tensor:
            shape = m.shape + (1,) * (x.dim() - 2)
            return torch.where(m.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))

        values = {"mask": m}
        for name in UTTERANCE_FIELDS:
            v = getattr(self, name)
            values[name] = zero(v) if v is not None else None
        return Batch(**values)


def scatter_windows(values: Tensor, index: Tensor, shape: tuple[int, int]) -> Tensor:
    """Put per-window results ``(N, ...)`` back at their ``(b, t)`` in ``(B, U, ...)``."""
    out = values.new_zeros(shape + tuple(values.shape[1:]))
    out[index[:, 0], index[:, 1]] = values
    return out


def collate(dialogues: list[list[dict]]) -> Batch:
    """Pad dialogues of per-utterance dicts into one :class:`Batch`.

    Each utterance is a dict of field -> value: ``audio`` (Da,), ``text`` (Dt,),
    ``speaker`` int, ``commonsense`` (3, Dc), ``frames`` (T, F), ``tokens`` (L, Dt),
    ``audio_present``/``text_present`` bool. Variable-length ``frames``/``tokens`` are
    padded with their masks. A field must be in all utterances or in none.
    """
    if not dialogues or any(len(d) == 0 for d in dialogues):
        raise ValueError("collate needs at least one dialogue and no empty dialogue")
    b, u = len(dialogues), max(len(d) for d in dialogues)
    mask = torch.zeros(b, u, dtype=torch.bool)
    for i, d in enumerate(dialogues):
        mask[i, : len(d)] = True
    keys = set(dialogues[0][0])
    for d in dialogues:
        for utt in d:
            if set(utt) != keys:
                raise ValueError(f"utterances disagree on their fields: {sorted(set(utt) ^ keys)}")
    values: dict[str, Tensor] = {"mask": mask}
    for key in keys:
        items = [[torch.as_tensor(utt[key]) for utt in d] for d in dialogues]
        if key in ("frames", "tokens"):
            values[key], values[key[:-1] + "_mask"] = _pad_sequences(items, b, u)
            continue
        first = items[0][0]
        out = torch.zeros(
            (b, u) + tuple(first.shape), dtype=first.dtype if first.dtype != torch.float64 else torch.float32
        )
        for i, d in enumerate(items):
            for j, x in enumerate(d):
                out[i, j] = x
        values[key] = out
    return Batch(**values)


def _pad_sequences(items: list[list[Tensor]], b: int, u: int) -> tuple[Tensor, Tensor]:
    length = max(x.shape[0] for d in items for x in d)
    feat = items[0][0].shape[1:]
    out = torch.zeros((b, u, length) + tuple(feat), dtype=torch.float32)
    mask = torch.zeros(b, u, length, dtype=torch.bool)
    for i, d in enumerate(items):
        for j, x in enumerate(d):
            out[i, j, : x.shape[0]] = x
            mask[i, j, : x.shape[0]] = True
    return out, mask
