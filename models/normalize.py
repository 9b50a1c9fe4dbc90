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

Standardising by a speaker's own spread makes every voice look equally expressive, and
Whisper's pooled states vary with *what* is said and how long as much as with how: a
synthetic voice reading varied lines varies more from line to line (0.8-1.1 of the
training variance) than an actor saying one sentence in eight emotions (0.4-0.6). So
directions of that content variation can be removed first (``nuisance``, nuisance
attribute projection as in speaker verification): :func:`fit_nuisance` finds them as the
principal within-speaker directions of voices that carry no emotion (the synthetic
voices of ``mixed``'s words-only dialogues). The projection is a fixed linear map
applied before the statistics, so causality and streaming-equals-batch are unchanged.
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
        self._basis = None if config.nuisance is None else np.asarray(config.nuisance, np.float64)
        self._scale = None if config.nuisance is None else np.asarray(config.nuisance_scale, np.float64)
        self._stats: dict[Hashable, _Stats] = {}

    def reset(self) -> None:
        self._stats.clear()

    def _project(self, x: np.ndarray) -> np.ndarray:
        x64 = np.asarray(x, np.float64)
        if x64.shape != self._mean0.shape:
            raise ValueError(f"speaker normalisation expects {self._mean0.shape[0]}-d audio vectors, got {x64.shape}")
        return x64 if self._basis is None else project_out(x64, self._basis, self._mean0, self._scale)

    def _updated(self, key: Hashable, x64: np.ndarray) -> _Stats:
        old = self._stats.get(key)
        if old is None:
            return _Stats(1, x64.copy(), x64 * x64)
        return _Stats(old.n + 1, old.total + x64, old.total_sq + x64 * x64)

    def _apply(self, stats: _Stats, x: np.ndarray) -> np.ndarray:
        w = self.config.prior_weight
        m = stats.total / stats.n
        v = np.maximum(stats.total_sq / stats.n - m * m, 0.0)
        mean = (stats.n * m + w * self._mean0) / (stats.n + w)
        var = (stats.n * v + w * self._var0) / (stats.n + w)
        return ((x - mean) / np.sqrt(var)).astype(np.float32)

    def peek(self, key: Hashable, x: np.ndarray) -> np.ndarray:
        """The standardised vector of ``x`` as the next utterance of ``key``, state unchanged."""
        x64 = self._project(x)
        return self._apply(self._updated(key, x64), x64)

    def push(self, key: Hashable, x: np.ndarray) -> np.ndarray:
        """Standardise ``x`` as the next utterance of ``key`` and count it in ``key``'s statistics."""
        x = self._project(x)
        stats = self._updated(key, x)
        if key not in self._stats and len(self._stats) >= self.max_speakers:
            self._stats.pop(next(iter(self._stats)))  # bounded: the oldest speaker is forgotten
        self._stats[key] = stats
        return self._apply(stats, x)

    def commit(self, key: Hashable, x: np.ndarray) -> None:
        """Count ``x`` for ``key`` (after a :meth:`peek` whose result was used)."""
        self.push(key, x)


def project_out(x: np.ndarray, basis: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``x`` (..., dim) without its components along ``basis``'s rows, which are orthonormal in
    the coordinates ``(x - centre) / scale``."""
    z = (x - centre) / scale
    return centre + (z - (z @ basis.T) @ basis) * scale


def fit_nuisance(groups: list[np.ndarray], dims: int, scale: np.ndarray) -> np.ndarray:
    """(dims, dim) orthonormal basis of the largest within-group variation of ``groups``.

    Each group is one voice that carries no emotion ((n_i, dim) audio vectors of one
    speaker); what varies inside a group is content, length and recording, not emotion.
    The variation is measured in units of ``scale`` (the training split's standard
    deviation per dimension), so a feature with a large range does not claim the basis
    alone (in raw units the same projection cost 3-5 points of acted-voice weighted F1 in
    a logistic-regression probe, docs/results.md).
    """
    rows = [np.asarray(g, np.float64) for g in groups if len(g) >= 2]
    rows = [g[np.isfinite(g).all(axis=1)] for g in rows]
    rows = [g for g in rows if len(g) >= 2]
    if not rows:
        raise ValueError("the nuisance projection needs at least one voice with two or more utterances")
    dim = rows[0].shape[1]
    if not 0 < dims < dim:
        raise ValueError(f"the nuisance projection takes 1 to {dim - 1} dimensions, got {dims}")
    centred = np.concatenate([(g - g.mean(axis=0)) / scale for g in rows])
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:dims].astype(np.float32)


def _floored_var(x: np.ndarray) -> np.ndarray:
    var = x.var(axis=0)
    return np.maximum(var, 1e-6 * max(float(var.mean()), 1e-12))


def fit_prior(
    vectors: np.ndarray,
    prior_weight: float = 4.0,
    nuisance_groups: list[np.ndarray] | None = None,
    nuisance_dims: int = 0,
) -> SpeakerNormPipeline:
    """The training split's mean and variance of the audio vector (variance floored); with
    ``nuisance_dims``, the :func:`fit_nuisance` directions of ``nuisance_groups`` are removed
    first and the variance is taken after."""
    x = np.asarray(vectors, np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) < 2:
        raise ValueError("speaker normalisation needs at least two training audio vectors")
    mean, var = x.mean(axis=0), _floored_var(x)
    if not nuisance_dims:
        return SpeakerNormPipeline(mean.astype(np.float32), var.astype(np.float32), prior_weight)
    scale = np.sqrt(var)
    basis = fit_nuisance(nuisance_groups or [], nuisance_dims, scale).astype(np.float64)
    var = _floored_var(project_out(x, basis, mean, scale))
    return SpeakerNormPipeline(
        mean.astype(np.float32), var.astype(np.float32), prior_weight, basis.astype(np.float32),
        scale.astype(np.float32),
    )
