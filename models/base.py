"""The contract every fusion model keeps, and the online/offline context switch.

A model implements :meth:`EmotionModel.forward_context`: it classifies every valid
utterance of right-padded dialogues using all the utterances it is given. The
base class turns that into the two context modes:

- ``offline``: the whole dialogue is the context (paper-style benchmarks);
- ``online``: utterance ``t`` sees only ``max(0, t-K+1)..t``. The batch forward
  cuts exactly those windows, so a streaming tracker holding the last ``K``
  utterances reproduces the batch output (see :mod:`models.streaming`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from models.batch import Batch, scatter_windows

CONTEXT_MODES = ("offline", "online")


@dataclass(frozen=True)
class ContextConfig:
    """Which utterances a prediction may look at."""

    mode: str = "online"
    window: int = 16

    def __post_init__(self) -> None:
        if self.mode not in CONTEXT_MODES:
            raise ValueError(f"context mode must be one of {CONTEXT_MODES}, got {self.mode!r}")
        if self.window < 1:
            raise ValueError(f"context window must be >= 1 utterance, got {self.window}")


@dataclass
class ModelOutput:
    """``logits`` (B, U, C) plus named representations the training losses need.

    ``reps`` values are per-utterance tensors with leading (B, U) dims, e.g. HBAF's
    ``h_a``, ``h_l``, ``h_m``, or extra heads' logits.
    """

    logits: Tensor
    reps: dict[str, Tensor] = field(default_factory=dict)


class EmotionModel(nn.Module):
    """Base class: subclasses set ``name``, ``inputs`` and implement ``forward_context``."""

    name: ClassVar[str] = ""
    #: Batch fields the model reads ("audio", "text", "frames", "tokens", ...).
    inputs: ClassVar[tuple[str, ...]] = ()
    #: Whether the model's output at t depends on other utterances at all.
    uses_context: ClassVar[bool] = True

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    @property
    def context(self) -> ContextConfig:
        return self.config.context

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward_context(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Batch) -> ModelOutput:
        """(B, U, ...) dialogues -> logits (B, U, C), under the configured context mode."""
        self.check_inputs(batch)
        batch = batch.masked()
        if self.context.mode == "offline" or not self.uses_context:
            return self.forward_context(batch)
        windows, index = batch.windows(self.context.window)
        out = self.forward_context(windows)
        shape = batch.shape
        logits = scatter_windows(last_valid(out.logits, windows.mask), index, shape)
        reps = {k: scatter_windows(last_valid(v, windows.mask), index, shape) for k, v in out.reps.items()}
        return ModelOutput(logits=logits, reps=reps)

    def check_inputs(self, batch: Batch) -> None:
        missing = [name for name in self.inputs if getattr(batch, name) is None]
        if missing:
            raise ValueError(f"model {self.name!r} needs batch fields {missing}; the batch lacks them")


def last_valid(x: Tensor, mask: Tensor) -> Tensor:
    """(B, U, ...) -> (B, ...): the entry at each dialogue's last valid utterance."""
    last = mask.long().sum(1) - 1
    return x[torch.arange(x.shape[0], device=x.device), last]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available: use --device auto or cpu")
    return dev
