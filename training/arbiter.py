"""Fit a checkpoint's channel arbiter (:mod:`models.arbiter`) on its validation split.

    python -m training arbiter runs/bundle-s0/model.pt --dataset mixed --option words_text=asr \\
        [--out runs/bundle-s0/model-arbiter.pt]

The three answers (fused, voice alone, words alone) are taken exactly as the live tracker
takes them: the dialogue is pushed utterance by utterance through
:class:`~models.streaming.StreamingClassifier`, each channel withheld from the newest
utterance only, with the checkpoint's temperatures. The bundled model's recipe
(``experiments/bundle.sh``) runs this after training.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np

import models
from models.arbiter import ChannelArbiter, fit_arbiter
from models.streaming import StreamingClassifier
from training.losses import IGNORE
from training.metrics import classification_metrics

log = logging.getLogger(__name__)


def streamed_answers(
    model, temperature: float, channel_temperatures: dict | None, dialogues: list
) -> dict[str, np.ndarray] | None:
    """Per labelled utterance: the fused and each channel's probabilities, label and dialogue.

    None when the model is not bimodal (no channel to arbitrate) or no utterance carries both.
    """
    if not {"audio", "text"} <= set(model.inputs):
        return None
    stream = StreamingClassifier(model, temperature, channel_temperatures=channel_temperatures)
    rows: dict[str, list] = {"fused": [], "audio": [], "text": [], "y": [], "groups": []}
    for d in dialogues:
        stream.reset()
        for u, y in zip(d.utterances, d.labels):
            fused = stream.push(u, per_channel=True)
            ch = stream.last_channels
            if y == IGNORE or not {"audio", "text"} <= set(ch):
                continue
            rows["fused"].append(fused.numpy())
            rows["audio"].append(ch["audio"].numpy())
            rows["text"].append(ch["text"].numpy())
            rows["y"].append(y)
            rows["groups"].append(d.dialogue_id)
    if not rows["y"]:
        return None
    return {k: np.asarray(v) for k, v in rows.items()}


def streamed_probs(model, temperature: float, meta: dict, dialogues: list, arbiter: ChannelArbiter | None):
    """(probabilities (N, C), labels (N,)) of the labelled utterances as the live tracker answers."""
    stream = StreamingClassifier(
        model, temperature, channel_temperatures=meta.get("channel_temperatures"), arbiter=arbiter
    )
    probs, ys = [], []
    for d in dialogues:
        stream.reset()
        for u, y in zip(d.utterances, d.labels):
            p = stream.push(u)
            if y != IGNORE:
                probs.append(p.numpy())
                ys.append(y)
    return np.asarray(probs), np.asarray(ys, dtype=int)


def fit_for(model, temperature: float, meta: dict, val_dialogues: list, num_classes: int) -> dict | None:
    """The arbiter's checkpoint entry fitted on validation dialogues (None: nothing to arbitrate)."""
    answers = streamed_answers(model, temperature, meta.get("channel_temperatures"), val_dialogues)
    if answers is None:
        return None
    arbiter, losses = fit_arbiter(
        answers["fused"], answers["audio"], answers["text"], answers["y"], answers["groups"], num_classes
    )
    return {**arbiter.to_dict(), "cv_log_loss": {str(c): round(v, 5) for c, v in losses.items()}}


def scores(model, temperature: float, meta: dict, dialogues: list, labels: list[str]) -> dict[str, dict]:
    """Weighted F1 etc. of the fused answer and of the arbiter's (when the meta has one)."""
    out = {}
    spec = meta.get("arbiter")
    for name, arbiter in (("fused", None), ("arbiter", ChannelArbiter.from_dict(spec) if spec else None)):
        if name == "arbiter" and arbiter is None:
            continue
        probs, y = streamed_probs(model, temperature, meta, dialogues, arbiter)
        out[name] = classification_metrics(y, np.log(np.clip(probs, 1e-9, 1.0)), labels)
    return out


def run(checkpoint: Path, out: Path | None, val_dialogues: list, test_dialogues: list | None) -> str:
    """Fit on validation, save a copy of the checkpoint with the arbiter, report val/test scores."""
    ck = models.load(checkpoint, device="cpu")
    entry = fit_for(ck.model, ck.temperature, ck.meta, val_dialogues, ck.model.num_classes)
    if entry is None:
        raise ValueError(f"{checkpoint} is not a bimodal model with audio and text: there is nothing to arbitrate")
    meta = copy.deepcopy(ck.meta)
    meta["arbiter"] = entry
    report = []
    for role, dialogues in (("validation", val_dialogues), ("test", test_dialogues)):
        if dialogues:
            s = scores(ck.model, ck.temperature, meta, dialogues, ck.labels)
            meta.setdefault("arbiter_scores", {})[role] = {k: round(v["weighted_f1"], 4) for k, v in s.items()}
            report.append(
                f"{role}: weighted F1 fused {s['fused']['weighted_f1']:.4f}, "
                f"with the arbiter {s['arbiter']['weighted_f1']:.4f}"
            )
    target = out or checkpoint
    models.save(target, ck.model, ck.labels, ck.pipeline, ck.temperature, meta)
    report.append(f"arbiter (C {entry['c']:g}) written into {target}")
    return "\n".join(report)
