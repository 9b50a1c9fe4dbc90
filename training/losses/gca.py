"""GCA's margin loss over (modality, label) triples (eq. 6) and total loss (eq. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from models.base import EmotionModel, ModelOutput
from models.batch import Batch
from training.losses.common import IGNORE, cross_entropy

# Anchors per chunk are chosen so one chunk's (anchors, positives, negatives) hinge
# tensor stays near this many entries; chunks are recomputed in backward.
_CHUNK_ENTRIES = 1 << 22


def _hinge_sum(pos_sim: Tensor, neg_sim: Tensor, pos: Tensor, neg: Tensor, margin: float) -> Tensor:
    """Sum over anchors i, positives j, negatives k of max(0, margin - s_ij + s_ik) on valid triples."""
    hinge = torch.relu(margin - pos_sim[:, :, None] + neg_sim[:, None, :])
    valid = pos[:, :, None] & neg[:, None, :]
    return torch.where(valid, hinge, torch.zeros((), dtype=hinge.dtype, device=hinge.device)).sum()


def margin_loss(features: Tensor, modality: Tensor, label: Tensor, margin: float) -> Tensor:
    """Eq. 6: mean over all triples (i, j, k) with m[i] != m[j], m[i] = m[k], c[i] = c[j], c[i] != c[k]
    of max(0, margin - cos(x_i, x_j) + cos(x_i, x_k)).

    (S, D) features with (S,) modality and label ids -> scalar. Every triple of the
    batch is used (no sampling), so the loss is a deterministic function of the batch.
    With no valid triple the loss is 0 (still attached to the graph).
    """
    total = features.sum() * 0.0
    count = 0
    z = F.normalize(features, dim=-1, eps=1e-8)
    for m in modality.unique(sorted=True).tolist():
        own = modality == m
        anchors, others, same = z[own], z[~own], z[own]
        c_anchor, c_other, c_same = label[own], label[~own], label[own]
        pos = c_anchor[:, None] == c_other[None, :]  # same emotion, other modality
        neg = c_anchor[:, None] != c_same[None, :]  # same modality, other emotion
        count += int((pos.sum(1) * neg.sum(1)).sum())
        if not (pos.any() and neg.any()):
            continue
        pos_sim, neg_sim = anchors @ others.T, anchors @ same.T
        step = max(1, _CHUNK_ENTRIES // max(1, others.shape[0] * same.shape[0]))
        for start in range(0, anchors.shape[0], step):
            rows = slice(start, start + step)
            args = (pos_sim[rows], neg_sim[rows], pos[rows], neg[rows], margin)
            if torch.is_grad_enabled() and features.requires_grad:
                total = total + checkpoint(_hinge_sum, *args, use_reentrant=False)
            else:
                total = total + _hinge_sum(*args)
    return total / count if count else total


def gca_loss(
    model: EmotionModel, output: ModelOutput, labels: Tensor, batch: Batch, class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """Eq. 8: L = L_task + lambda L_mar; L_mar only with the shared encoder (``homogeneous``).

    The margin loss's samples are the homogeneous audio and text features of every
    labelled utterance whose modality is present (a dropped modality's stand-in vector
    carries no emotion to compare).
    """
    cfg = model.config
    ce = cross_entropy(output.logits, labels, class_weight)  # eq. 7
    parts = {"ce": ce}
    total = ce
    if "com_a" in output.reps and cfg.margin_weight > 0:
        keep = batch.mask & (labels != IGNORE)
        keep_a = keep if batch.audio_present is None else keep & batch.audio_present
        keep_t = keep if batch.text_present is None else keep & batch.text_present
        com_a, com_t = output.reps["com_a"][keep_a], output.reps["com_t"][keep_t]
        features = torch.cat([com_a, com_t])
        device = features.device
        modality = torch.cat(
            [
                torch.zeros(len(com_a), dtype=torch.long, device=device),
                torch.ones(len(com_t), dtype=torch.long, device=device),
            ]
        )
        label = torch.cat([labels[keep_a], labels[keep_t]])
        mar = margin_loss(features, modality, label, cfg.margin)
        parts["margin"] = mar
        total = ce + cfg.margin_weight * mar
    parts["total"] = total
    return parts
