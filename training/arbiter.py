"""Fit a checkpoint's channel arbiter (:mod:`models.arbiter`) on its validation split.

    python -m training arbiter runs/bundle-s0/model.pt --dataset mixed --option words_text=asr \\
        [--out runs/bundle-s0/model-arbiter.pt]     # default: the checkpoint itself

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
    """Per labelled utterance, as the live tracker streams it: the fused probabilities, each
    channel's own (NaN where the utterance lacks that channel), the label and the dialogue.

    None when the model is not bimodal (no channel to arbitrate) or nothing is labelled.
    """
    if not {"audio", "text"} <= set(model.inputs):
        return None
    stream = StreamingClassifier(model, temperature, channel_temperatures=channel_temperatures)
    rows: dict[str, list] = {"fused": [], "audio": [], "text": [], "y": [], "groups": []}
    for d in dialogues:
        stream.reset()
        for u, y in zip(d.utterances, d.labels):
            fused = stream.push(u, per_channel=True).numpy()
            if y == IGNORE:
                continue
            rows["fused"].append(fused)
            for name in ("audio", "text"):
                p = stream.last_channels.get(name)
                rows[name].append(p.numpy() if p is not None else np.full_like(fused, np.nan))
            rows["y"].append(y)
            rows["groups"].append(d.dialogue_id)
    if not rows["y"]:
        return None
    return {k: np.asarray(v) for k, v in rows.items()}


def _both(answers: dict[str, np.ndarray]) -> np.ndarray:
    """Which utterances carry both channels' answers (the others keep the fused one, as live)."""
    return np.isfinite(answers["audio"]).all(1) & np.isfinite(answers["text"]).all(1)


def _scores(answers: dict[str, np.ndarray], spec: dict | None, labels: list[str]) -> dict[str, dict]:
    """Metrics of the fused answer and, with an arbiter ``spec``, of the arbiter's."""
    out = {"fused": answers["fused"]}
    if spec:
        probs, both = answers["fused"].copy(), _both(answers)
        if both.any():
            probs[both] = ChannelArbiter.from_dict(spec).combine(
                answers["fused"][both], answers["audio"][both], answers["text"][both]
            )
        out["arbiter"] = probs
    y = answers["y"]
    return {name: classification_metrics(y, np.log(np.clip(p, 1e-9, 1.0)), labels) for name, p in out.items()}


def scores(model, temperature: float, meta: dict, dialogues: list, labels: list[str]) -> dict[str, dict]:
    """Weighted F1 etc. of the fused answer and of the arbiter's (when the meta has one)."""
    answers = streamed_answers(model, temperature, meta.get("channel_temperatures"), dialogues)
    if answers is None:
        raise ValueError("no labelled utterance of a bimodal model to score the arbiter on")
    return _scores(answers, meta.get("arbiter"), labels)


def run(ck: models.Checkpoint, out: Path, val_dialogues: list, test_dialogues: list | None) -> str:
    """Fit on validation, save the checkpoint with the arbiter to ``out``, report val/test scores.

    Each split is streamed once: the same answers fit the arbiter and score it.
    """
    meta = copy.deepcopy(ck.meta)
    channel_temperatures = meta.get("channel_temperatures")
    val = streamed_answers(ck.model, ck.temperature, channel_temperatures, val_dialogues)
    both = _both(val) if val is not None else None
    if val is None or not both.any():
        raise ValueError(f"{ck.path} is not a bimodal model with audio and text: there is nothing to arbitrate")
    fit = {k: v[both] for k, v in val.items()}
    classes = ck.model.num_classes
    arbiter, losses = fit_arbiter(fit["fused"], fit["audio"], fit["text"], fit["y"], fit["groups"], classes)
    entry = {**arbiter.to_dict(), "cv_log_loss": {str(c): round(v, 5) for c, v in losses.items()}}
    meta["arbiter"] = entry
    report = []
    test = streamed_answers(ck.model, ck.temperature, channel_temperatures, test_dialogues) if test_dialogues else None
    for role, answers in (("validation", val), ("test", test)):
        if answers is not None:
            s = _scores(answers, entry, ck.labels)
            meta.setdefault("arbiter_scores", {})[role] = {k: round(v["weighted_f1"], 4) for k, v in s.items()}
            report.append(
                f"{role}: weighted F1 fused {s['fused']['weighted_f1']:.4f}, "
                f"with the arbiter {s['arbiter']['weighted_f1']:.4f}"
            )
    models.save(out, ck.model, ck.labels, ck.pipeline, ck.temperature, meta)
    report.append(f"arbiter (C {entry['c']:g}) written into {out}")
    return "\n".join(report)
