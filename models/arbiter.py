"""Channel arbiter: the last word on an utterance, given what the fusion and each channel say.

A bimodal model answers three times per utterance in the live tracker: fused, with the text
withheld (the voice alone) and with the audio withheld (the words alone). Measured end to
end on voices and dialogues it never saw, the fused answer is *below* the better channel
on every set (``docs/results.md``): an unfamiliar voice pulls clear words toward an
emotion, neutral words pull an emotional voice toward neutral. The arbiter is a stacked
late fusion (multinomial logistic regression on the three answers' log-probabilities),
fitted on the validation split after training, so the weights say how far to trust each
channel given how it answered. It adds about 0.1 ms per utterance; the three answers are
computed anyway for the events' ``channels``.

Fitting is on the validation split (its dialogues and voices are disjoint from training),
with the regularisation chosen by dialogue-grouped cross-validation on it; the checkpoint
stores the weights as plain lists (``meta["arbiter"]``), so no pickle is involved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The answers the arbiter reads, in this order (each as C log-probabilities).
SOURCES = ("fused", "audio", "text")
#: Inverse regularisation strengths tried by cross-validation.
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
_FLOOR = 1e-6


def _features(fused: np.ndarray, audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """(N, C) probabilities of each source -> (N, 3C) log-probabilities."""
    parts = [np.log(np.clip(np.asarray(p, np.float64), _FLOOR, 1.0)) for p in (fused, audio, text)]
    if len({p.shape for p in parts}) != 1 or parts[0].ndim != 2:
        raise ValueError(f"the three answers must share one (N, C) shape, got {[p.shape for p in parts]}")
    return np.hstack(parts)


@dataclass(frozen=True)
class ChannelArbiter:
    """``combine(fused, audio, text) -> probabilities``: weights (C, 3C) and biases (C,)."""

    coef: np.ndarray
    intercept: np.ndarray
    c: float = 1.0

    def __post_init__(self) -> None:
        coef, intercept = np.asarray(self.coef, np.float64), np.asarray(self.intercept, np.float64)
        if coef.ndim != 2 or coef.shape[1] != len(SOURCES) * coef.shape[0] or intercept.shape != (coef.shape[0],):
            raise ValueError(f"arbiter weights must be (C, 3C) and (C,), got {coef.shape} and {intercept.shape}")
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)

    @property
    def num_classes(self) -> int:
        return self.coef.shape[0]

    def combine(self, fused: np.ndarray, audio: np.ndarray, text: np.ndarray) -> np.ndarray:
        """Probabilities (C,) of one utterance, or (N, C) of many, from the three answers."""
        one = np.ndim(fused) == 1
        x = _features(*(np.atleast_2d(p) for p in (fused, audio, text)))
        z = x @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p[0] if one else p

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "c": self.c, "sources": list(SOURCES)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelArbiter:
        if list(d.get("sources", SOURCES)) != list(SOURCES):
            raise ValueError(f"this arbiter reads {d.get('sources')}, this version reads {list(SOURCES)}")
        return cls(np.asarray(d["coef"]), np.asarray(d["intercept"]), float(d.get("c", 1.0)))


def fit_arbiter(
    fused: np.ndarray,
    audio: np.ndarray,
    text: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    c_grid: tuple[float, ...] = C_GRID,
    folds: int = 5,
) -> tuple[ChannelArbiter, dict[str, float]]:
    """Fit on validation answers; ``groups`` (dialogue ids) keep a dialogue inside one fold.

    Returns the arbiter refitted on all of it with the C of the best cross-validated log
    loss, and that loss per C (the report says what was chosen, and from what).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    x = _features(fused, audio, text)
    y = np.asarray(y)
    if len(np.unique(groups)) < folds:
        raise ValueError(f"the arbiter needs at least {folds} validation dialogues, got {len(np.unique(groups))}")
    classes = np.arange(num_classes)
    losses = {}
    for c in c_grid:
        total = 0.0
        for tr, te in GroupKFold(folds).split(x, y, groups):
            lr = LogisticRegression(C=c, max_iter=5000).fit(x[tr], y[tr])
            proba = np.full((len(te), num_classes), _FLOOR)
            proba[:, lr.classes_] = lr.predict_proba(x[te])
            total += log_loss(y[te], proba / proba.sum(1, keepdims=True), labels=classes) * len(te)
        losses[c] = total / len(y)
    best = min(losses, key=losses.get)
    lr = LogisticRegression(C=best, max_iter=5000).fit(x, y)
    if len(lr.classes_) < 3:
        raise ValueError(f"the arbiter needs at least three classes in validation, got {len(lr.classes_)}")
    coef = np.zeros((num_classes, x.shape[1]))
    intercept = np.full(num_classes, -30.0)  # a class validation never shows stays out of the answer
    coef[lr.classes_], intercept[lr.classes_] = lr.coef_, lr.intercept_
    log.info("arbiter: C %.3g chosen by grouped %d-fold log loss %s", best, folds, losses)
    return ChannelArbiter(coef, intercept, best), losses
