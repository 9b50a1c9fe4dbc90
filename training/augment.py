"""Audio augmentation that makes new voices and rooms out of the acted clips (the voice issue).

The acted corpora give the training split a few dozen voices in a few studios; the tracker
meets every other voice in every other room. Each augmented copy of a training voice is a
*new person in a new room*, held for the whole copy so that the per-speaker normalisation
sees one consistent voice: a speed perturbation (pitch and tempo together, the Kaldi recipe:
resampling, no vocoder), a gain, a synthetic room (exponentially decaying noise impulse
response), sometimes a telephone band, and background noise at a chosen SNR. The noise
realisation differs per clip.

The augmentation is applied to the raw clip *before* the live segmenter's cut
(:func:`training.extract.load_utterance_audio`), as a noisy room would reach the live
tracker: the VAD decides on the noisy signal. A spec is a short text (:meth:`Augmentation.key`)
kept on :class:`training.data.records.Utterance` and in the feature cache keys, so augmented
features are cached like any others and never mixed with the clean ones.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class Augmentation:
    """One new voice in one room. ``speed``: resampling factor (>1 faster and higher);
    ``rt60_s``: reverberation time of the synthetic room (0: dry); ``telephone``: 300-3400 Hz
    band at 8 kHz; ``snr_db``: background noise level (None: none), ``noise``: white or pink;
    ``gain_db``: level change; ``seed``: the noise realisation (per clip)."""

    speed: float = 1.0
    gain_db: float = 0.0
    rt60_s: float = 0.0
    telephone: bool = False
    snr_db: float | None = None
    noise: str = "pink"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.8 <= self.speed <= 1.25:
            raise ValueError(f"speed must be within 0.8-1.25, got {self.speed}")
        if not 0.0 <= self.rt60_s <= 1.5:
            raise ValueError(f"rt60_s must be within 0-1.5 s, got {self.rt60_s}")
        if self.noise not in ("white", "pink"):
            raise ValueError(f"noise must be white or pink, got {self.noise!r}")

    def key(self) -> str:
        """A stable text for records and cache keys; :func:`parse` reads it back."""
        snr = "none" if self.snr_db is None else f"{self.snr_db:.1f}"
        return (
            f"speed={self.speed:.3f},gain={self.gain_db:.1f},rt60={self.rt60_s:.2f},"
            f"tel={int(self.telephone)},snr={snr},noise={self.noise},seed={self.seed}"
        )

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float32 at 16 kHz -> (samples / speed,) float32."""
        x = np.asarray(audio, np.float64)
        if x.size == 0:
            return x.astype(np.float32)
        rng = np.random.default_rng(self.seed)
        level = _rms(x)
        if self.speed != 1.0:  # played faster: fewer samples at the same rate
            up = 200
            x = resample_poly(x, up, int(round(up * self.speed)))
        if self.rt60_s > 0:
            x = _reverberate(x, self.rt60_s, rng)
        if self.telephone:
            x = _telephone(x)
        if level > 0:
            x = x * (level / max(_rms(x), 1e-12))  # the room and the band keep the talker's level
        if self.snr_db is not None and level > 0:
            n = _noise(len(x), self.noise, rng)
            x = x + n * (level / 10 ** (self.snr_db / 20) / max(_rms(n), 1e-12))
        x = x * 10 ** (self.gain_db / 20)
        peak = np.abs(x).max()
        if peak > 0.99:  # a recorder would clip; keep the shape instead
            x = x * (0.99 / peak)
        return x.astype(np.float32)


def parse(key: str) -> Augmentation:
    """The :class:`Augmentation` whose :meth:`~Augmentation.key` is ``key``."""
    try:
        f = dict(item.split("=", 1) for item in key.split(","))
        return Augmentation(
            speed=float(f["speed"]),
            gain_db=float(f["gain"]),
            rt60_s=float(f["rt60"]),
            telephone=f["tel"] == "1",
            snr_db=None if f["snr"] == "none" else float(f["snr"]),
            noise=f["noise"],
            seed=int(f["seed"]),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not an augmentation spec: {key!r} ({exc})") from None


def draw(voice: str, copy: int, clip: str, seed: int = 0) -> Augmentation:
    """Copy ``copy`` of ``voice``: its person and room are drawn from (seed, voice, copy), the
    noise realisation from the clip too, so one copy of a voice is one consistent new voice."""
    rng = random.Random(f"augment:{seed}:{voice}:{copy}")
    speed = rng.choice((0.88, 0.92, 0.95, 1.05, 1.08, 1.12))
    gain_db = rng.uniform(-6.0, 6.0)
    rt60_s = rng.choice((0.0, rng.uniform(0.2, 0.8)))
    telephone = rng.random() < 0.15
    snr_db = rng.choice((None, rng.uniform(5.0, 15.0), rng.uniform(15.0, 30.0)))
    noise = rng.choice(("white", "pink"))
    clip_seed = int.from_bytes(hashlib.sha1(f"{seed}:{voice}:{copy}:{clip}".encode()).digest()[:4], "little")
    return Augmentation(
        round(speed, 3),
        round(gain_db, 1),
        round(rt60_s, 2),
        telephone,
        None if snr_db is None else round(snr_db, 1),
        noise,
        clip_seed,
    )


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _reverberate(x: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room: a direct path and exponentially decaying noise (-60 dB at rt60)."""
    n = int(rt60_s * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    rir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s) * 0.3
    rir[0] = 1.0
    return fftconvolve(x, rir)[: len(x)]


def _telephone(x: np.ndarray) -> np.ndarray:
    """Through an 8 kHz narrow-band channel and back: 300-3400 Hz."""
    sos = butter(4, (300, 3400), btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    return resample_poly(resample_poly(sosfilt(sos, x), 1, 2), 2, 1)[: len(x)]


def _noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)  # 1/f power: pink
