"""Loss pieces several models share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100


def cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Eq. 22 averaged over labelled utterances: (B, U, C), (B, U) -> scalar."""
    if not bool((labels != IGNORE).any()):
        # A batch of unlabelled (context-only) turns: zero, not NaN, and still connected to
        # the graph so every DDP rank takes part in the same backward.
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), weight=weight, ignore_index=IGNORE)


def info_nce(anchor: Tensor, other: Tensor, tau: float) -> Tensor:
    """Mean over anchors i of -log(exp(<a_i, o_i>/tau) / sum_k exp(<a_i, o_k>/tau)).

    ``<.,.>`` is cosine similarity; negatives are the other rows of the mini-batch
    (eqs. 18-20 with in-batch negatives). (N, D), (N, D) -> scalar. N < 2 gives 0:
    with no negative there is nothing to contrast.
    """
    if anchor.shape[0] < 2:
        return anchor.sum() * 0.0
    sim = F.normalize(anchor, dim=-1) @ F.normalize(other, dim=-1).T / tau
    target = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(sim, target)
