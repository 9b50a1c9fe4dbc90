"""BCAF's connection loss (eq. 3) and total loss (eq. 18)."""

from __future__ import annotations

import torch
from torch import Tensor

from models.base import EmotionModel, ModelOutput
from models.batch import Batch
from training.losses.common import cross_entropy


def _squared_norm(x: Tensor, reduction: str) -> Tensor:
    """||x||_F^2 ("sum", as eq. 3 writes it) or its mean over entries ("mean")."""
    return (x**2).sum() if reduction == "sum" else (x**2).mean()


def _gram_term(x: Tensor, y: Tensor, gram: str, reduction: str) -> Tensor:
    """||I - x^T y||_F^2 for (N, Dx), (N, Dy) rows of utterances.

    ``gram="feature"`` forms x^T y (Dx, Dy) against a (rectangular) identity, divided by
    N when ``reduction="mean"``; ``gram="utterance"`` forms x y^T (N, N) against I_N.
    """
    if gram == "feature":
        g = x.T @ y
        if reduction == "mean":
            g = g / x.shape[0]
    else:
        g = x @ y.T
    eye = torch.eye(g.shape[0], g.shape[1], dtype=g.dtype, device=g.device)
    return _squared_norm(eye - g, reduction)


def connection_loss(
    h_a: Tensor,
    h_l: Tensor,
    e_a: Tensor,
    e_l: Tensor,
    d_a: Tensor,
    d_l: Tensor,
    mu: float,
    gram: str = "feature",
    reduction: str = "mean",
    decoder_term: str = "add",
) -> dict[str, Tensor]:
    """Eq. 3 over N utterances: inputs H_m, latent codes e_m and reconstructions d_m, each (N, .).

    L_c = ||H_a - d_a||^2 + ||H_l - d_l||^2 + mu (||I_e - e_a^T e_l||^2 -/+ ||I_d - d_a^T d_l||^2);
    ``decoder_term`` picks the sign of the last term ("subtract" is the printed eq. 3) or drops it.
    With no utterance the loss is 0 (still attached to the graph).
    """
    if h_a.shape[0] == 0:
        zero = (e_a.sum() + e_l.sum() + d_a.sum() + d_l.sum()) * 0.0
        return {"recon_a": zero, "recon_l": zero, "latent_gram": zero, "decoder_gram": zero, "connection": zero}
    recon_a = _squared_norm(h_a - d_a, reduction)
    recon_l = _squared_norm(h_l - d_l, reduction)
    latent = _gram_term(e_a, e_l, gram, reduction)
    if decoder_term == "none":
        decoded = recon_a * 0.0
        total = recon_a + recon_l + mu * latent
    else:
        decoded = _gram_term(d_a, d_l, gram, reduction)
        sign = 1.0 if decoder_term == "add" else -1.0
        total = recon_a + recon_l + mu * (latent + sign * decoded)
    return {"recon_a": recon_a, "recon_l": recon_l, "latent_gram": latent, "decoder_gram": decoded, "connection": total}


def bcaf_loss(
    model: EmotionModel, output: ModelOutput, labels: Tensor, batch: Batch, class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """Eq. 18: L = alpha L_c + beta (L_a + L_l) + L_m (L_c only with the interactive connection network).

    The heads' cross-entropies count labelled utterances; the connection loss is
    self-supervised, so it counts every real utterance whose audio and text are both
    present (a dropped modality's stand-in vector is nothing to reconstruct or align).
    """
    cfg = model.config
    reps = output.reps
    l_m = cross_entropy(reps["logits_m"], labels, class_weight)  # eq. 24
    l_a = cross_entropy(reps["logits_a"], labels, class_weight)  # eq. 20
    l_l = cross_entropy(reps["logits_l"], labels, class_weight)  # eq. 22
    parts = {"l_m": l_m, "l_a": l_a, "l_l": l_l}
    total = l_m + cfg.beta * (l_a + l_l)
    if "d_a" in reps and cfg.alpha > 0:
        keep = batch.mask
        for present in (batch.audio_present, batch.text_present):
            if present is not None:
                keep = keep & present
        conn = connection_loss(
            batch.audio[keep],
            batch.text[keep],
            reps["e_a"][keep],
            reps["e_l"][keep],
            reps["d_a"][keep],
            reps["d_l"][keep],
            cfg.mu,
            cfg.connection_gram,
            cfg.connection_reduction,
            cfg.decoder_term,
        )
        parts.update(conn)
        total = total + cfg.alpha * conn["connection"]
    parts["total"] = total
    return parts
