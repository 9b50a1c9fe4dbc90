"""Audio input checks and frame-level log-mel features (MCFN-style models).

Separate from :mod:`streamer.features` so the plain-numpy signal processing can be
read and tested on its own. It is also the bottom of the feature modules: it holds
:class:`FeatureError` and :func:`check_audio`, which every extractor shares, so
:mod:`streamer.text_encoder` and :mod:`streamer.features` import from here and no
import cycle is possible. Plain numpy, no model loading.
"""

from __future__ import annotations

import numpy as np

from models.pipeline import FramePipeline


class FeatureError(ValueError):
    """A feature extractor cannot be built or fed as asked (one sentence naming the fix)."""


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Mono float audio in [-1, 1] as contiguous float32; anything else is a caller bug."""
    x = np.asarray(audio)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise FeatureError(f"expected mono float audio of shape (n,), got {x.dtype} {x.shape}: downmix and scale first")
    if not np.isfinite(x).all():
        raise FeatureError("audio contains NaN or inf samples: check the decoder or the capture device")
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- log-mel


class LogMelExtractor:
    """``audio (n,) -> (T, n_mels * (3 if deltas else 1))`` float32, normalised per utterance.

    Plain numpy (no torchaudio): Hann-windowed power spectrum, HTK-mel triangles,
    log (floored 100 dB below the peak), HTK regression deltas (N=2), then per-utterance mean/variance
    normalisation so the model sees the shape of the spectrum, not the gain.
    Longer audio keeps its first ``max_frames`` frames.
    """

    def __init__(
        self,
        n_mels: int = 40,
        deltas: bool = True,
        hop_ms: int = 10,
        win_ms: int = 25,
        max_frames: int = 600,
        sample_rate_hz: int = 16000,
    ) -> None:
        if n_mels < 1 or hop_ms <= 0 or win_ms <= 0 or max_frames < 1 or sample_rate_hz <= 0:
            raise FeatureError("log-mel needs n_mels, hop_ms, win_ms, max_frames and sample_rate_hz all positive")
        self.n_mels, self.deltas, self.max_frames = n_mels, deltas, max_frames
        self.sample_rate_hz = sample_rate_hz
        self.hop = sample_rate_hz * hop_ms // 1000
        self.win = sample_rate_hz * win_ms // 1000
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.window = np.hanning(self.win + 1)[:-1].astype(np.float32)  # periodic Hann
        self.filters = _mel_filters(n_mels, self.n_fft, sample_rate_hz)

    @classmethod
    def from_pipeline(cls, p: FramePipeline) -> LogMelExtractor:
        return cls(p.n_mels, p.deltas, p.hop_ms, p.win_ms, p.max_frames)

    @property
    def dim(self) -> int:
        return self.n_mels * (3 if self.deltas else 1)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        x = check_audio(audio)
        if len(x) < self.win:
            x = np.pad(x, (0, self.win - len(x)))
        n = min(1 + (len(x) - self.win) // self.hop, self.max_frames)
        idx = np.arange(self.win)[None, :] + self.hop * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(x[idx] * self.window, n=self.n_fft, axis=1)) ** 2
        mel = (spec @ self.filters.T).astype(np.float64)  # float64 statistics: float32 sums drift by ~1e-5
        # Floor 100 dB below the loudest band: exact digital silence cannot dominate, and gain cancels out.
        feats = np.log(np.maximum(mel, max(float(mel.max()), 1e-30) * 1e-10))
        if self.deltas:
            d1 = _deltas(feats)
            feats = np.concatenate([feats, d1, _deltas(d1)], axis=1)
        std = feats.std(0)
        feats = (feats - feats.mean(0)) / np.where(std > 1e-5, std, 1.0)  # constant bands stay ~0
        return feats.astype(np.float32)


def _mel_filters(n_mels: int, n_fft: int, sample_rate_hz: int, fmin_hz: float = 20.0) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangles evenly spaced on the HTK mel scale, interpolated so none is empty."""
    mel = np.linspace(_hz_to_mel(fmin_hz), _hz_to_mel(sample_rate_hz / 2), n_mels + 2)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    freqs = np.linspace(0, sample_rate_hz / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _deltas(x: np.ndarray, n: int = 2) -> np.ndarray:
    """HTK regression deltas over time (axis 0), edges replicated."""
    pad = np.pad(x, ((n, n), (0, 0)), mode="edge")
    t = len(x)
    num = sum(i * (pad[n + i : n + i + t] - pad[n - i : n - i + t]) for i in range(1, n + 1))
    return num / (2 * sum(i * i for i in range(1, n + 1)))
