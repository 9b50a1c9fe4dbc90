"""Causal per-speaker standardisation of the audio vector.

An unfamiliar voice shifts every acoustic feature (pitch, timbre, loudness, room);
standardising each speaker's vectors by that speaker's own statistics removes most of
the shift (worth 6-18 weighted-F1 points on unseen voices, see the voice issue). A
live tracker only knows the past, so the statistics are running ones: utterance ``t``
is standardised with the mean and variance of that speaker's utterances ``0..t``
(itself included), shrunk toward the training prior while few are seen::

    mean_t = (n * m_n + w * prior_mean) / (n + w)
    var_t  = (n * v_n + w * prior_var)  / (n + w)

with ``n`` the speaker's utterance count, ``m_n``/``v_n`` their mean and (biased)
variance and ``w`` the prior weight. Nothing at ``t`` depends on later utterances,
and training applies the same object in dialogue order, so streaming equals batch.

Speakers are keys: a stereo channel's speaker, a tracked speaker, or ``None`` for
"the whole session" (mono, until speakers are tracked).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from models.pipeline import SpeakerNormPipeline


@dataclass
class _Stats:
    n: int
    total: np.ndarray  # float64 sums: exact enough over hours
    total_sq: np.ndarray


class SpeakerNormalizer:
    """``push(key, x) -> z``; ``peek`` gives the same without updating; ``reset()`` forgets everyone.

    Memory is one pair of sums per speaker key.
    """

    def __init__(self, config: SpeakerNormPipeline, max_speakers: int = 64) -> None:
        self.config = config
        self.max_speakers = max_speakers
        self._mean0 = np.asarray(config.prior_mean, np.float64)
        self._var0 = np.asarray(config.prior_var, np.float64)
        self._stats: dict[Hashable, _Stats] = {}

    def reset(self) -> None:
        self._stats.clear()

    def _updated(self, key: Hashable, x: np.ndarray) -> _Stats:
        old = self._stats.get(key)
        x64 = np.asarray(x, np.float64)
        if x64.shape != self._mean0.shape:
            raise ValueError(f"speaker normalisation expects {self._mean0.shape[0]}-d audio vectors, got {x64.shape}")
        if old is None:
            return _Stats(1, x64.copy(), x64 * x64)
        return _Stats(old.n + 1, old.total + x64, old.total_sq + x64 * x64)

    def _apply(self, stats: _Stats, x: np.ndarray) -> np.ndarray:
        w = self.config.prior_weight
        m = stats.total / stats.n
        v = np.maximum(stats.total_sq / stats.n - m * m, 0.0)
        mean = (stats.n * m + w * self._mean0) / (stats.n + w)
        var = (stats.n * v + w * self._var0) / (stats.n + w)
        return ((np.asarray(x, np.float64) - mean) / np.sqrt(var)).astype(np.float32)

    def peek(self, key: Hashable, x: np.ndarray) -> np.ndarray:
        """The standardised vector of ``x`` as the next utterance of ``key``, state unchanged."""
        return self._apply(self._updated(key, x), x)

    def push(self, key: Hashable, x: np.ndarray) -> np.ndarray:
        """Standardise ``x`` as the next utterance of ``key`` and count it in ``key``'s statistics."""
        stats = self._updated(key, x)
        if key not in self._stats and len(self._stats) >= self.max_speakers:
            self._stats.pop(next(iter(self._stats)))  # bounded: the oldest speaker is forgotten
        self._stats[key] = stats
        return self._apply(stats, x)

    def commit(self, key: Hashable, x: np.ndarray) -> None:
        """Count ``x`` for ``key`` (after a :meth:`peek` whose result was used)."""
        self.push(key, x)


def fit_prior(vectors: np.ndarray, prior_weight: float = 4.0) -> SpeakerNormPipeline:
    """The training split's mean and variance of the audio vector (variance floored)."""
    x = np.asarray(vectors, np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 2:
        raise ValueError("speaker normalisation needs at least two training audio vectors")
    var = x.var(axis=0)
    var = np.maximum(var, 1e-6 * max(float(var.mean()), 1e-12))
    return SpeakerNormPipeline(x.mean(axis=0).astype(np.float32), var.astype(np.float32), prior_weight)
