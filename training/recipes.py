"""Named training recipes: each paper's own settings, and the compact one that fits a 2-core CPU.

A recipe is the optimiser settings (:class:`training.trainer.TrainConfig` fields) plus the
model-config fields a paper ties to its training (BCAF's dropout) or, for ``compact``,
the widths that let the whole comparison table train on a CPU. ``paper`` is the default
of ``python -m training train``: each model gets its own paper's numbers, where the
paper gives them; where it does not, the value comes from HBAF's paper (the framework's
defaults) and :data:`NOT_IN_PAPER` says which. Explicit command-line settings override
a recipe; what a run finally used is recorded in its checkpoint meta and metrics
(:func:`describe`), so every results row names its recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RECIPE_NAMES = ("paper", "compact")


@dataclass(frozen=True)
class Recipe:
    name: str
    #: TrainConfig fields (max_epochs, batch_size, lr, weight_decay, patience).
    train: dict[str, Any] = field(default_factory=dict)
    #: Model config fields the recipe sets (each one an explicit ``--set`` can override).
    model: dict[str, Any] = field(default_factory=dict)
    #: Where the numbers come from, one line.
    source: str = ""


# HBAF (Luo et al.): Adam 1e-4, L2 3e-4, 32 dialogues a batch, early stopping with patience 15.
_HBAF = dict(max_epochs=200, batch_size=32, lr=1e-4, weight_decay=3e-4, patience=15)

_PAPER = {
    "hbaf": Recipe("paper", dict(_HBAF), {}, "HBAF: Adam lr 1e-4, L2 3e-4, batch 32, patience 15"),
    # BCAF Section IV-C: Adam 1e-4, early stopping with patience 15, L2 1e-4, dropout 0.3 (batch not given).
    "bcaf": Recipe(
        "paper",
        dict(_HBAF, weight_decay=1e-4),
        {"dropout": 0.3},
        "BCAF IV-C: Adam lr 1e-4, patience 15, L2 1e-4, dropout 0.3; batch 32 (not given)",
    ),
    # GCA Section 3.2: Adam 1e-5, batch 2, 50 epochs; no L2 and no early stopping are mentioned, so the
    # patience spans all 50 epochs and validation only picks the best epoch.
    "gca": Recipe(
        "paper",
        dict(max_epochs=50, batch_size=2, lr=1e-5, weight_decay=0.0, patience=50),
        {},
        "GCA 3.2: Adam lr 1e-5, batch 2, 50 epochs (batch of dialogues here, of utterances there); no L2",
    ),
    # MCFN Section 3: Adam 1e-4, batch 32 (L2 and stopping not given).
    "mcfn": Recipe(
        "paper",
        dict(_HBAF, weight_decay=0.0),
        {},
        "MCFN 3: Adam lr 1e-4, batch 32; no L2 given; patience 15 (not given)",
    ),
}
for _baseline in ("bclstm", "text", "audio"):  # no paper of their own here: the framework's (HBAF's) settings
    _PAPER[_baseline] = Recipe("paper", dict(_HBAF), {}, "baseline: HBAF's training settings")

#: Settings of the ``paper`` recipe that the model's paper does not give (filled from HBAF's or ours).
NOT_IN_PAPER = {
    "bcaf": ("batch_size", "max_epochs"),
    "gca": ("weight_decay", "patience"),
    "mcfn": ("weight_decay", "patience", "max_epochs"),
}

# The compact recipe of docs/results.md's paired table (experiments/paired.sh): one set of CPU
# settings for every model, and compact widths.
_COMPACT_TRAIN = dict(max_epochs=40, batch_size=32, lr=5e-4, weight_decay=3e-4, patience=6)
_COMPACT_WIDTHS = {
    "hbaf": dict(d_model=128, lstm_hidden=64, transformer_ff=256, gru_hidden=128, ffn_dim=256),
    "bcaf": dict(d_model=128, latent_dim=128, heads=4, ffn_dim=256, attention_layers=1),
    # frame_stride 4: the utterance-level GCA attends over 25 frames a second (the paper's wav2vec 2.0 gives 50)
    "gca": dict(d_model=128, ffn_dim=256, shared_dim=64, frame_stride=4),
    "mcfn": dict(conv_channels=(64, 64, 64), text_width=128),
}
_COMPACT = {
    name: Recipe(
        "compact",
        dict(_COMPACT_TRAIN),
        _COMPACT_WIDTHS.get(name, {}),
        "CPU: Adam lr 5e-4, L2 3e-4, batch 32, patience 6, at most 40 epochs, compact widths",
    )
    for name in _PAPER
}

RECIPES = {"paper": _PAPER, "compact": _COMPACT}


def recipe_for(name: str, model: str) -> Recipe:
    """The recipe ``name`` for ``model``; a ValueError names the choices."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPE_NAMES)}")
    try:
        return RECIPES[name][model]
    except KeyError:
        raise ValueError(f"recipe {name!r} has no settings for model {model!r}") from None


def resolve(
    name: str, model: str, train_overrides: dict[str, Any], model_overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Apply explicit settings over recipe ``name`` for ``model``.

    ``train_overrides`` holds only the TrainConfig fields the user set (None values are
    ignored). Returns (TrainConfig kwargs, model options, the record for :func:`describe`).
    """
    recipe = recipe_for(name, model)
    given = {k: v for k, v in train_overrides.items() if v is not None}
    train = {**recipe.train, **given}
    options = {**recipe.model, **model_overrides}
    changed = sorted(
        [k for k, v in given.items() if recipe.train.get(k) != v]
        + [k for k, v in model_overrides.items() if k in recipe.model and recipe.model[k] != v]
    )
    record = {"name": name, "source": recipe.source, "overridden": changed}
    return train, options, record


def describe(record: dict[str, Any] | None, train: Any = None) -> dict[str, Any]:
    """The recipe entry of a checkpoint's meta and a run's metrics: name, changes, the optimiser settings used."""
    out = dict(record or {"name": "unrecorded"})
    if train is not None:
        keep = ("max_epochs", "batch_size", "lr", "weight_decay", "patience", "class_weight_power")
        out["train"] = {k: v for k, v in dataclasses.asdict(train).items() if k in keep}
    return out


def label(record: dict[str, Any] | str | None) -> str:
    """Short name for a results row: ``compact``, ``paper``, ``compact+lr,patience`` when settings were changed."""
    if isinstance(record, str):
        return record
    if not record:
        return "unrecorded"
    changed = record.get("overridden") or []
    return record.get("name", "unrecorded") + ("+" + ",".join(changed) if changed else "")
