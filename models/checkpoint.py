"""Self-describing checkpoints: model name and config, labels, feature pipeline,
calibration temperature, training metadata and weights, in one ``torch.save`` file
that :func:`load` reads with ``weights_only=True`` (no arbitrary pickles)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.arbiter import ChannelArbiter
from models.base import EmotionModel, resolve_device
from models.blocks import config_from_dict
from models.pipeline import FeaturePipeline
from models.prior import PriorShift
from models.registry import lookup
from models.streaming import StreamingClassifier

log = logging.getLogger(__name__)

FORMAT = "ser-live/checkpoint"
#: 2 added Whisper audio features and per-speaker normalisation to the feature pipeline;
#: version 1 files (openSMILE + text only) read unchanged. 3 added the text encoder's dialogue
#: context and fine-tuned delta (adapter) to the text pipeline. 4 added the nuisance projection
#: to speaker normalisation (an older reader would ignore it and feed the model other features).
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)


class CheckpointError(ValueError):
    """A file that cannot serve as a ser-live checkpoint; the message is one sentence."""


@dataclass
class Checkpoint:
    model: EmotionModel
    labels: list[str]
    pipeline: FeaturePipeline
    temperature: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def arbiter(self) -> ChannelArbiter | None:
        """The channel arbiter fitted after training (``meta["arbiter"]``), if any."""
        spec = self.meta.get("arbiter")
        return ChannelArbiter.from_dict(spec) if spec else None

    @property
    def prior_shift(self) -> PriorShift | None:
        """The session-prior correction fitted after training (``meta["prior_shift"]``), if any."""
        spec = self.meta.get("prior_shift")
        return PriorShift.from_dict(spec) if spec else None

    def classifier(self) -> StreamingClassifier:
        """The live classifier this checkpoint describes (a fresh dialogue): its temperature, speaker
        normalisation, channel temperatures, arbiter and session prior, as ``ser-live`` runs it."""
        return StreamingClassifier(
            self.model,
            self.temperature,
            speaker_norm=self.pipeline.speaker_norm,
            channel_temperatures=self.meta.get("channel_temperatures"),
            arbiter=self.arbiter,
            prior_shift=self.prior_shift,
        )


def save(
    path: str | os.PathLike,
    model: EmotionModel,
    labels: list[str],
    pipeline: FeaturePipeline,
    temperature: float = 1.0,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename), so a crash never leaves half a file."""
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.name,
        "config": dataclasses.asdict(model.config),
        "labels": list(labels),
        "pipeline": pipeline.to_dict(),
        "temperature": float(temperature),
        "meta": meta or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, device: str = "auto") -> Checkpoint:
    """Read a checkpoint; any problem becomes a one-sentence :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path given to --model")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle refused by weights_only, random bytes...
        log.debug("torch.load(%s) failed: %r", path, exc)
        raise CheckpointError(
            f"{path} is not a readable ser-live checkpoint (truncated, corrupt or another format); "
            "pass a checkpoint written by `python -m training train`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a ser-live checkpoint (no '{FORMAT}' marker); train one with python -m training train"
        )
    if payload.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} is checkpoint format version {payload.get('version')!r}, this ser-live reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: use the ser-live release that wrote it or retrain"
        )
    try:
        model_cls, config_cls = lookup(payload["model"])
        config = config_from_dict(config_cls, payload["config"])
        _check_shapes(path, model_cls, config, payload.get("state_dict"))
        model = model_cls(config)
        pipeline = FeaturePipeline.from_dict(payload["pipeline"])
    except (KeyError, TypeError, ValueError, ArithmeticError, AssertionError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path} has an invalid model description ({_short(exc)})") from exc
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except KeyError as exc:
        raise CheckpointError(f"{path} has no weights (no 'state_dict'); it is an incomplete checkpoint") from exc
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the weights do not match the model's config ({_short(exc)})") from exc
    labels = payload.get("labels")
    if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
        raise CheckpointError(f"{path} has no label list; it is an incomplete checkpoint")
    labels = list(labels)
    if len(labels) != model.num_classes:
        raise CheckpointError(f"{path} lists {len(labels)} labels for a model with {model.num_classes} classes")
    _check_labels(path, labels)
    temperature = payload.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature < math.inf:
        raise CheckpointError(
            f"{path} has calibration temperature {temperature!r}, not a positive number; it is a damaged checkpoint"
        )
    model.to(resolve_device(device)).eval()
    checkpoint = Checkpoint(model, labels, pipeline, float(temperature), payload.get("meta", {}), path)
    try:
        arbiter = checkpoint.arbiter
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has a damaged channel arbiter ({_short(exc)})") from exc
    if arbiter is not None and arbiter.num_classes != model.num_classes:
        raise CheckpointError(
            f"{path} has a channel arbiter for {arbiter.num_classes} classes and a model with {model.num_classes}"
        )
    try:
        shift = checkpoint.prior_shift
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has a damaged session-prior correction ({_short(exc)})") from exc
    if shift is not None and len(shift.prior) != model.num_classes:
        raise CheckpointError(
            f"{path} has a session prior over {len(shift.prior)} classes and a model with {model.num_classes}"
        )
    return checkpoint


#: A label is shown in terminals and written into every output: a short printable name.
MAX_LABEL_CHARS = 40


def _check_labels(path: Path, labels: list[str]) -> None:
    for label in labels:
        if not label.strip() or len(label) > MAX_LABEL_CHARS or not label.isprintable() or label != label.strip():
            raise CheckpointError(
                f"{path} has the label {label!r}; labels must be 1 to {MAX_LABEL_CHARS} printable characters "
                "without control codes, so this checkpoint is refused"
            )
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"{path} lists a label twice ({', '.join(labels)}); it is a damaged checkpoint")


def _check_shapes(path: Path, model_cls: type, config: Any, state: Any) -> None:
    """Build the model on the meta device (no memory) and compare its weight shapes with the
    file's, so a config asking for a 2e9-wide layer is refused before anything is allocated."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no weights (no 'state_dict'); it is an incomplete checkpoint")
    with torch.device("meta"):
        skeleton = model_cls(config)
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if want != got:
        key = sorted(set(want) ^ set(got)) or [k for k in sorted(want) if want[k] != got[k]]
        raise CheckpointError(
            f"{path}: the weights do not match the model's config (first difference: {key[0]} "
            f"{want.get(key[0])} in the config, {got.get(key[0])} in the file); it is a damaged checkpoint"
        )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."
