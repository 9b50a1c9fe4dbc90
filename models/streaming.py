"""One utterance at a time: the dialogue state a live tracker keeps for a model.

In ``online`` mode the classifier holds the last ``K`` utterances and runs the
model on exactly that window, so its output equals the batch forward on the same
prefix. In ``offline`` mode (a paper-style model) it can only use the past it has
seen, up to ``max_history`` utterances to keep memory bounded; its outputs then
differ from the offline batch forward, which also sees the future.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from models.base import EmotionModel
from models.batch import collate


class StreamingClassifier:
    """``push(utterance features) -> class probabilities``; ``reset()`` starts a new dialogue."""

    def __init__(self, model: EmotionModel, temperature: float = 1.0, max_history: int = 512) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model.eval()
        self.temperature = temperature
        ctx = model.context
        if not model.uses_context:
            size = 1
        elif ctx.mode == "online":
            size = ctx.window
        else:
            size = max_history
        self._history: deque[dict[str, Any]] = deque(maxlen=size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __len__(self) -> int:
        return len(self._history)

    def reset(self) -> None:
        self._history.clear()

    @torch.inference_mode()
    def push(self, utterance: dict[str, Any]) -> Tensor:
        """Features of one utterance (see :func:`models.batch.collate`) -> probabilities (C,)."""
        window = [*self._history, utterance][-self._history.maxlen :]
        batch = collate([window]).to(self.device)
        self.model.check_inputs(batch)
        # The history already is the window: run the context forward on it directly.
        logits = self.model.forward_context(batch.masked()).logits[0, -1]
        probs = torch.softmax(logits.float() / self.temperature, dim=-1).cpu()
        self._history.append(utterance)  # only once it worked: a bad utterance leaves no trace
        return probs
