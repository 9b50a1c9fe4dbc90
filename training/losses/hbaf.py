"""HBAF's inter-modal contrastive loss (eqs. 18-21) and total loss (eq. 23)."""

from __future__ import annotations

from torch import Tensor

from models.base import EmotionModel, ModelOutput
from models.batch import Batch
from training.losses.common import IGNORE, cross_entropy, info_nce


def inter_modal_loss(
    h_a: Tensor, h_l: Tensor, z_m: Tensor, tau: float, lambdas: tuple[float, float, float]
) -> dict[str, Tensor]:
    """Eqs. 18-21 over N utterances: (N, D) x3 -> L_am, L_lm, L_al and L_inter.

    Absolute losses anchor each unimodal vector against the fused one of the same
    utterance (positive) and of the other utterances (negatives); the relative loss
    pairs audio with text the same way.
    """
    l_am = info_nce(h_a, z_m, tau)  # eq. 18
    l_lm = info_nce(h_l, z_m, tau)  # eq. 19
    l_al = info_nce(h_a, h_l, tau)  # eq. 20
    inter = lambdas[0] * l_am + lambdas[1] * l_lm + lambdas[2] * l_al  # eq. 21
    return {"l_am": l_am, "l_lm": l_lm, "l_al": l_al, "inter": inter}


def hbaf_loss(
    model: EmotionModel, output: ModelOutput, labels: Tensor, batch: Batch, class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """Eq. 23: L = L_ce + mu * L_inter (L_inter only for bimodal HBAF with the switch on)."""
    cfg = model.config
    ce = cross_entropy(output.logits, labels, class_weight)
    parts = {"ce": ce}
    total = ce
    if "z_m" in output.reps and cfg.contrastive and cfg.mu > 0:
        keep = batch.mask & (labels != IGNORE)
        # utterances whose audio or text was dropped carry no pair to align
        for present in (batch.audio_present, batch.text_present):
            if present is not None:
                keep = keep & present
        inter = inter_modal_loss(
            output.reps["h_a"][keep],
            output.reps["h_l"][keep],
            output.reps["z_m"][keep],
            cfg.tau,
            (cfg.lambda_am, cfg.lambda_lm, cfg.lambda_al),
        )
        parts.update(inter)
        total = ce + cfg.mu * inter["inter"]
    parts["total"] = total
    return parts
