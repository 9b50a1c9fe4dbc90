"""Fit a checkpoint's session-prior correction (models/prior.py) on its validation split.

    python -m training prior CK --dataset mixed --option words_text=asr [--weights 2 5 10 20] [--out CK2]

The training prior is the mean calibrated posterior of the model on validation (the shares
its answers imply where its training data come from); the weight (utterances' worth of trust
in that prior within a session) is chosen on validation: for ``mixed``, by the mean of its
three parts' weighted F1 (paired, words, voice: one pooled score is mostly MELD's label
prior, the very thing this corrects), else by the pooled weighted F1. Test is scored after
the choice. Every dialogue is one session, streamed in order as the live tracker does.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

import models
from models.prior import PriorShift, SessionPrior
from training.evaluate import part_of_each_utterance
from training.trainer import IGNORE, FeatureDialogue, make_batch

WEIGHTS = (2.0, 5.0, 10.0, 20.0)


def session_posteriors(ck: models.Checkpoint, dialogues: list[FeatureDialogue], batch_size: int = 32) -> list:
    """Per dialogue: calibrated posteriors (U, C) of every utterance in order, and its labels (U,).

    The batch forward on a whole dialogue equals the live classifier's window by window
    (online context, tests/test_models.py::test_streaming_equals_batch), so these are the live answers
    before any session correction.
    """
    out = []
    model = ck.model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(dialogues), batch_size):
            chunk = dialogues[i : i + batch_size]
            batch, labels = make_batch(chunk)
            logits = model(batch.to(device)).logits.float().cpu()
            probs = torch.softmax(logits / ck.temperature, dim=-1).numpy()
            mask = batch.mask.cpu().numpy()
            for b in range(len(chunk)):
                out.append((probs[b][mask[b]], labels[b].numpy()[mask[b]]))
    return out


def adjusted(posteriors: list, shift: PriorShift | None) -> list:
    """The same posteriors, each dialogue re-weighted by its own prior so far (None: unchanged)."""
    if shift is None:
        return posteriors
    prior = SessionPrior(shift)
    return [(prior.run(p), y) for p, y in posteriors]


def labelled(posteriors: list) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) posteriors and (N,) labels of the labelled utterances, in dialogue order (``predict``'s)."""
    probs = np.concatenate([p[y != IGNORE] for p, y in posteriors])
    return probs, np.concatenate([y[y != IGNORE] for _, y in posteriors]).astype(int)


def scores(posteriors: list, dialogues: list[FeatureDialogue], mixed: bool) -> dict[str, float]:
    """Weighted F1 of the labelled utterances, pooled, and per part of ``mixed`` with their mean."""
    probs, y = labelled(posteriors)
    pred = probs.argmax(1)
    out = {"pooled": float(f1_score(y, pred, average="weighted"))}
    if mixed:
        parts = part_of_each_utterance(dialogues)
        names = sorted(set(parts))
        for name in names:
            out[name] = float(f1_score(y[parts == name], pred[parts == name], average="weighted"))
        out["parts_mean"] = float(np.mean([out[n] for n in names]))
    return out


def run(ck: models.Checkpoint, out: Path, val: list, test: list | None, mixed: bool, weights=WEIGHTS) -> str:
    """Choose the weight on validation, save the checkpoint with its correction, report both splits."""
    raw_val = session_posteriors(ck, val)
    prior = np.concatenate([p for p, _ in raw_val]).mean(axis=0)
    prior = tuple(float(x) for x in prior / prior.sum())
    key = "parts_mean" if mixed else "pooled"
    table = {"none": scores(raw_val, val, mixed)}
    for w in weights:
        table[w] = scores(adjusted(raw_val, PriorShift(prior, w)), val, mixed)
    best = max(weights, key=lambda w: table[w][key])
    shift = PriorShift(prior, best)
    lines = [f"validation ({key} chooses): " + ", ".join(f"{k}: {v[key]:.4f}" for k, v in table.items())]
    meta = copy.deepcopy(ck.meta)
    meta["prior_shift"] = shift.to_dict()
    record = {"validation": {str(k): {n: round(x, 4) for n, x in v.items()} for k, v in table.items()}}
    if test:
        raw_test = session_posteriors(ck, test)
        before, after = scores(raw_test, test, mixed), scores(adjusted(raw_test, shift), test, mixed)
        record["test"] = {"none": before, str(best): after}
        lines.append(
            "test: " + ", ".join(f"{n} {before[n]:.4f} -> {after[n]:.4f}" for n in before)
        )
    meta["prior_shift_fit"] = record
    models.save(out, ck.model, ck.labels, ck.pipeline, ck.temperature, meta)
    lines.append(f"session prior (weight {best:g} utterances; training prior {[round(x, 3) for x in prior]}) -> {out}")
    return "\n".join(lines)
