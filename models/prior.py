"""The session's own label prior: a causal, label-free correction for prior shift.

A classifier's posteriors carry the label shares of its training data: trained on dialogue
data that are about half neutral, the bundled model answers neutral for a third of a session
of balanced acted emotions, whatever it hears (docs/results.md). How often each emotion
occurs differs from one conversation to the next, and the posteriors themselves say how:
Saerens, Latinne and Decaestecker (2002, "Adjusting the outputs of a classifier to new a
priori probabilities") re-weight each posterior by the ratio of the new prior to the
training one, estimating the new prior from the re-weighted posteriors (EM). Here it runs
online, one utterance at a time: the session's prior so far is the training prior worth
``weight`` utterances plus the adjusted posteriors of the utterances before this one, so it
never uses the future and starts as the unadjusted model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PriorShift:
    """``prior``: the class shares the model's calibrated posteriors imply (their mean on the
    validation split); ``weight``: how many utterances' worth of trust it keeps in a session."""

    prior: tuple[float, ...]
    weight: float

    def __post_init__(self) -> None:
        p = np.asarray(self.prior, dtype=np.float64)
        if p.ndim != 1 or len(p) < 2 or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError(f"prior must hold at least two positive class shares, got {self.prior!r}")
        if not math.isclose(float(p.sum()), 1.0, abs_tol=1e-3):
            raise ValueError(f"prior must sum to 1, got {float(p.sum()):.4f}")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"weight must be a positive number of utterances, got {self.weight!r}")

    def to_dict(self) -> dict:
        return {"prior": [float(x) for x in self.prior], "weight": float(self.weight)}

    @classmethod
    def from_dict(cls, spec: dict) -> PriorShift:
        return cls(tuple(float(x) for x in spec["prior"]), float(spec["weight"]))


class SessionPrior:
    """``push(probs) -> probs`` re-weighted by the session's prior so far; ``reset()`` for a new session.

    State: the sum of the adjusted posteriors so far and their count. Bounded and causal.
    """

    def __init__(self, shift: PriorShift) -> None:
        self.shift = shift
        self._train = np.asarray(shift.prior, dtype=np.float64)
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self._train)

    def reset(self) -> None:
        self._sum = self._train * self.shift.weight
        self._count = self.shift.weight

    @property
    def estimate(self) -> np.ndarray:
        """The session's prior as estimated from the utterances so far."""
        return self._sum / self._count

    def push(self, probs: np.ndarray) -> np.ndarray:
        """(C,) calibrated posterior of the newest utterance -> (C,) adjusted posterior."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != self._train.shape:
            raise ValueError(f"expected {self.num_classes} class probabilities, got shape {p.shape}")
        q = p * self.estimate / self._train
        total = q.sum()
        q = q / total if total > 0 and np.isfinite(total) else p
        self._sum = self._sum + q
        self._count += 1
        return q

    def run(self, probs: np.ndarray) -> np.ndarray:
        """(N, C) posteriors of one session in order -> (N, C) adjusted (from a fresh state)."""
        self.reset()
        return np.stack([self.push(p) for p in probs]) if len(probs) else np.zeros((0, self.num_classes))
