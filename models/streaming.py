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

import numpy as np
import torch
from torch import Tensor

from models.arbiter import ChannelArbiter
from models.base import EmotionModel
from models.batch import collate
from models.normalize import SpeakerNormalizer
from models.pipeline import SpeakerNormPipeline
from models.prior import PriorShift, SessionPrior

#: Key of an utterance's speaker for the per-speaker normalisation (None: the whole session).
NORM_KEY = "norm_key"


class StreamingClassifier:
    """``push(utterance features) -> class probabilities``; ``reset()`` starts a new dialogue."""

    def __init__(
        self,
        model: EmotionModel,
        temperature: float = 1.0,
        max_history: int = 512,
        speaker_norm: SpeakerNormPipeline | None = None,
        channel_temperatures: dict[str, float] | None = None,
        arbiter: ChannelArbiter | None = None,
        prior_shift: PriorShift | None = None,
    ) -> None:
        if not temperature > 0:
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
        self.normalizer = SpeakerNormalizer(speaker_norm) if speaker_norm is not None else None
        #: Temperature of each channel's own answer (fitted on validation with the other channel withheld).
        self.channel_temperatures = dict(channel_temperatures or {})
        self.last_channels: dict[str, Tensor] = {}
        #: Gives the answer from the fused and each channel's own (None: the fused answer as it is).
        self.arbiter = arbiter
        if arbiter is not None and arbiter.num_classes != model.num_classes:
            raise ValueError(f"the arbiter knows {arbiter.num_classes} classes, the model {model.num_classes}")
        #: Re-weights the answer by the session's own label prior (None: the training prior stands).
        self.session_prior = SessionPrior(prior_shift) if prior_shift is not None else None
        if self.session_prior is not None and self.session_prior.num_classes != model.num_classes:
            n = self.session_prior.num_classes
            raise ValueError(f"the session prior has {n} classes, the model {model.num_classes}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __len__(self) -> int:
        return len(self._history)

    def reset(self) -> None:
        self._history.clear()
        if self.normalizer is not None:
            self.normalizer.reset()
        if self.session_prior is not None:
            self.session_prior.reset()

    @torch.inference_mode()
    def push(self, utterance: dict[str, Any], per_channel: bool = False) -> Tensor:
        """Features of one utterance (see :func:`models.batch.collate`) -> probabilities (C,).

        With speaker normalisation the raw ``audio`` vector is standardised by the running
        statistics of the utterance's ``norm_key`` (speaker) first; the statistics count it
        only once the model has run, so a failed utterance leaves no trace there either.
        With ``per_channel`` each channel's own answer for this utterance (the other one
        withheld, the history as it is) is left in :attr:`last_channels`. With an
        :attr:`arbiter` the answer is its combination of the three (the fused one alone when a
        channel is missing from this utterance). With a :attr:`session_prior` that answer is
        re-weighted by the session's label prior so far (the channels' own answers are not).
        """
        key = utterance.get(NORM_KEY)
        utterance = {k: v for k, v in utterance.items() if k != NORM_KEY}
        raw_audio = None
        if self.normalizer is not None and utterance.get("audio") is not None and utterance.get("audio_present", True):
            raw_audio = np.asarray(utterance["audio"], np.float32)
            utterance["audio"] = torch.from_numpy(self.normalizer.peek(key, raw_audio))
        window = [*self._history, utterance][-self._history.maxlen :]
        probs, channels = self._answers(window, per_channel or self.arbiter is not None)
        if self.arbiter is not None and {"audio", "text"} <= set(channels):
            combined = self.arbiter.combine(probs.numpy(), channels["audio"].numpy(), channels["text"].numpy())
            probs = torch.from_numpy(combined.astype(np.float32))
        if self.session_prior is not None:
            probs = torch.from_numpy(self.session_prior.push(probs.numpy()).astype(np.float32))
        self.last_channels = channels if per_channel else {}
        self._history.append(utterance)  # only once it worked: a bad utterance leaves no trace
        if raw_audio is not None:
            self.normalizer.commit(key, raw_audio)
        return probs

    def _answers(self, window: list[dict[str, Any]], per_channel: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """The fused probabilities of the newest utterance and, with ``per_channel`` (bimodal models
        only), each channel's own: the other channel withheld from the newest utterance, the
        history as it is. All of them in one batched forward pass (one window each)."""
        variants: list[tuple[str, list[dict[str, Any]], float]] = [("fused", window, self.temperature)]
        last = window[-1]
        if per_channel and all(name in last and name in self.model.inputs for name in ("audio", "text")):
            flagged = [
                {**u, "audio_present": u.get("audio_present", True), "text_present": u.get("text_present", True)}
                for u in window
            ]
            variants = [("fused", flagged, self.temperature)]
            for keep, hide in (("audio", "text"), ("text", "audio")):
                if not flagged[-1][f"{keep}_present"]:
                    continue
                only = dict(flagged[-1])
                only[hide] = torch.zeros_like(torch.as_tensor(only[hide]))
                only[f"{hide}_present"] = False
                variants.append((keep, [*flagged[:-1], only], self.channel_temperatures.get(keep, self.temperature)))
        batch = collate([w for _, w, _ in variants]).to(self.device)
        self.model.check_inputs(batch)
        # The history already is the window: run the context forward on it directly.
        logits = self.model.forward_context(batch.masked()).logits[:, -1].float()
        answers = {name: torch.softmax(z / t, dim=-1).cpu() for z, (name, _, t) in zip(logits, variants)}
        fused = answers.pop("fused")
        return fused, answers
