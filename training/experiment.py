"""One training run end to end: load splits, extract (cached) features, fit the
audio pipeline on the training split, train, calibrate on validation, score the
test split once, and write ``runs/<name>/`` (config, checkpoint, metrics, plots)."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from models import ContextConfig, FeaturePipeline, TextPipeline
from training.data import DATASETS, load_dataset
from training.data.records import DatasetSplit
from training.extract import ExtractConfig, SplitFeatures, extract_split
from training.losses import IGNORE
from training.metrics import classification_metrics, fit_temperature, plot_confusion
from training.recipes import describe
from training.trainer import RESUME_FILE, FeatureDialogue, Resume, TrainConfig, predict, train

log = logging.getLogger(__name__)

#: Which split is validation and which is test, per dataset.
SPLIT_ROLES = {
    "meld": ("train", "dev", None),  # MELD test is not shared: results are reported on dev
    "iemocap": ("train", "validation", "test"),
    "paired": ("train", "validation", "test"),
    "voice-chains": ("train", "validation", "test"),
    "tts-words": ("train", "validation", "test"),
    "mixed": ("train", "validation", "test"),
    "manifest": ("train", "validation", "test"),
}


AUDIO_KINDS = ("opensmile", "whisper", "both")
NORM_MODES = ("none", "speaker", "session", "mixed")


@dataclass(frozen=True)
class RunConfig:
    name: str
    model: str = "hbaf"
    dataset: str = "paired"
    data_root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    context: ContextConfig = field(default_factory=ContextConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: The recipe record of :func:`training.recipes.resolve` (name, source, overridden settings).
    recipe: dict[str, Any] | None = None
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    audio_features: int = 512
    #: Which audio features the model's audio vector holds: opensmile (the paper's), whisper or both.
    audio_kind: str = "opensmile"
    #: Causal speaker normalisation of the audio vector: none, speaker (per speaker), session
    #: (one statistic per dialogue, as a mono live session) or mixed (half the dialogues each).
    speaker_norm: str = "none"
    norm_prior_weight: float = 4.0
    #: Directions of within-speaker variation of the voices that carry no emotion (the training
    #: split's words-only dialogues) removed before normalisation (0: none; models/normalize.py).
    nuisance_dims: int = 0
    runs_dir: Path = Path("runs")
    splits: tuple[str | None, str | None, str | None] | None = None

    def __post_init__(self) -> None:
        if self.audio_kind not in AUDIO_KINDS:
            raise ValueError(f"--audio-kind must be one of {', '.join(AUDIO_KINDS)}, got {self.audio_kind!r}")
        if self.speaker_norm not in NORM_MODES:
            raise ValueError(f"--speaker-norm must be one of {', '.join(NORM_MODES)}, got {self.speaker_norm!r}")
        if self.nuisance_dims < 0:
            raise ValueError(f"--nuisance-dims must be 0 or more, got {self.nuisance_dims}")
        if self.nuisance_dims and self.speaker_norm == "none":
            raise ValueError("--nuisance-dims works inside speaker normalisation: add --speaker-norm speaker or mixed")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def raw_audio_vectors(feats: SplitFeatures, pipeline: FeaturePipeline) -> np.ndarray | None:
    """(n, audio_dim) model audio vectors before speaker normalisation (openSMILE transformed, Whisper pooled)."""
    parts = []
    if pipeline.audio is not None and feats.audio is not None:
        parts.append(pipeline.audio.transform(np.nan_to_num(feats.audio)))
    if pipeline.whisper is not None and feats.whisper is not None:
        parts.append(np.nan_to_num(feats.whisper))
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else None


def norm_keys(dialogue_id: str, speakers: list[str], mode: str, seed: int = 0) -> list[str | None]:
    """The normalisation key of each utterance: its speaker, or None (the session) — per ``mode``;
    ``mixed`` picks one of the two per dialogue from a seeded hash, so the model serves both
    a stereo session (a channel per speaker) and a mono one (the whole session)."""
    if mode == "mixed":
        mode = "speaker" if random.Random(f"norm:{seed}:{dialogue_id}").random() < 0.5 else "session"
    return list(speakers) if mode == "speaker" else [None] * len(speakers)


def to_dialogues(
    split: DatasetSplit,
    feats: SplitFeatures,
    pipeline: FeaturePipeline,
    labels: list[str],
    max_speakers: int = 8,
    norm_mode: str = "session",
    seed: int = 0,
) -> list[FeatureDialogue]:
    """Per-utterance model inputs (the fitted audio pipeline applied) grouped by dialogue.

    With speaker normalisation each dialogue's audio vectors go through a fresh
    :class:`~models.normalize.SpeakerNormalizer` in turn order, exactly as the live
    :class:`~models.streaming.StreamingClassifier` applies it (streaming equals batch).
    """
    from models.normalize import SpeakerNormalizer

    audio = raw_audio_vectors(feats, pipeline)
    dim = pipeline.audio_dim
    out, i = [], 0
    index = {label: k for k, label in enumerate(labels)}
    for d in split.dialogues:
        speakers = {s: k for k, s in enumerate(d.speakers)}
        norm = SpeakerNormalizer(pipeline.speaker_norm) if pipeline.speaker_norm is not None else None
        keys = norm_keys(d.id, [u.speaker for u in d.utterances], norm_mode, seed)
        utts, ys = [], []
        for u, key in zip(d.utterances, keys):
            item: dict[str, Any] = {"speaker": min(speakers[u.speaker], max_speakers - 1)}
            if pipeline.has_audio_vector:
                ok = bool(feats.audio_ok[i]) and audio is not None
                vec = audio[i] if ok else np.zeros(dim, np.float32)
                if ok and norm is not None:
                    vec = norm.push(key, vec)
                item["audio"] = torch.from_numpy(vec)
                item["audio_present"] = ok
            if pipeline.text is not None:
                item["text"] = torch.from_numpy(feats.text[i])
                item["text_present"] = True
            if pipeline.frames is not None:
                item["frames"] = torch.from_numpy(feats.frames[i])
            if pipeline.tokens:
                item["tokens"] = torch.from_numpy(feats.tokens[i])
            utts.append(item)
            ys.append(index.get(u.label, IGNORE))
            i += 1
        out.append(FeatureDialogue(d.id, utts, ys))
    return out


def build_pipeline(
    cfg: RunConfig,
    train_feats: SplitFeatures,
    train_labels: np.ndarray,
    needs: tuple[str, ...],
    train_split: DatasetSplit | None = None,
):
    from streamer.features import fit_audio_pipeline
    from training.extract import text_encoder

    audio = None
    if "audio" in needs and cfg.audio_kind in ("opensmile", "both"):
        ok = train_feats.audio_ok & (train_labels >= 0)
        if ok.sum() < 2:
            raise ValueError(
                "the training split has fewer than 2 labelled utterances with audio: cannot fit the scaler"
            )
        k = min(cfg.audio_features, train_feats.audio.shape[1])
        # paired data reuse clips: fit on distinct (clip, label) pairs, not on copies of them
        rows: dict[bytes, int] = {}
        for i in np.flatnonzero(ok):
            rows.setdefault(train_feats.audio[i].tobytes() + bytes([train_labels[i]]), i)
        keep = np.fromiter(rows.values(), dtype=np.int64)
        log.info("fitting the audio scaler and SVM selection on %d distinct utterances", len(keep))
        audio = fit_audio_pipeline(train_feats.audio[keep], train_labels[keep], k=k, seed=cfg.train.seed)
    text = None
    if "text" in needs or "tokens" in needs:
        if cfg.extract.text_adapter is not None:
            from training.text_features import adapter_pipeline

            text = adapter_pipeline(cfg.extract.text_adapter)
        elif cfg.extract.text_context_turns:
            from training.text_features import context_pipeline

            text = context_pipeline(cfg.extract.text_encoder, cfg.extract.text_context_turns)
        else:
            enc = text_encoder(cfg.extract.text_encoder)
            text = TextPipeline(encoder=enc.name, dim=enc.dim, max_tokens=enc.max_tokens)
    from models.pipeline import FramePipeline, WhisperPipeline

    whisper = None
    if "audio" in needs and cfg.audio_kind in ("whisper", "both"):
        e = cfg.extract
        whisper = WhisperPipeline(
            e.whisper_encoder, e.whisper_min_window_s, e.whisper_pad_s, dim=int(train_feats.whisper.shape[1])
        )
    pipeline = FeaturePipeline(
        audio=audio,
        text=text if "text" in needs else None,
        frames=FramePipeline() if "frames" in needs else None,
        tokens="tokens" in needs,
        whisper=whisper,
    )
    if pipeline.has_audio_vector and cfg.speaker_norm != "none":
        pipeline = with_speaker_norm(
            pipeline, train_feats, train_labels, cfg.norm_prior_weight, train_split, cfg.nuisance_dims
        )
    return pipeline


#: Dialogues whose voice carries no emotion (``mixed``'s words-only part, read by synthetic voices).
FLAT_VOICE_PREFIX = "words-"


def flat_voice_groups(split: DatasetSplit, raw: np.ndarray, ok: np.ndarray) -> list[np.ndarray]:
    """The raw audio vectors of each speaker of each words-only dialogue of ``split``."""
    groups, i = [], 0
    for d in split.dialogues:
        n = len(d.utterances)
        if d.id.startswith(FLAT_VOICE_PREFIX):
            by: dict[str, list[int]] = {}
            for j, u in enumerate(d.utterances):
                if ok[i + j]:
                    by.setdefault(u.speaker, []).append(i + j)
            groups += [raw[rows] for rows in by.values() if len(rows) >= 2]
        i += n
    return groups


def with_speaker_norm(
    pipeline: FeaturePipeline,
    train_feats: SplitFeatures,
    train_labels: np.ndarray,
    prior_weight: float,
    train_split: DatasetSplit | None = None,
    nuisance_dims: int = 0,
) -> FeaturePipeline:
    """``pipeline`` with per-speaker normalisation whose prior is fitted on the training audio
    vectors, and with ``nuisance_dims`` directions of the words-only voices removed first."""
    from models.normalize import fit_prior

    raw = raw_audio_vectors(train_feats, pipeline)
    ok = train_feats.audio_ok & (train_labels >= 0)
    distinct = np.unique(raw[ok], axis=0)  # paired data reuse clips: each clip once
    groups = None
    if nuisance_dims:
        groups = flat_voice_groups(train_split, raw, train_feats.audio_ok) if train_split is not None else []
        if not groups:
            raise ValueError(
                "--nuisance-dims needs training dialogues whose voice carries no emotion "
                "(the words-only part of --dataset mixed); this dataset has none"
            )
    norm = fit_prior(distinct, prior_weight, groups, nuisance_dims)
    return dataclasses.replace(pipeline, speaker_norm=norm)


def model_inputs(name: str, options: dict[str, Any]) -> tuple[str, ...]:
    probe = models.build(name, **{k: v for k, v in options.items() if k != "context"})
    return tuple(probe.inputs)


def dataset_options(dataset: str, options: dict[str, Any], needs: tuple[str, ...]) -> dict[str, Any]:
    """A model that hears nothing loads datasets that can go text-only (an ``audio`` option:
    MELD, IEMOCAP) without their audio, so no clip is probed and none missing drops a line."""
    if "audio" in needs or "frames" in needs:
        return options
    if "audio" not in {f.name for f in dataclasses.fields(DATASETS[dataset].options)}:
        return options
    return {**options, "audio": False}


#: Settings that change how a run is shown or scheduled, never what it computes.
_COSMETIC = {"extract": ("progress", "workers")}


def _settings(config: dict) -> str:
    config = json.loads(json.dumps(config, default=str))
    for section, keys in _COSMETIC.items():
        for key in keys:
            config.get(section, {}).pop(key, None)
    return json.dumps(config, sort_keys=True)


def fingerprint(cfg: RunConfig) -> str:
    """The configuration as one string: what a saved training state must have been made with
    (progress bars and worker counts aside)."""
    return _settings(dataclasses.asdict(cfg))


def finished_metrics(cfg: RunConfig) -> dict | None:
    """The metrics of a run of exactly ``cfg`` that completed (no training state left behind), else None."""
    out_dir = Path(cfg.runs_dir) / cfg.name
    try:
        if (out_dir / RESUME_FILE).exists() or not (out_dir / "model.pt").is_file():
            return None
        if _settings(json.loads((out_dir / "config.json").read_text())) != fingerprint(cfg):
            return None
        return json.loads((out_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def run(cfg: RunConfig, resume: bool = False) -> dict:
    """Train and evaluate one configuration; returns the metrics dict (also written to disk).

    The training loop saves its state in the run's folder after every epoch (removed when the
    run is written); ``resume`` continues an interrupted run from it."""
    t_start = time.time()
    out_dir = Path(cfg.runs_dir) / cfg.name
    roles = cfg.splits or SPLIT_ROLES.get(cfg.dataset, ("train", "validation", "test"))
    needs = model_inputs(cfg.model, cfg.model_options)
    extract = dataclasses.replace(
        cfg.extract,
        audio="audio" in needs and cfg.audio_kind in ("opensmile", "both"),
        whisper="audio" in needs and cfg.audio_kind in ("whisper", "both"),
        frames="frames" in needs,
        tokens="tokens" in needs,
    )
    opts = dataset_options(cfg.dataset, cfg.dataset_options, needs)
    splits = {}
    for role, split_name in zip(("train", "val", "test"), roles):
        if split_name is not None:
            splits[role] = load_dataset(cfg.dataset, split_name, cfg.data_root, **opts)  # logs its report
    labels = list(splits["train"].labels)
    feats = {role: extract_split(s, extract) for role, s in splits.items()}
    y_train = np.array([labels.index(u.label) if u.label in labels else -1 for u in splits["train"].utterances()])
    pipeline = build_pipeline(cfg, feats["train"], y_train, needs, splits["train"])
    dims = {
        "audio_dim": pipeline.audio_dim or None,
        "text_dim": pipeline.text.dim if pipeline.text else None,
        # frame- and token-level models (MCFN, GCA): the widths the extractors give
        "frame_dim": pipeline.frames.dim if pipeline.frames else None,
        "token_dim": pipeline.text.dim if pipeline.text and pipeline.tokens else None,
    }
    model_cls, config_cls = models.lookup(cfg.model)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    options = dict(cfg.model_options)
    for key, value in dims.items():
        if key in fields and value is not None:
            options.setdefault(key, value)
    if "input_dim" in fields:
        options.setdefault("input_dim", dims["audio_dim"] if "audio" in needs else dims["text_dim"])
    if "num_classes" in fields:
        options["num_classes"] = len(labels)
    torch.manual_seed(cfg.train.seed)  # the seed decides the initial weights too
    model = models.build(cfg.model, context=cfg.context, **options)
    data = {
        role: to_dialogues(
            splits[role],
            feats[role],
            pipeline,
            labels,
            norm_mode="session" if cfg.speaker_norm == "none" else cfg.speaker_norm,
            seed=cfg.train.seed,
        )
        for role in splits
    }
    state = Resume(out_dir / RESUME_FILE, fingerprint(cfg), load=resume)
    result = train(model, data["train"], data["val"], cfg.train, resume=state)
    device = next(model.parameters()).device
    val_logits, val_y = predict(model, data["val"], cfg.train.batch_size, device)
    temperature = fit_temperature(val_logits, val_y)
    channel_temperatures = channel_calibration(model, data["val"], cfg.train.batch_size, device)
    metrics: dict[str, Any] = {
        "run": cfg.name,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.train.seed,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs": len(result.history),
        "recipe": describe(cfg.recipe, cfg.train),
        "validation": classification_metrics(val_y, val_logits, labels, temperature),
    }
    if "test" in data:
        test_logits, test_y = predict(model, data["test"], cfg.train.batch_size, device)
        metrics["test"] = classification_metrics(test_y, test_logits, labels, temperature)
    metrics["seconds"] = round(time.time() - t_start + result.seconds_before, 1)
    meta = {
        "dataset": cfg.dataset,
        "splits": [r for r in roles if r],
        "seed": cfg.train.seed,
        "git_commit": git_commit(),
        "validation_weighted_f1": metrics["validation"]["weighted_f1"],
        "best_epoch": result.best_epoch,
        "channel_temperatures": channel_temperatures,
        "audio_kind": cfg.audio_kind,
        "speaker_norm": cfg.speaker_norm,
        "nuisance_dims": cfg.nuisance_dims,
        "recipe": describe(cfg.recipe, cfg.train),
        "data_reports": {role: s.report.to_dict() for role, s in splits.items()},
    }
    if _is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        models.save(out_dir / "model.pt", model, labels, pipeline, temperature, json.loads(json.dumps(meta)))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (out_dir / "history.json").write_text(json.dumps(result.history, indent=2))
        (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        for role in ("validation", "test"):
            if role in metrics:
                plot_confusion(
                    metrics[role]["confusion"], labels, out_dir / f"confusion_{role}.png", f"{cfg.name} {role}"
                )
        state.path.unlink(missing_ok=True)  # the run is written: nothing left to resume
    return metrics


def channel_calibration(model, val, batch_size: int, device) -> dict[str, float]:
    """Each channel's own temperature, fitted on validation with the other channel withheld, so
    that the per-channel confidence of the live events is calibrated (bimodal models only)."""
    import copy

    from training.evaluate import hide_modality

    if not {"audio", "text"} <= set(model.inputs) or not val:
        return {}
    out = {}
    for keep, hide in (("audio", "text"), ("text", "audio")):
        hidden = copy.deepcopy(val)
        hide_modality(hidden, hide)
        logits, y = predict(model, hidden, batch_size, device)
        out[keep] = float(fit_temperature(logits, y))
    return out


def _is_main() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
