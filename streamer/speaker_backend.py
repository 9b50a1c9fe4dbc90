"""Speaker back end: a fixed linear map of GE2E voice vectors that keeps who speaks and drops how.

A GE2E vector mixes the person with the way they speak: one acted voice angry and calm is
often less similar than two people both angry. The back end is nuisance attribute projection
(NAP, the classic session-variability removal of speaker verification): subtract the training
voices' mean vector, then remove the ``K`` directions along which utterances of *one* person
vary most (the top eigenvectors of the within-speaker covariance: emotion, style, words,
recording), and compare what is left by cosine. It is fitted on training-split voices only
(RAVDESS and EmoDB train actors, URDU train speakers and the espeak-ng training voices of
:data:`training.data.tts.VOICE_SPLITS`) by ``python -m training speakers --fit-projection``;
on validation conversations it lifts mean attribution over the six sets from 0.81 to 0.90
(docs/results.md; LDA to 32-48 dims was close behind).

The map ships as ``assets/speaker_projection.npz``: plain float32 arrays read with
``np.load(allow_pickle=False)``, so loading it never runs code. It is applied inside
:class:`streamer.speakers.SpeakerTracker`, which is what both ``ser-live`` and the
``training speakers`` evaluation push raw vectors through, so the two cannot apply it differently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: The shipped back end (rebuilt by ``python -m training speakers --fit-projection``).
PROJECTION_PATH = Path(__file__).parent / "assets" / "speaker_projection.npz"
#: Version of the .npz layout; a file of another version is refused rather than misread.
PROJECTION_FORMAT = 1
REBUILD = "python -m training speakers --fit-projection"


@dataclass(frozen=True, eq=False)
class Projection:
    """``apply(x)``: unit rows of ``(x - mean)`` with the ``nuisance`` directions removed.

    ``mean`` (D,); ``nuisance`` (D, K) with orthonormal columns; ``info`` says what it was fitted on.
    The output keeps the input's size (D), so a tracker's state looks the same with or without it.
    """

    mean: np.ndarray
    nuisance: np.ndarray
    info: str = ""

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project a vector (D,) or rows (N, D); float32, unit length (a zero row stays zero)."""
        x = np.asarray(x, np.float32)
        if x.shape[-1] != self.dim:
            raise ValueError(f"the speaker projection takes {self.dim}-d voice vectors, got {x.shape[-1]}-d")
        y = x - self.mean
        y = y - (y @ self.nuisance) @ self.nuisance.T
        norm = np.linalg.norm(y, axis=-1, keepdims=True)
        return (y / np.maximum(norm, 1e-8)).astype(np.float32)

    def save(self, path: Path | str) -> None:
        """Write plain arrays only (no pickled objects), compressed."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            format=np.int64(PROJECTION_FORMAT),
            mean=self.mean.astype(np.float32),
            nuisance=self.nuisance.astype(np.float32),
            info=np.str_(self.info),
        )


def load_projection(path: Path | str) -> Projection:
    """Read a projection written by :meth:`Projection.save`; a malformed file is one ValueError sentence."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"speaker projection {path} does not exist (rebuild: {REBUILD})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:  # object arrays need pickle: refused, as is a file that is not an .npz
        raise ValueError(f"speaker projection {path} is not a plain-array .npz: {exc}") from exc
    missing = [k for k in ("format", "mean", "nuisance") if k not in arrays]
    if missing:
        raise ValueError(f"speaker projection {path} lacks {', '.join(missing)}")
    if int(arrays["format"]) != PROJECTION_FORMAT:
        raise ValueError(f"speaker projection {path} has format {int(arrays['format'])}, expected {PROJECTION_FORMAT}")
    mean = np.asarray(arrays["mean"], np.float32)
    nuisance = np.asarray(arrays["nuisance"], np.float32)
    if mean.ndim != 1 or nuisance.ndim != 2 or not nuisance.shape[1] < nuisance.shape[0] == mean.shape[0]:
        shapes = f"mean {mean.shape} and nuisance {nuisance.shape}"
        raise ValueError(f"speaker projection {path} has {shapes}: not (D,) and (D, K < D)")
    if not (np.isfinite(mean).all() and np.isfinite(nuisance).all()):
        raise ValueError(f"speaker projection {path} holds non-finite values")
    if not np.allclose(nuisance.T @ nuisance, np.eye(nuisance.shape[1]), atol=1e-3):
        raise ValueError(f"speaker projection {path}: the nuisance directions are not orthonormal")
    return Projection(mean, nuisance, str(arrays.get("info", "")))


@lru_cache(maxsize=4)
def cached_projection(path: str) -> Projection:
    """One load per file per process (every tracker of a batch run shares it; it is never modified)."""
    projection = load_projection(path)
    log.debug("speaker projection %s: %d of %d directions removed", path, projection.nuisance.shape[1], projection.dim)
    return projection


def fit_nap(vectors: np.ndarray, speakers: list[str] | np.ndarray, k: int, info: str = "") -> Projection:
    """NAP from labelled vectors: remove the top ``k`` eigenvectors of the within-speaker covariance.

    Each speaker's covariance is weighted equally (a voice with many clips does not dominate), so
    the removed directions are the ones along which *people in general* vary between utterances.
    """
    x = np.asarray(vectors, np.float64)
    labels = np.asarray(speakers)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"fit_nap needs (N, D) vectors and N labels, got {x.shape} and {len(labels)}")
    names = sorted(set(labels.tolist()))
    if len(names) < 2 or not 1 <= k < x.shape[1]:
        raise ValueError(f"fit_nap needs at least 2 speakers and 1 <= k < {x.shape[1]}, got {len(names)} and {k}")
    within = np.zeros((x.shape[1], x.shape[1]))
    for name in names:
        own = x[labels == name]
        centred = own - own.mean(axis=0)
        within += centred.T @ centred / len(own)
    _, vecs = np.linalg.eigh(within / len(names))
    nuisance = vecs[:, ::-1][:, :k]
    return Projection(x.mean(axis=0).astype(np.float32), nuisance.astype(np.float32), info)
