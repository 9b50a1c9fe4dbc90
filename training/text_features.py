"""Text vectors of a split through a fine-tuned encoder, with dialogue context, out of fold.

``python -m training text-tune`` writes an adapter file (the LoRA delta, the pooling, the
context length) and, with ``--folds K``, K fold adapters each trained without a seeded
K-th of the MELD train dialogues. A fusion model trained on vectors from the encoder that
saw its very lines learns to over-trust the text (near-perfect training features); so on
the training split every utterance whose MELD line comes from a held-out dialogue of a
fold is encoded by that fold's adapter, and everything else by the full adapter. The
live tracker uses the full adapter (see :mod:`streamer.text_encoder`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from models.pipeline import TextPipeline
from streamer.text_context import Turn, dialogue_contexts
from training.data.records import DatasetSplit

log = logging.getLogger(__name__)

ADAPTER_FORMAT = "ser-live/text-adapter"


def read_adapter_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no text adapter at {path}: pass a file written by `python -m training text-tune`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable text adapter file; rerun `python -m training text-tune`") from exc
    if not isinstance(payload, dict) or payload.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not a ser-live text adapter (no '{ADAPTER_FORMAT}' marker)")
    return payload


@functools.lru_cache(maxsize=8)
def adapter_encoder(path: str):
    """The encoder (base + merged delta) of an adapter file, loaded once per run."""
    from streamer.text_adapter import TextAdapter
    from streamer.text_encoder import TextEncoder

    p = read_adapter_file(path)
    return TextEncoder(p["encoder"], p["max_tokens"], "auto", p["pooling"], TextAdapter.from_dict(p["adapter"]))


def adapter_pipeline(path: str | Path) -> TextPipeline:
    """The :class:`TextPipeline` a checkpoint trained on an adapter file's vectors records."""
    p = read_adapter_file(path)
    return adapter_encoder(str(path)).pipeline_for(int(p["context_turns"]))


def context_pipeline(encoder_name: str | None, context_turns: int) -> TextPipeline:
    """A frozen encoder reading each line with ``context_turns`` past turns (no adapter)."""
    from training.extract import text_encoder

    enc = text_encoder(encoder_name)
    return TextPipeline(
        encoder=enc.name, pooling="utterance_last4", dim=enc.dim, max_tokens=enc.max_tokens, context_turns=context_turns
    )


def fold_files(path: str | Path) -> list[tuple[Path, set[str]]]:
    """The fold adapters beside an adapter file and the MELD dialogues each held out."""
    out = []
    for f in sorted(Path(path).parent.glob("fold-*/adapter.pt")):
        held = read_adapter_file(f)["result"].get("held_dialogues") or []
        out.append((f, set(held)))
    return out


def _meld_id(dialogue_id: str) -> str:
    """``paired-dia12``/``words-dia12`` -> ``dia12`` (the MELD dialogue a mixed dialogue voices)."""
    return dialogue_id.split("-", 1)[1] if dialogue_id.startswith(("paired-", "words-")) else dialogue_id


def _line_folds(held: list[set[str]]) -> dict[str, int]:
    """MELD train line -> the fold holding out the first dialogue that says it."""
    from training.data.shared import DEFAULT_ROOT, meld_dialogues

    _, train = meld_dialogues("train", DEFAULT_ROOT)
    out: dict[str, int] = {}
    for d in train:
        for k, ids in enumerate(held):
            if d.id in ids:
                for u in d.utterances:
                    out.setdefault(u.text or "", k)
    return out


_PIPELINE_ENCODERS: dict[tuple, object] = {}


def pipeline_encoder(spec: TextPipeline):
    """The encoder a checkpoint's text pipeline describes, loaded once per run."""
    from streamer.text_adapter import TextAdapter
    from streamer.text_encoder import TextEncoder

    adapter_id = TextAdapter.from_dict(spec.adapter).id if spec.adapter is not None else None
    key = (spec.encoder, spec.pooling, spec.max_tokens, adapter_id)
    if key not in _PIPELINE_ENCODERS:
        _PIPELINE_ENCODERS[key] = TextEncoder.from_pipeline(spec)
    return _PIPELINE_ENCODERS[key]


def split_vectors(
    split: DatasetSplit, texts: list[str], source: str | Path | TextPipeline, out_of_fold: bool, store
) -> np.ndarray:
    """(n, D) text vectors of ``split`` (``texts`` in ``split.utterances()`` order) through an
    adapter file (its folds on the training split when ``out_of_fold``) or a checkpoint's text
    pipeline, read from and written to ``store`` keyed by encoder, context and line."""
    folds: list[tuple[Path, set[str]]] = []
    if isinstance(source, TextPipeline):
        context_turns, encoders = source.context_turns, [pipeline_encoder(source)]
    else:
        path = str(Path(source).resolve())
        context_turns = int(read_adapter_file(path)["context_turns"])
        want_folds = out_of_fold and split.name == "train"
        folds = fold_files(path) if want_folds else []
        if want_folds and not folds:
            log.warning(
                "no fold adapters beside %s: the training split's text vectors are in sample "
                "(text-tune --folds K makes them out of fold)", path,
            )
        encoders = [adapter_encoder(path)] + [adapter_encoder(str(f.resolve())) for f, _ in folds]
    line_fold: dict[str, int] | None = None
    jobs: list[tuple[int, str, str | None, int]] = []  # (row, line, context, encoder)
    i = 0
    for d in split.dialogues:
        n = len(d.utterances)
        turns = [Turn(u.speaker, t) for u, t in zip(d.utterances, texts[i : i + n])]
        for j, (u, c) in enumerate(zip(d.utterances, dialogue_contexts(turns, context_turns))):
            which = 0
            if folds:
                mid = _meld_id(d.id)
                hit = next((k for k, (_, h) in enumerate(folds) if mid in h), None)
                if hit is None and d.id.startswith("voice-"):  # voice-only chains speak MELD train lines
                    line_fold = line_fold if line_fold is not None else _line_folds([h for _, h in folds])
                    hit = line_fold.get(u.text or "")
                which = 0 if hit is None else hit + 1
            jobs.append((i + j, texts[i + j], c, which))
        i += n
    keys = [
        hashlib.sha1(f"{encoders[e].id}\n{c or ''}\n{t}".encode()).hexdigest() for _, t, c, e in jobs
    ]
    for e, enc in enumerate(encoders):
        # by length over the whole split: a batch costs its longest input, so similar lengths waste no padding
        todo = sorted(
            {(k, t, c) for k, (_, t, c, w) in zip(keys, jobs) if w == e and k not in store},
            key=lambda ktc: (len(ktc[1]) + len(ktc[2] or ""), ktc[0]),
        )
        for n, lo in enumerate(range(0, len(todo), 256), 1):
            chunk = todo[lo : lo + 256]
            for (k, _, _), vec in zip(chunk, enc.embed([t for _, t, _ in chunk], [c for _, _, c in chunk])):
                store.put(k, vec)
            if n % 8 == 0 and lo + len(chunk) < len(todo):  # a long split keeps what it has done if stopped
                store.save()
                log.info("text vectors of %s-%s: %d of %d lines", split.dataset, split.name, lo + len(chunk), len(todo))
        store.save()
    log.info(
        "text vectors of %s-%s: %d utterances, %d through fold adapters",
        split.dataset, split.name, len(jobs), sum(1 for j in jobs if j[3] > 0),
    )
    return np.stack([store[k] for k in keys]) if jobs else np.zeros((0, encoders[0].dim), np.float32)
