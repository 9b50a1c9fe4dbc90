"""Utterance features for the fusion models, shared by the live tracker and training.

One place so that training and live inference cannot drift apart: openSMILE
functionals (standardised and SVM-selected as the checkpoint's
:class:`~models.pipeline.AudioPipeline` says) live here, together with
:class:`FeatureExtractor`, which builds whatever a checkpoint's pipeline asks for.
The text encoder (mean of its last 4 layers) is in :mod:`streamer.text_encoder`
and frame-level log-mel in :mod:`streamer.frames`.
Models are only ever loaded from local files; ser-live never downloads.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import torch

from models.pipeline import AudioPipeline, FeaturePipeline, TextPipeline
from streamer.frames import FeatureError, LogMelExtractor, check_audio
from streamer.text_encoder import TextEncoder

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- per utterance


class FeatureExtractor:
    """Builds exactly the extractors a checkpoint's :class:`FeaturePipeline` asks for.

    ``utterance(audio, text)`` returns the per-utterance dict that
    :func:`models.batch.collate` and :meth:`models.StreamingClassifier.push` take,
    plus milliseconds per stage for the latency display.
    """

    def __init__(
        self,
        pipeline: FeaturePipeline,
        text_encoder: TextEncoder | None = None,
        device: str = "auto",
        whisper_encoder=None,
        text_runtime: str = "auto",
    ) -> None:
        """``whisper_encoder``: a :class:`streamer.asr.Transcriber` to take the Whisper
        features from when it is the pipeline's encoder under the pipeline's policy (the
        live ASR: one encoder pass then serves both); otherwise one is loaded here."""
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
            self.text_encoder = text_encoder or TextEncoder.from_pipeline(spec, device, text_runtime)
        self.logmel = LogMelExtractor.from_pipeline(p.frames) if p.frames is not None else None
        self.whisper = None
        self.shares_encoder = False
        if p.whisper is not None:
            from streamer.asr import EncodePolicy, Transcriber

            policy = EncodePolicy(p.whisper.min_window_s, p.whisper.pad_s)
            if whisper_encoder is not None and encoder_matches(whisper_encoder, p.whisper):
                self.whisper, self.shares_encoder = whisper_encoder, True
            else:
                self.whisper = Transcriber(p.whisper.encoder, device=device, policy=policy)
                log.info("the audio features' Whisper encoder (%s) runs apart from the ASR model", p.whisper.encoder)
        self.check_compatible()

    def check_compatible(self) -> None:
        """Refuse a pipeline these extractors cannot reproduce (one sentence naming the mismatch)."""
        p = self.pipeline
        if self.opensmile is not None and len(p.audio.mean) != self.opensmile.dim:
            raise FeatureError(
                f"the pipeline's audio scaler has {len(p.audio.mean)} features but {p.audio.feature_set} gives "
                f"{self.opensmile.dim}: fit it with fit_audio_pipeline on features from this openSMILE"
            )
        if self.whisper is not None:
            d = self.whisper_dim()
            if d != p.whisper.dim:
                raise FeatureError(
                    f"the checkpoint expects {p.whisper.dim}-d Whisper features from {p.whisper.encoder!r} but that "
                    f"encoder gives {d}-d: pass the Whisper model it was trained with"
                )
        if p.text is not None and self.text_encoder is not None and self.text_encoder.dim != p.text.dim:
            raise FeatureError(
                f"the checkpoint expects {p.text.dim}-d text vectors from {p.text.encoder!r} but the text encoder "
                f"{self.text_encoder.name!r} gives {self.text_encoder.dim}-d: pass the encoder it was trained with"
            )

    def whisper_dim(self) -> int:
        """Pooled Whisper feature width (mean and std of the encoder's states)."""
        return 2 * int(self.whisper.encode(np.zeros(1600, np.float32)).speech_states().shape[1])

    def audio_part(self, audio: np.ndarray) -> tuple[dict[str, Any], dict[str, float]]:
        """The features that need only the audio (openSMILE, log-mel frames) -> (inputs, ms per stage).

        Separate so the live pipeline can run them while Whisper transcribes the same audio.
        """
        p = self.pipeline
        feats: dict[str, Any] = {}
        timing: dict[str, float] = {}
        audio = check_audio(audio)
        if self.opensmile is not None:
            t0 = time.perf_counter()
            feats["audio"] = torch.from_numpy(p.audio.transform(self.opensmile(audio)))
            timing["opensmile"] = (time.perf_counter() - t0) * 1000
        if self.logmel is not None:
            t0 = time.perf_counter()
            feats["frames"] = torch.from_numpy(self.logmel(audio))
            timing["frames"] = (time.perf_counter() - t0) * 1000
        return feats, timing

    def utterance(
        self,
        audio: np.ndarray,
        text: str,
        speaker: int | None = None,
        commonsense: np.ndarray | None = None,
        audio_part: tuple[dict[str, Any], dict[str, float]] | None = None,
        encoded=None,
        norm_key: str | None = None,
        text_context: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One utterance (16 kHz mono float audio, transcript) -> (model inputs, ms per stage).

        ``audio_part`` is :meth:`audio_part` of the same audio when it was computed already;
        ``encoded`` the ASR's :class:`streamer.asr.Encoded` of it, used for the Whisper
        features when the encoders are shared. ``norm_key`` names the speaker for the
        per-speaker normalisation (``None``: the session). ``text_context`` is the dialogue
        before this line as :mod:`streamer.text_context` writes it, for a text pipeline
        whose encoder reads context.
        """
        p = self.pipeline
        feats, timing = audio_part if audio_part is not None else self.audio_part(audio)
        feats, timing = dict(feats), dict(timing)
        if self.whisper is not None:
            t0 = time.perf_counter()
            if encoded is None or not self.shares_encoder:
                encoded = self.whisper.encode(check_audio(audio))
                timing["whisper_features"] = (time.perf_counter() - t0) * 1000
            vec = torch.from_numpy(encoded.pooled())
            feats["audio"] = torch.cat([feats["audio"], vec]) if "audio" in feats else vec
        if p.speaker_norm is not None:
            feats["norm_key"] = norm_key
        if self.text_encoder is not None and p.text is not None and p.text.pooling != "mean_last4":
            feats["text"] = self.text_vector(text, text_context, timing)
        elif self.text_encoder is not None:
            t0 = time.perf_counter()
            states = self.text_encoder.encode_tokens([text])[0]
            if p.text is not None:
                feats["text"] = torch.from_numpy(
                    states.mean(axis=0) if len(states) else np.zeros(states.shape[1:], np.float32)
                )
            if p.tokens:
                feats["tokens"] = torch.from_numpy(states)
            timing["text"] = (time.perf_counter() - t0) * 1000
        if p.commonsense:
            if commonsense is None:
                raise FeatureError("this checkpoint needs commonsense vectors (3, Dc) per utterance: pass commonsense")
            feats["commonsense"] = torch.as_tensor(np.asarray(commonsense, np.float32))
        if speaker is not None:
            feats["speaker"] = int(speaker)
        return feats, timing

    def text_vector(self, text: str, context: str | None, timing: dict[str, float] | None = None) -> torch.Tensor:
        """The pooled vector of one line read with its dialogue context (``utterance_*`` poolings)."""
        t0 = time.perf_counter()
        vec = torch.from_numpy(self.text_encoder.embed([text], [context])[0])
        if timing is not None:
            timing["text"] = (time.perf_counter() - t0) * 1000
        return vec


def encoder_matches(transcriber, whisper) -> bool:
    """Whether an ASR :class:`~streamer.asr.Transcriber` computes exactly the states a
    :class:`~models.pipeline.WhisperPipeline` was trained on (same model, same window policy)."""
    from streamer.asr import EncodePolicy

    names = {whisper.encoder, str(whisper.encoder)}
    return transcriber.name in names and transcriber.policy == EncodePolicy(whisper.min_window_s, whisper.pad_s)
