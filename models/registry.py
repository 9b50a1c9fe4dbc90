"""Model names -> (model class, config class). The one place a new model is added."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from models.base import ContextConfig, EmotionModel

# name -> "module:ModelClass:ConfigClass"; imported lazily so that `models.load`
# does not pay for every architecture.
_ENTRIES = {
    "hbaf": "models.hbaf:HBAF:HBAFConfig",
    "bclstm": "models.baselines:BCLSTM:BCLSTMConfig",
    "text": "models.baselines:TextOnly:UnimodalConfig",
    "audio": "models.baselines:AudioOnly:UnimodalConfig",
    "bcaf": "models.bcaf:BCAF:BCAFConfig",
    "gca": "models.gca:GCA:GCAConfig",
    "mcfn": "models.mcfn:MCFN:MCFNConfig",
}

MODEL_NAMES = tuple(_ENTRIES)


def lookup(name: str) -> tuple[type[EmotionModel], type]:
    try:
        module, model_cls, config_cls = _ENTRIES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}") from None
    mod = importlib.import_module(module)
    return getattr(mod, model_cls), getattr(mod, config_cls)


def build(name: str, context: ContextConfig | None = None, **overrides: Any) -> EmotionModel:
    """Build model ``name`` from its default config with ``overrides`` applied."""
    model_cls, config_cls = lookup(name)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"model {name!r} has no settings {unknown}; it has {sorted(fields)}")
    if context is not None:
        overrides["context"] = context
    return model_cls(config_cls(**overrides))
