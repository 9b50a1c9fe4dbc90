"""MCFN's joint loss (eq. 11): the three classifiers' cross-entropy (eq. 10) and the mutual adjustment (eq. 7)."""

from __future__ import annotations

from torch import Tensor

from models.base import EmotionModel, ModelOutput
from models.batch import Batch
from models.mcfn import modality_masks
from training.losses.common import IGNORE, cross_entropy


def adjustment_mse(intra: Tensor, inter: Tensor, keep: Tensor, positions: Tensor | None = None) -> Tensor:
    """One term of eq. 7: (1/N) sum_n MSE(intra_n, inter_n) over the N utterances where ``keep`` is True.

    ``intra``/``inter`` are (B, U, D) pooled vectors, or (B, U, L, D) word sequences with
    ``positions`` (B, U, L) marking the valid words; an utterance's MSE is the mean over its
    valid elements. No kept utterance gives 0.
    """
    sq = ((intra - inter) ** 2).mean(-1)
    if positions is not None:
        w = positions.to(sq.dtype)
        sq = (sq * w).sum(-1) / w.sum(-1).clamp(min=1.0)
        keep = keep & positions.any(-1)
    if not keep.any():
        return sq.sum() * 0.0
    return sq[keep].mean()


def mcfn_loss(
    model: EmotionModel, output: ModelOutput, labels: Tensor, batch: Batch, class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """Eq. 11: L = sum_m lambda_m CE_m + omega L_ad, m in {s, t, st} (the classifiers the model has).

    ``ce`` (the fused decision's negative log-likelihood) is returned for logging only:
    eq. 11 trains the three classifiers, not their mixture.
    """
    cfg = model.config
    parts: dict[str, Tensor] = {}
    total = output.logits.sum() * 0.0
    for branch, weight in (("s", cfg.lambda_s), ("t", cfg.lambda_t), ("st", cfg.lambda_st)):
        z = output.reps.get(f"logits_{branch}")
        if z is not None:
            parts[f"ce_{branch}"] = cross_entropy(z, labels, class_weight)  # eq. 10
            total = total + weight * parts[f"ce_{branch}"]
    if "s_intra" in output.reps:
        keep = batch.mask & (labels != IGNORE)
        frames, words = modality_masks(batch)
        has_frames, has_words = frames.any(-1), words.any(-1)
        sequence = cfg.adjustment_level == "sequence"
        reps = output.reps
        # speech needs both frames and words: without words S^c is empty and eq. 7 would only shrink S
        parts["ad_s"] = adjustment_mse(
            reps["s_intra"], reps["s_inter"], keep & has_frames & has_words, words if sequence else None
        )
        parts["ad_t"] = adjustment_mse(reps["t_intra"], reps["t_inter"], keep & has_words, words if sequence else None)
        parts["ad"] = parts["ad_s"] + parts["ad_t"]  # eq. 7
        total = total + cfg.omega * parts["ad"]
    parts["ce"] = cross_entropy(output.logits, labels, class_weight).detach()
    parts["total"] = total
    return parts
