"""Datasets for ``python -m training``: one registry, one record type, one report.

Every dataset loads through :func:`load_dataset` into a :class:`DatasetSplit` of
:class:`Dialogue` objects made of :class:`Utterance` records, with a
:class:`LoadReport` saying what was excluded, kept degraded or substituted and why.
Adding a dataset means writing a loader ``(split, root, options) -> DatasetSplit`` and
one entry in :data:`DATASETS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import iemocap, manifest, meld, mixed, shared
from training.data.records import MELD_LABELS, DatasetSplit, Dialogue, Utterance, normalise_text, probe_audio
from training.data.report import DataError, LoadReport, Problem

__all__ = [
    "DATASETS",
    "MELD_LABELS",
    "DataError",
    "DatasetLoader",
    "DatasetSplit",
    "Dialogue",
    "LoadReport",
    "Problem",
    "Utterance",
    "dataset_names",
    "dataset_splits",
    "load_dataset",
    "normalise_text",
    "probe_audio",
]


@dataclass(frozen=True)
class DatasetLoader:
    """How to load one named dataset.

    ``splits`` None means the data names its splits (manifests); ``default_root`` None
    means the user must say where the data is (it is not shipped or shared).
    """

    name: str
    load: Callable[[str, Path, Any], DatasetSplit]
    options: type
    splits: tuple[str, ...] | None
    default_root: Path | None
    description: str
    root_hint: str


DATASETS: dict[str, DatasetLoader] = {
    "meld": DatasetLoader(
        "meld",
        meld.load_meld,
        meld.MeldOptions,
        meld.MELD_SPLITS,
        meld.DEFAULT_ROOT,
        "MELD, official release layout (CSV + clips); audio=False for text only",
        "the folder holding {train,dev,test}_sent_emo.csv and the clip folders",
    ),
    "iemocap": DatasetLoader(
        "iemocap",
        iemocap.load_iemocap,
        iemocap.IemocapOptions,
        iemocap.IEMOCAP_SPLITS,
        None,
        "IEMOCAP, six classes, leave-one-session-out (test_session)",
        "the IEMOCAP_full_release folder holding Session1..Session5",
    ),
    "manifest": DatasetLoader(
        "manifest",
        manifest.load_manifest,
        manifest.ManifestOptions,
        None,
        None,
        "your own conversations described by a CSV/JSONL manifest (docs/manifest.md)",
        "a .csv/.jsonl manifest file or a folder of <split>.csv/.jsonl files",
    ),
    "paired": DatasetLoader(
        "paired",
        shared.load_paired,
        shared.PairedOptions,
        shared.SHARED_SPLITS,
        shared.DEFAULT_ROOT,
        "real MELD dialogues voiced by real emotional speech clips of the same label",
        "the shared data folder holding meld/ and acted_speech.csv",
    ),
    "voice-chains": DatasetLoader(
        "voice-chains",
        shared.load_voice_chains,
        shared.VoiceChainOptions,
        shared.SHARED_SPLITS,
        shared.DEFAULT_ROOT,
        "chains of acted clips from one or two voices; only the voice carries the emotion",
        "the shared data folder holding acted_speech.csv",
    ),
    "tts-words": DatasetLoader(
        "tts-words",
        mixed.load_tts_words,
        mixed.TtsWordsOptions,
        shared.SHARED_SPLITS,
        shared.DEFAULT_ROOT,
        "real MELD dialogues read by synthetic voices (espeak-ng, flite, festival); only the words carry the emotion",
        "the shared data folder holding meld/",
    ),
    "mixed": DatasetLoader(
        "mixed",
        mixed.load_mixed,
        mixed.MixedOptions,
        shared.SHARED_SPLITS,
        shared.DEFAULT_ROOT,
        "paired + words-only (synthetic voices) + voice-only (neutral words) dialogues",
        "the shared data folder holding meld/ and acted_speech.csv",
    ),
}


def dataset_names() -> tuple[str, ...]:
    return tuple(DATASETS)


def _lookup(name: str) -> DatasetLoader:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}") from None


def _root(loader: DatasetLoader, root: Path | str | None) -> Path:
    if root is not None:
        return Path(root)
    if loader.default_root is None:
        raise DataError(f"dataset {loader.name!r} needs root= pointing at {loader.root_hint}")
    return loader.default_root


def dataset_splits(name: str, root: Path | str | None = None) -> tuple[str, ...]:
    """The split names of dataset ``name`` (a manifest's come from its data, so need ``root``)."""
    loader = _lookup(name)
    if loader.splits is not None:
        return loader.splits
    return manifest.manifest_splits(_root(loader, root))


def make_options(name: str, **options: Any) -> Any:
    """The options dataclass of dataset ``name`` with ``options`` set; unknown names are an error."""
    loader = _lookup(name)
    fields = [f.name for f in dataclasses.fields(loader.options)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise DataError(f"dataset {name!r} has no option(s) {', '.join(unknown)}: choose from {', '.join(fields)}")
    return loader.options(**options)


def load_dataset(name: str, split: str, root: Path | str | None = None, **options: Any) -> DatasetSplit:
    """Load ``split`` of dataset ``name`` from ``root`` (its default when None) with ``options``."""
    loader = _lookup(name)
    if loader.splits is not None and split not in loader.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}: choose one of {', '.join(loader.splits)}")
    config = make_options(name, **options)
    return loader.load(split, _root(loader, root), config)
