"""Training losses, one function per model family, chosen by model name.

Every loss function has the signature
``loss(model, output, labels, batch) -> dict[str, Tensor]``: ``labels`` is (B, U)
long with -100 where there is no label (padding, unlabeled turns); the dict holds
``"total"`` (what is back-propagated) and its named parts, for logging. ``class_weight``
(C,) or None weighs the classes in every cross-entropy term (``TrainConfig.class_weight_power``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from models.base import EmotionModel, ModelOutput
from models.batch import Batch
from training.losses.bcaf import bcaf_loss
from training.losses.common import IGNORE, cross_entropy, info_nce
from training.losses.gca import gca_loss
from training.losses.hbaf import hbaf_loss, inter_modal_loss
from training.losses.mcfn import mcfn_loss

LossFn = Callable[[EmotionModel, ModelOutput, Tensor, Batch, "Tensor | None"], dict[str, Tensor]]


def _ce_only(
    model: EmotionModel, output: ModelOutput, labels: Tensor, batch: Batch, class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    ce = cross_entropy(output.logits, labels, class_weight)
    return {"total": ce, "ce": ce}


LOSSES: dict[str, LossFn] = {
    "hbaf": hbaf_loss,
    "bclstm": _ce_only,
    "text": _ce_only,
    "audio": _ce_only,
    "bcaf": bcaf_loss,
    "gca": gca_loss,
    "mcfn": mcfn_loss,
}


def compute_loss(
    model: EmotionModel, output: ModelOutput, labels: Tensor, batch: Batch, class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """The training loss of ``model`` (looked up by its name)."""
    try:
        fn = LOSSES[model.name]
    except KeyError:
        raise ValueError(f"no loss registered for model {model.name!r}") from None
    return fn(model, output, labels, batch, class_weight)


__all__ = ["IGNORE", "LOSSES", "compute_loss", "cross_entropy", "hbaf_loss", "info_nce", "inter_modal_loss"]
