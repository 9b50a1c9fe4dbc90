"""Score a saved checkpoint on a dataset split with exactly its own feature pipeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

import models
from training.data import load_dataset
from training.experiment import to_dialogues
from training.extract import ExtractConfig, extract_split
from training.metrics import classification_metrics
from training.trainer import IGNORE, predict


def hide_modality(dialogues: list, modality: str) -> None:
    """Mark one modality absent everywhere (zeroed, present=False): what the model does with the other alone."""
    for d in dialogues:
        for u in d.utterances:
            if modality in u:
                u[modality] = u[modality] * 0
                u[f"{modality}_present"] = False


def checkpoint_dialogues(
    ck: models.Checkpoint, dataset: str, split: str, root: str | None, options: dict[str, Any], extract: ExtractConfig
) -> list:
    """A split's dialogues as model inputs, through exactly the checkpoint's own feature pipeline."""
    p = ck.pipeline
    extract = dataclasses.replace(
        extract,
        audio=p.audio is not None,
        whisper=p.whisper is not None,
        **(
            {
                "whisper_encoder": p.whisper.encoder,
                "whisper_min_window_s": p.whisper.min_window_s,
                "whisper_pad_s": p.whisper.pad_s,
            }
            if p.whisper is not None
            else {}
        ),
        frames=p.frames is not None,
        tokens=p.tokens,
        text_encoder=p.text.encoder if p.text is not None else extract.text_encoder,
        text_pipeline=p.text,
        text_adapter=None,
    )
    data = load_dataset(dataset, split, root, **options)
    unknown = set(data.labels) - set(ck.labels)
    if unknown:
        raise ValueError(f"{dataset} has labels {sorted(unknown)} the checkpoint does not know ({ck.labels})")
    feats = extract_split(data, extract)
    return to_dialogues(data, feats, p, ck.labels)


def evaluate_checkpoint(
    checkpoint: Path,
    dataset: str,
    split: str,
    root: str | None,
    options: dict[str, Any],
    extract: ExtractConfig,
    hide: str | None = None,
) -> dict:
    """Metrics of a checkpoint on a split, optionally with ``hide`` ("audio" or "text") withheld.

    A checkpoint with a channel arbiter is scored as the live tracker answers (utterance by
    utterance, the arbiter on the fused and each channel's answer); ``fused`` then holds the
    fused answer alone.
    """
    ck = models.load(checkpoint)
    dialogues = checkpoint_dialogues(ck, dataset, split, root, options, extract)
    if hide is not None:
        hide_modality(dialogues, hide)
    elif ck.arbiter is not None:
        from training.arbiter import scores

        s = scores(ck.model, ck.temperature, ck.meta, dialogues, ck.labels)
        return {**s["arbiter"], "fused": s["fused"]}
    if ck.prior_shift is not None:
        # scored as the live tracker answers: each dialogue a session, its prior re-estimated as it goes
        from training.prior_fit import adjusted, labelled, session_posteriors

        probs, y = labelled(adjusted(session_posteriors(ck, dialogues), ck.prior_shift))
        logits = np.log(probs.clip(1e-12))
        metrics = classification_metrics(y, logits, ck.labels)
    else:
        logits, y = predict(ck.model, dialogues, 32, next(ck.model.parameters()).device)
        metrics = classification_metrics(y, logits, ck.labels, answer_temperature(ck, dialogues))
    if dataset == "mixed":
        parts = part_of_each_utterance(dialogues)
        metrics["by_part"] = {
            name: {
                k: v
                for k, v in classification_metrics(y[parts == name], logits[parts == name], ck.labels).items()
                if k in ("n", "weighted_f1", "macro_f1", "unweighted_accuracy")
            }
            for name in sorted(set(parts))
        }
    return metrics


def answer_temperature(ck: models.Checkpoint, dialogues: list) -> float:
    """The temperature that calibrates the answer scored here: a channel's own (fitted with the
    other channel withheld, as the live events' ``channels`` use it) when the other channel is
    absent from every utterance, e.g. MELD with ``audio=False`` or ``--hide audio``; else the
    fused one. The fused temperature on a words-alone answer misstates its confidence (ECE)."""
    temps = ck.meta.get("channel_temperatures") or {}
    present = {
        m: any(bool(u.get(f"{m}_present", m in u)) for d in dialogues for u in d.utterances) for m in ("audio", "text")
    }
    for keep, absent in (("text", "audio"), ("audio", "text")):
        if present[keep] and not present[absent] and keep in temps:
            return float(temps[keep])
    return ck.temperature


def part_of_each_utterance(dialogues: list) -> np.ndarray:
    """The part of ``mixed`` (``paired``, ``words``, ``voice``) of each labelled utterance, in
    ``predict``'s order: the dialogue id's first field after an ``augK-`` copy prefix. Its parts
    differ in what carries the emotion, so one pooled score hides which one a change moved."""
    out = []
    for d in dialogues:
        name = d.dialogue_id
        if name.startswith("aug") and "-" in name:
            name = name.split("-", 1)[1]
        out += [name.split("-", 1)[0]] * sum(1 for y in d.labels if y != IGNORE)
    # plain str elements, not numpy strings: the names become keys of a checkpoint's meta, which
    # is loaded weights-only (numpy scalars are refused there)
    return np.array(out, dtype=object)
