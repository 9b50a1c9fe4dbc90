"""Who is speaking in a mono mix: a voice embedding per utterance, then causal online clustering.

Two plain objects, like the segmenter (no threads, I/O or clocks):

- :class:`VoiceEmbedder` turns one utterance's 16 kHz audio into a unit-length voice vector
  with the pretrained GE2E speaker encoder of the ``resemblyzer`` package (Apache-2.0), run by
  a small module of our own: the package itself imports ``librosa`` and plain ``webrtcvad``,
  which do not install here, so only its ``pretrained.pt`` is read (``weights_only=True``).
  It is a pure function of the audio, so it runs with ASR in the end-of-speech wait.
- :class:`SpeakerTracker` gives each utterance a label A, B, C... from the vectors seen so far,
  once the speaker back end (:mod:`streamer.speaker_backend`) has removed within-speaker
  directions such as emotion: the closest known speaker when close enough, else a new one (up to
  the bound). A label once given is never changed; memory is one centroid per speaker.

docs/results.md compares this encoder with pooled Whisper states (much worse) and gives validation numbers.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.speaker_backend import PROJECTION_PATH, Projection, cached_projection

log = logging.getLogger(__name__)

#: Speaker labels in order of first appearance (the HBAF speaker slots and stereo channels use the same).
SPEAKER_NAMES = "ABCDEFGH"
RATE_HZ = 16000
#: GE2E front end (resemblyzer's hparams): 40 mel bands of 25 ms windows every 10 ms, 1.6 s partials.
N_MELS, WIN, HOP, PARTIAL_FRAMES = 40, 400, 160, 160
#: Partials start every 1/1.3 s; a last partial covering less than 75 % of its 1.6 s is dropped.
PARTIAL_RATE, MIN_COVERAGE = 1.3, 0.75
#: At most this many partials per utterance (first and last): bounds the cost (30 ms p95 budget, docs/benchmarks.md).
MAX_PARTIALS = 2
#: Quiet utterances are raised to this level (never lowered): the encoder's input is mel power.
TARGET_DBFS = -30.0
#: With ``--speakers N`` and fewer than N heard: the new-speaker threshold. Chosen on validation voices
#: (mean attribution over seven sets 0.922 at 0.25, 0.912 at 0.2 where knowing N only bounds the count,
#: 0.914 at 0.3; docs/results.md).
FILL_BELOW = 0.25
#: A colour per speaker in the terminal timeline (distinct from each other; emotions have their own palette).
SPEAKER_COLOURS = dict(
    zip(
        SPEAKER_NAMES,
        ("cyan", "magenta", "bright_green", "orange1", "deep_sky_blue1", "gold1", "orchid", "spring_green2"),
    )
)
RESEMBLYZER_HINT = "pip install --no-deps resemblyzer==0.1.4"


def resemblyzer_weights() -> Path | None:
    """Where the installed ``resemblyzer`` package keeps ``pretrained.pt`` (found without importing it)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    return path if path.is_file() else None


def _ge2e():
    """Resemblyzer's network: 3-layer LSTM 256 over mel frames -> linear 256 -> ReLU -> unit length.

    Built on first use so that this module (and ``ser-live --help``) does not import torch."""
    import torch
    from torch import nn

    class GE2E(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            x = torch.relu(self.linear(hidden[-1]))
            return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)

    return GE2E()


class VoiceEmbedder:
    """``embed(audio) -> (embedding (256,), partials (P, 256))``, unit vectors, float32."""

    dim = 256

    def __init__(self, weights: Path | str | None = None, device: str = "cpu") -> None:
        import torch
        from transformers.audio_utils import mel_filter_bank

        path = Path(weights) if weights is not None else resemblyzer_weights()
        if path is None or not Path(path).is_file():
            raise ValueError(f"speaker tracking needs the resemblyzer voice encoder weights: {RESEMBLYZER_HINT}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model_state", state)
        self.net = _ge2e()
        self.net.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
        self.net.eval().to(device)
        self.device = torch.device(device)
        # librosa's default mel basis (Slaney scale and area norm), which the encoder was trained on
        fb = mel_filter_bank(WIN // 2 + 1, N_MELS, 0.0, RATE_HZ / 2, RATE_HZ, norm="slaney", mel_scale="slaney")
        self._mel = torch.from_numpy(np.ascontiguousarray(fb.T, dtype=np.float32))
        self._window = torch.hann_window(WIN)

    def mels(self, audio: np.ndarray):
        """(frames, 40) mel power of ``audio`` (centred frames, as librosa computes them)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        spec = torch.stft(x, WIN, HOP, window=self._window, center=True, pad_mode="constant", return_complex=True)
        return (self._mel @ spec.abs().pow(2)).T

    def embed(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One utterance -> its voice vector (mean of the partials' vectors, renormalised) and the partials'."""
        import torch

        with torch.inference_mode():
            return self._embed(torch, audio)

    def _embed(self, torch, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wav = np.asarray(audio, np.float32).reshape(-1)
        if wav.size == 0 or not np.isfinite(wav).all():
            raise ValueError("speaker embedding needs finite, non-empty audio")
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
        if rms > 0:
            gain_db = TARGET_DBFS - 20 * np.log10(rms)
            if gain_db > 0:
                wav = wav * np.float32(10 ** (gain_db / 20))
        starts = _partial_starts(len(wav))
        need = (starts[-1] + PARTIAL_FRAMES) * HOP
        if need > len(wav):
            wav = np.pad(wav, (0, need - len(wav)))
        mel = self.mels(wav)
        batch = torch.stack([mel[s : s + PARTIAL_FRAMES] for s in starts]).to(self.device)
        partials = self.net(batch).cpu().numpy()
        mean = partials.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32), partials.astype(np.float32)


def _partial_starts(n_samples: int) -> list[int]:
    """Frame offsets of the 1.6 s partials covering ``n_samples`` (resemblyzer's slicing)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = round(RATE_HZ / PARTIAL_RATE / HOP)
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    if len(starts) > MAX_PARTIALS:
        starts = [starts[round(i * (len(starts) - 1) / (MAX_PARTIALS - 1))] for i in range(MAX_PARTIALS)]
    return starts


@dataclass(frozen=True)
class SpeakerConfig:
    """How utterances become speakers; similarities are cosines of GE2E vectors after ``projection``
    (the speaker back end; ``None``: raw vectors), thresholds chosen on validation voices (docs/results.md).

    ``speakers``: the number of people when known (new speakers are opened until there are that
    many, never more); ``max_speakers``: the bound otherwise (at most 8: the model's speaker
    slots). ``new_below``: an utterance less similar than this to every known speaker starts a
    new one. ``fill_below``: with ``speakers`` known and fewer heard so far, this looser
    threshold opens a new one: people known to be there but not yet heard are more likely than
    one voice sounding unlike itself (six voices at ``new_below`` are found as four, docs/results.md).
    Similarities are taken relative to ``center_strength`` x the session's mean voice
    (shrunk toward zero by ``center_weight`` utterances while few are heard; 0: off): the mean
    removes what a conversation shares (recording, acted style), but with one person alone it
    leaves only emotion, so after the projection a quarter of it is removed (validation mean
    attribution 0.90; all of it 0.81, none 0.90 with ravdess-2 0.85 vs 0.87 and tts-2 0.98 vs 1.00).
    ``overlap_margin``: when the partials side with two known speakers, each at least
    ``new_below``-close, it is overlapping speech and gets no speaker rather than a guess.
    ``memory``: a centroid is the mean of its speaker's last ~``memory`` utterances (exponential
    after that), so it follows a voice that drifts over hours without growing.
    """

    speakers: int | None = None
    max_speakers: int = 8
    new_below: float = 0.2
    fill_below: float = FILL_BELOW
    overlap_margin: float = 0.4
    memory: int = 100
    center_weight: float = 1.0
    center_strength: float = 0.25
    projection: Path | None = PROJECTION_PATH

    def __post_init__(self) -> None:
        if self.speakers is not None and not 1 <= self.speakers <= len(SPEAKER_NAMES):
            raise ValueError(f"speakers must be between 1 and {len(SPEAKER_NAMES)}, got {self.speakers}")
        if not 1 <= self.max_speakers <= len(SPEAKER_NAMES):
            raise ValueError(f"max_speakers must be between 1 and {len(SPEAKER_NAMES)}, got {self.max_speakers}")
        for name in ("new_below", "fill_below"):
            if not -1.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be a cosine similarity in (-1, 1), got {getattr(self, name)}")
        if not 0.0 <= self.overlap_margin < 1.0:
            raise ValueError(f"overlap_margin must be in [0, 1), got {self.overlap_margin}")
        if self.memory < 1:
            raise ValueError(f"memory must be at least 1 utterance, got {self.memory}")
        if not self.center_weight >= 0:
            raise ValueError(f"center_weight must be >= 0 (0: no centring), got {self.center_weight}")
        if not 0.0 <= self.center_strength <= 1.0:
            raise ValueError(f"center_strength must be in [0, 1] (0: no centring), got {self.center_strength}")

    @property
    def bound(self) -> int:
        return self.speakers if self.speakers is not None else self.max_speakers


@dataclass(frozen=True)
class Assignment:
    """One utterance's speaker (``None`` for overlapping speech), how close it was, and why."""

    speaker: str | None
    similarity: float
    new: bool = False
    overlap: tuple[str, ...] = ()


class SpeakerTracker:
    """``push(embedding, partials) -> Assignment``; ``reset()`` forgets every speaker.

    Causal: an assignment depends only on the utterances before it, and is never revised.
    State: per speaker a unit centroid and a count (capped at ``memory``); nothing else.
    Raw encoder vectors go in; ``config.projection`` is applied here, so every caller (live
    pipeline, evaluation, benchmark) compares the same projected vectors.
    """

    def __init__(self, config: SpeakerConfig | None = None) -> None:
        self.config = config or SpeakerConfig()
        path = self.config.projection
        self.projection: Projection | None = cached_projection(str(path)) if path is not None else None
        self.reset()

    def reset(self) -> None:
        self._mean: np.ndarray | None = None  # the session's mean voice (an average over <= 10 x memory)
        self._heard = 0
        self._centroids = np.zeros((0, 0), np.float32)  # (speakers, embedding size), sized by the first
        self._counts: list[int] = []

    @property
    def speakers(self) -> list[str]:
        return list(SPEAKER_NAMES[: len(self._counts)])

    def push(self, embedding: np.ndarray, partials: np.ndarray | None = None) -> Assignment:
        """Assign one utterance's voice, in order: the tracker learns from it."""
        e, partials = self._project(embedding, partials)
        if e is None:
            return Assignment(None, 0.0)  # no voice in it (silence): nobody's, and nothing learnt
        self._mean, self._heard = self._heard_with(e)
        assignment = self._choose(e, partials, self._mean, self._heard)
        if assignment.new:
            self._open(e)
        elif assignment.speaker is not None:
            self._update(SPEAKER_NAMES.index(assignment.speaker), e)
        return assignment

    def peek(self, embedding: np.ndarray, partials: np.ndarray | None = None) -> Assignment:
        """What :meth:`push` would answer if called now, learning nothing.

        For work done ahead of the end decision (the speculative guess reads the line with the
        dialogue tagged by this speaker); the assignment itself still happens in order, at the
        decision, and whoever peeked checks it then.
        """
        e, partials = self._project(embedding, partials)
        if e is None:
            return Assignment(None, 0.0)
        mean, heard = self._heard_with(e)
        return self._choose(e, partials, mean, heard)

    def _project(
        self, embedding: np.ndarray, partials: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        raw = np.asarray(embedding, np.float32).reshape(-1)
        if not np.isfinite(raw).all() or float(np.linalg.norm(raw)) < 1e-6:
            return None, None
        e = _unit(raw) if self.projection is None else self.projection.apply(raw)
        if partials is not None and self.projection is not None:
            partials = self.projection.apply(partials)
        return e, partials

    def _choose(self, e: np.ndarray, partials: np.ndarray | None, mean: np.ndarray, heard: int) -> Assignment:
        """The assignment of ``e`` given the session's mean voice after hearing it (pure)."""
        cfg = self.config
        known = len(self._counts)
        if known == 0:
            return Assignment(SPEAKER_NAMES[0], 0.0, new=True)
        centroids = self._centroids[:known]
        sims = self._similarity(e[None, :], centroids, mean, heard)[0]
        best = int(sims.argmax())
        # before "new": a mixture is far from both of its voices
        overlap = self._overlap(partials, centroids, mean, heard)
        if overlap:
            return Assignment(None, float(sims[best]), overlap=overlap)
        if sims[best] < self._threshold() and known < cfg.bound:
            return Assignment(SPEAKER_NAMES[known], float(sims[best]), new=True)
        return Assignment(SPEAKER_NAMES[best], float(sims[best]))

    def _threshold(self) -> float:
        """Below this similarity to every known speaker, a new one (``fill_below`` while known people are missing)."""
        cfg = self.config
        if cfg.speakers is not None and len(self._counts) < cfg.speakers:
            return max(cfg.new_below, cfg.fill_below)
        return cfg.new_below

    def _overlap(
        self, partials: np.ndarray | None, centroids: np.ndarray, mean: np.ndarray, heard: int
    ) -> tuple[str, ...]:
        """Two known voices in one utterance: its partials side with different speakers, each clearly."""
        if partials is None or len(partials) < 2 or len(centroids) < 2:
            return ()
        sims = self._similarity(np.asarray(partials, np.float32), centroids, mean, heard)  # (P, K)
        owners = sims.argmax(axis=1)
        sure = sims.max(axis=1) >= self.config.new_below
        top2 = np.sort(sims, axis=1)[:, -2:]
        sure &= top2[:, 1] - top2[:, 0] >= self.config.overlap_margin
        voices = sorted({int(k) for k in owners[sure]})
        return tuple(SPEAKER_NAMES[k] for k in voices) if len(voices) >= 2 else ()

    def _heard_with(self, e: np.ndarray) -> tuple[np.ndarray, int]:
        """The session's mean voice and count once ``e`` is heard (the state is not touched)."""
        n = min(self._heard, 10 * self.config.memory)
        mean = e.copy() if self._mean is None else (self._mean * n + e) / (n + 1)
        return mean, self._heard + 1

    def _similarity(self, x: np.ndarray, centroids: np.ndarray, mean: np.ndarray, heard: int) -> np.ndarray:
        """Cosine similarities (rows of ``x`` vs ``centroids``), both taken relative to the session's mean voice."""
        n = min(heard, 10 * self.config.memory)
        cfg = self.config
        shift = mean * (cfg.center_strength * n / (n + cfg.center_weight)) if cfg.center_weight > 0 else 0.0
        a, c = x - shift, centroids - shift
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-8)
        return a @ c.T

    def _open(self, e: np.ndarray) -> None:
        self._centroids = np.vstack([self._centroids, e[None, :]]) if len(self._counts) else e[None, :].copy()
        self._counts.append(1)

    def _update(self, k: int, e: np.ndarray) -> None:
        n = min(self._counts[k], self.config.memory)
        self._centroids[k] = _unit(self._centroids[k] * n + e)
        self._counts[k] += 1


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.linalg.norm(x)), 1e-8)).astype(np.float32)


@dataclass(frozen=True)
class Voice:
    """What :meth:`SpeakerStage.embed` made of one utterance: a pure function of its audio."""

    embedding: np.ndarray
    partials: np.ndarray


class SpeakerStage:
    """The pipeline's speaker step: ``embed`` with ASR (no state), ``assign`` at the end decision (state).

    Splitting the two lets the embedding run in the end-of-speech wait with Whisper while the
    assignment, which depends on the order of utterances, runs in order with the model.
    """

    def __init__(self, embedder: VoiceEmbedder, config: SpeakerConfig | None = None) -> None:
        self.embedder = embedder
        self.tracker = SpeakerTracker(config)

    def embed(self, audio: np.ndarray) -> Voice:
        return Voice(*self.embedder.embed(audio))

    def assign(self, voice: Voice) -> Assignment:
        return self.tracker.push(voice.embedding, voice.partials)

    def peek(self, voice: Voice) -> Assignment:
        """What :meth:`assign` would answer now, changing nothing (see :meth:`SpeakerTracker.peek`)."""
        return self.tracker.peek(voice.embedding, voice.partials)

    def reset(self) -> None:
        self.tracker.reset()


class SpeakerCounts:
    """Per speaker, how many classified utterances got each label: the running per-speaker summary.

    ``add(event)`` is O(1) and memory is speakers x labels, so the UI can keep it for hours.
    """

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, speaker: str | None, label: str | None) -> None:
        if label is not None:
            row = self.counts.setdefault(speaker or "-", {})
            row[label] = row.get(label, 0) + 1

    def shares(self) -> dict[str, dict[str, float]]:
        return {s: {lab: n / sum(row.values()) for lab, n in row.items()} for s, row in sorted(self.counts.items())}

    def lines(self, top: int = 3) -> list[str]:
        """One line per speaker: utterance count and their most frequent emotions with shares."""
        out = []
        for spk, shares in self.shares().items():
            n = sum(self.counts[spk].values())
            best = sorted(shares.items(), key=lambda kv: -kv[1])[:top]
            name = "all (no speaker)" if spk == "-" else f"speaker {spk}"
            out.append(f"{name}: {n} utterances, " + ", ".join(f"{lab} {share:.0%}" for lab, share in best))
        return out


def speaker_style(event) -> str:
    """The timeline style of an event's speaker cell: a colour per speaker, a warning for overlapping speech."""
    if getattr(event, "overlap", ()):
        return "bold yellow"
    return f"bold {SPEAKER_COLOURS.get(event.speaker, 'white')}" if event.speaker else "bold"


def speaker_cell(event) -> str:
    """What the timeline shows as the speaker: the label, ``A+B?`` for overlapping speech, ``-`` for none."""
    overlap = getattr(event, "overlap", ())
    return "+".join(overlap) + "?" if overlap else event.speaker or "-"


def load_embedder(explicit: bool) -> VoiceEmbedder | None:
    """The voice encoder, loaded once per tracker, or ``None`` when its weights are not installed.

    ``explicit`` (the user asked for speakers): missing weights are an error naming the fix;
    otherwise a warning, and the session runs as before (one ``null`` speaker).
    """
    if resemblyzer_weights() is None:
        if explicit:
            raise ValueError(f"speaker tracking needs the resemblyzer voice encoder weights: {RESEMBLYZER_HINT}")
        log.warning("speaker tracking is off: the resemblyzer voice encoder is not installed (%s)", RESEMBLYZER_HINT)
        return None
    return VoiceEmbedder()


def speaker_config(args) -> SpeakerConfig | None:
    """``--speakers`` / ``--max-speakers`` of a ``ser-live`` command line as a config (None: neither given).

    Each mistake is one sentence naming the flag as typed (``--second-pass`` included: it
    re-clusters these speakers)."""
    if getattr(args, "second_pass", False) and getattr(args, "split_channels", False):
        raise ValueError("--second-pass is for mono audio; with --split-channels each channel is one speaker")
    n, bound = getattr(args, "speakers", None), getattr(args, "max_speakers", None)
    if n is None and bound is None:
        return None
    top = len(SPEAKER_NAMES)
    for flag, value in (("--speakers", n), ("--max-speakers", bound)):
        if value is not None and not 1 <= value <= top:
            raise ValueError(
                f"{flag} {value}: give the number of people talking, 1 to {top} (or leave {flag} out to let "
                "ser-live find them)"
            )
    if getattr(args, "split_channels", False):
        flag = "--speakers" if n is not None else "--max-speakers"
        raise ValueError(f"{flag} is for mono audio; with --split-channels each channel is one speaker")
    if n is not None and bound is not None and n > bound:
        raise ValueError(f"--speakers {n} is more than --max-speakers {bound}; give one of them")
    return SpeakerConfig(speakers=n, max_speakers=bound if bound is not None else top)
