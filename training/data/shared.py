"""Conversations built from the shared corpora (../shared/data): ``paired`` and ``voice-chains``.

No corpus here has conversations whose audio and transcript both carry the emotion,
so two honest constructions (name them as such in every result):

- ``paired``: a real MELD dialogue (text, speakers, labels) where every utterance gets
  a real acted/natural speech clip from ``acted_speech.csv`` with the same 7-class
  label. Each MELD speaker of a dialogue gets one voice (clip speaker). MELD train
  dialogues give ``train`` and a seeded held-out ``validation``; MELD dev dialogues
  give ``test`` (the MELD test split is not shared; the README asks for results on
  dev). When the chosen voice has no clip of a needed label, the clip comes from
  another voice of the same corpus and gender in the split (else the same corpus, any
  gender); each substitution is counted in the report. Voices are chosen among the
  split's voices that have every label the MELD speaker needs, else whose corpus has
  them, so substitutions are rare; utterances whose label no allowed corpus has in the
  split (e.g. surprise with only EmoDB/URDU) are excluded by design and counted.
- ``voice-chains``: chains of clips from one or two voices of a split (RAVDESS by
  default): the words are neutral, only the voice carries the emotion. Text is the
  clip's sentence where known (RAVDESS), else None (Whisper fills it). Two-voice chains
  take both voices from one corpus. URDU's speakers each recorded nearly one emotion
  only, so their chains (and their voices in ``paired``) tie voice to label.

Voice (clip speaker) splits are disjoint: within each corpus and gender the voices are
shuffled from the seed and dealt to test (20%), validation (15%) and train, the same
way for both datasets. Everything is deterministic from ``seed``; each dialogue draws
from its own seeded generator, so ``max_dialogues`` does not change the dialogues kept.
Clips are reused across dialogues: there are ~2k clips for ~11k MELD utterances. MELD
speakers' genders are unknown here, so voices are not matched to them by gender.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from training.data.meld import MeldOptions, load_meld
from training.data.records import (
    MELD_LABELS,
    DatasetSplit,
    Dialogue,
    Utterance,
    as_names,
    check_audio,
    check_options_fraction,
    require_split,
)
from training.data.report import DataError, LoadReport

log = logging.getLogger(__name__)

SHARED_SPLITS = ("train", "validation", "test")
DEFAULT_ROOT = Path("../shared/data")
CORPORA = ("ravdess", "emodb", "urdu")
INDEX_COLUMNS = ("corpus", "path", "label7", "speaker", "gender")
#: Share of each corpus-and-gender group's voices dealt to each held-out split.
VOICE_FRACTIONS = {"test": 0.2, "validation": 0.15}
#: EmoDB speaker genders (EmoDB documentation; the index leaves them empty).
EMODB_GENDERS = {
    "03": "M",
    "08": "F",
    "09": "F",
    "10": "M",
    "11": "M",
    "12": "M",
    "13": "F",
    "14": "F",
    "15": "M",
    "16": "F",
}
#: RAVDESS statements by the SS field of ``03-01-EE-II-SS-RR-AA``.
RAVDESS_SENTENCES = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


@dataclass(frozen=True)
class Clip:
    corpus: str
    path: Path
    label: str
    voice: str
    gender: str
    text: str | None


def _check_common(corpora: tuple[str, ...], max_missing_fraction: float) -> None:
    unknown = sorted(set(corpora) - set(CORPORA))
    if unknown or not corpora:
        raise ValueError(f"corpora must be a non-empty subset of {CORPORA}, got {corpora}")
    check_options_fraction(max_missing_fraction)


@dataclass(frozen=True)
class PairedOptions:
    """``seed``: voice splits, validation dialogues and every clip choice. ``corpora``: where
    the clips come from (a tuple, or a comma-separated string). ``max_dialogues``: keep the
    first N dialogues of the split (quick runs). ``validation_fraction`` of MELD train's
    dialogues form ``validation``. ``check_audio``: probe every clip's header at load."""

    seed: int = 0
    corpora: tuple[str, ...] = CORPORA
    max_dialogues: int | None = None
    validation_fraction: float = 0.1
    check_audio: bool = True
    max_missing_fraction: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpora", as_names(self.corpora))
        _check_common(self.corpora, self.max_missing_fraction)
        if self.max_dialogues is not None and self.max_dialogues < 1:
            raise ValueError(f"max_dialogues must be >= 1 or None, got {self.max_dialogues}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")


@dataclass(frozen=True)
class VoiceChainOptions:
    """``num_dialogues`` None: enough chains to use each clip of the split about once.
    ``label_persistence``: chance a speaker keeps their previous label; ``switch_probability``:
    chance the other speaker takes the next turn in a two-voice chain."""

    seed: int = 0
    corpora: tuple[str, ...] = ("ravdess",)
    num_dialogues: int | None = None
    min_turns: int = 4
    max_turns: int = 12
    two_speaker_fraction: float = 0.5
    label_persistence: float = 0.5
    switch_probability: float = 0.8
    check_audio: bool = True
    max_missing_fraction: float = 0.05
    #: with ``num_dialogues`` None: this many times the chains that use each clip about once (each
    #: clip recurs in new company; the first chains are the same whatever the number)
    repeats: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "corpora", as_names(self.corpora))
        _check_common(self.corpora, self.max_missing_fraction)
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.num_dialogues is not None and self.num_dialogues < 1:
            raise ValueError(f"num_dialogues must be >= 1 or None, got {self.num_dialogues}")
        if not 1 <= self.min_turns <= self.max_turns:
            raise ValueError(f"need 1 <= min_turns <= max_turns, got {self.min_turns}, {self.max_turns}")
        for name in ("two_speaker_fraction", "label_persistence", "switch_probability"):
            check_options_fraction(getattr(self, name), name)


def read_clips(root: Path, corpora: tuple[str, ...], report: LoadReport | None = None) -> list[Clip]:
    """Clips of ``corpora`` from ``acted_speech.csv`` that have a 7-class label (paths made absolute)."""
    index = root / "acted_speech.csv"
    if not index.is_file():
        raise DataError(f"{index} does not exist; point root at the shared data folder holding acted_speech.csv")
    base = Path(os.path.abspath(root))
    with index.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{index} lacks column(s) {', '.join(missing)}; it needs {', '.join(INDEX_COLUMNS)}")
        clips = []
        for row in reader:
            if row["corpus"] not in corpora:
                continue
            label = row["label7"].strip()
            if not label:
                if report is not None:
                    report.exclude_by_design(
                        f"{row['corpus']} clips of the index without a 7-class label ({row['label']})"
                    )
                continue
            if label not in MELD_LABELS:
                if report is not None:
                    report.add("unknown_label", row["path"], f"label7 {label!r} is not one of {MELD_LABELS}")
                continue
            clips.append(_clip(row, base, label))
    return clips


def _clip(row: dict[str, str], base: Path, label: str) -> Clip:
    corpus, voice, stem = row["corpus"], row["speaker"], Path(row["path"]).stem
    gender = row["gender"].strip()
    if not gender and corpus == "emodb":
        gender = EMODB_GENDERS.get(voice.rsplit("_", 1)[-1], "")
    text = None
    if corpus == "ravdess":
        parts = stem.split("-")
        text = RAVDESS_SENTENCES.get(parts[4]) if len(parts) == 7 else None
    return Clip(corpus, base / row["path"], label, voice, gender, text)


def voice_splits(clips: list[Clip], seed: int) -> dict[str, str]:
    """Voice -> split; disjoint, balanced per corpus and gender, deterministic from ``seed``."""
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for clip in clips:
        groups[(clip.corpus, clip.gender)].add(clip.voice)
    out = {}
    for (corpus, gender), voices in sorted(groups.items()):
        ordered = sorted(voices)
        random.Random(f"voices:{seed}:{corpus}:{gender}").shuffle(ordered)
        counts = {s: round(len(ordered) * f) for s, f in VOICE_FRACTIONS.items()}
        if len(ordered) >= 3:
            counts = {s: max(1, n) for s, n in counts.items()}
        start = 0
        for split, n in counts.items():
            out.update(dict.fromkeys(ordered[start : start + n], split))
            start += n
        out.update(dict.fromkeys(ordered[start:], "train"))
    return out


def _split_pool(
    split: str, root: Path, corpora: tuple[str, ...], seed: int, probe: bool, max_fraction: float, report: LoadReport
) -> list[Clip]:
    """The usable clips of the split's voices (missing or unreadable files reported and left out)."""
    clips = read_clips(root, corpora, report)
    splits = voice_splits(clips, seed)
    mine = [c for c in clips if splits[c.voice] == split]
    pool = [c for c in mine if check_audio(c.path, report, str(c.path), probe)]
    report.check_fraction(
        len(mine) - len(pool),
        len(mine),
        "clips",
        f"check the files listed in {root / 'acted_speech.csv'}",
        max_fraction,
    )
    if not pool:
        raise DataError(f"no clip of corpora {', '.join(corpora)} is in the {split} split; add corpora or voices")
    return pool


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the data folder for reports; absolute when it lies elsewhere."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _pick_clip(rng: random.Random, clips: list[Clip], used: set[Path]) -> Clip:
    fresh = [c for c in clips if c.path not in used]
    return rng.choice(fresh or clips)


class _Pools:
    """A split's clips indexed by voice and label, and by corpus, gender and label."""

    def __init__(self, pool: list[Clip]) -> None:
        self.info = {c.voice: c for c in pool}
        self.by_voice: dict[str, dict[str, list[Clip]]] = defaultdict(lambda: defaultdict(list))
        # (corpus or "*", gender or "*", label) -> clips
        self.by_group: dict[tuple[str, str, str], list[Clip]] = defaultdict(list)
        for clip in pool:
            self.by_voice[clip.voice][clip.label].append(clip)
            for key in ((clip.corpus, clip.gender), (clip.corpus, "*"), ("*", "*")):
                self.by_group[(*key, clip.label)].append(clip)
        self.voices = sorted(self.by_voice)

    def covers(self, voice: str, labels: set[str]) -> bool:
        return labels <= set(self.by_voice[voice])

    def corpus_covers(self, voice: str, labels: set[str]) -> bool:
        return all((self.info[voice].corpus, "*", label) in self.by_group for label in labels)


def _assign_voices(dialogue: Dialogue, rng: random.Random, pools: _Pools, report: LoadReport) -> dict[str, str]:
    """MELD speaker -> voice: distinct voices, preferring ones with every label the speaker needs."""
    needs: dict[str, set[str]] = defaultdict(set)
    for utt in dialogue.utterances:
        needs[utt.speaker].add(utt.label)
    assigned: dict[str, str] = {}
    for speaker in dialogue.speakers:
        free = [v for v in pools.voices if v not in assigned.values()]
        if not free:
            report.count("voice reused for a second speaker of a dialogue (more speakers than voices)")
            free = pools.voices
        full = [v for v in free if pools.covers(v, needs[speaker])]
        covered = [v for v in free if pools.corpus_covers(v, needs[speaker])]
        assigned[speaker] = rng.choice(full or covered or free)
    return assigned


def _voice_dialogue(
    dialogue: Dialogue, rng: random.Random, pools: _Pools, base: Path, report: LoadReport
) -> Dialogue | None:
    """The MELD dialogue with a clip of the same label for every utterance (substitutions counted)."""
    assigned = _assign_voices(dialogue, rng, pools, report)
    used: set[Path] = set()
    utterances = []
    for utt in dialogue.utterances:
        voice = pools.info[assigned[utt.speaker]]
        others = set(assigned.values()) - {voice.voice}
        clip, note = None, ""
        if pools.by_voice[voice.voice].get(utt.label):
            clip = _pick_clip(rng, pools.by_voice[voice.voice][utt.label], used)
        else:
            fallbacks = (
                ((voice.corpus, voice.gender), f"another {voice.corpus} voice of the same gender"),
                ((voice.corpus, "*"), f"another {voice.corpus} voice of the other gender"),
                (("*", "*"), "a voice of another corpus"),
            )
            for key, event in fallbacks:
                group = pools.by_group.get((*key, utt.label), [])
                if group:
                    group = [c for c in group if c.voice not in others] or group
                    clip = _pick_clip(rng, group, used)
                    report.count(f"clip from {event} (the assigned voice has no {utt.label} clip)")
                    note = " (voice substituted)"
                    break
        if clip is None:
            report.exclude_by_design(f"utterances labelled {utt.label} (no clip of it in the split's corpora)")
            continue
        used.add(clip.path)
        source = f"{utt.source} <- {_relative(clip.path, base)}{note}"
        utterances.append(
            Utterance(
                dialogue.id, utt.turn, utt.speaker, clip.path, None, None, utt.text, utt.label, clip.voice, source
            )
        )
    return Dialogue(dialogue.id, tuple(utterances)) if utterances else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


@functools.lru_cache(maxsize=2)
def _meld_text(split: str, folder: str, mtime: float) -> DatasetSplit:
    """MELD transcripts, cached: train and validation both start from MELD train (read-only use)."""
    return load_meld(split, Path(folder), MeldOptions(audio=False))


def meld_dialogues(
    split: str, root: Path, seed: int = 0, validation_fraction: float = 0.1
) -> tuple[DatasetSplit, list[Dialogue]]:
    """MELD's dialogues for a shared split: ``train``/``validation`` are a seeded partition of
    MELD train's dialogues (``validation_fraction`` of them held out), ``test`` is MELD dev."""
    meld_split = "dev" if split == "test" else "train"
    meld = _meld_text(meld_split, os.path.abspath(root / "meld"), _mtime(root / "meld" / f"{meld_split}_sent_emo.csv"))
    dialogues = list(meld.dialogues)
    if split != "test":
        ids = sorted(d.id for d in dialogues)
        held = set(random.Random(f"paired-validation:{seed}").sample(ids, round(len(ids) * validation_fraction)))
        dialogues = [d for d in dialogues if (d.id in held) == (split == "validation")]
    return meld, dialogues


def load_paired(split: str, root: Path | str = DEFAULT_ROOT, options: PairedOptions | None = None) -> DatasetSplit:
    """MELD dialogues voiced by real emotional speech clips of the same label (see module docstring)."""
    options = options or PairedOptions()
    require_split("paired", split, SHARED_SPLITS)
    root = Path(root)
    meld, dialogues = meld_dialogues(split, root, options.seed, options.validation_fraction)
    meld_split = meld.name
    dialogues = dialogues[: options.max_dialogues]

    report = LoadReport("paired", split, source=f"{root / 'meld'} + {root / 'acted_speech.csv'}")
    report.note(f"text, speakers and labels from MELD {meld_split}; audio from clips of {', '.join(options.corpora)}")
    report.problems.extend(meld.report.problems)
    pool = _split_pool(
        split, root, options.corpora, options.seed, options.check_audio, options.max_missing_fraction, report
    )
    pools = _Pools(pool)
    base = Path(os.path.abspath(root))
    out = []
    for dialogue in dialogues:
        report.rows += len(dialogue)
        rng = random.Random(f"paired:{options.seed}:{split}:{dialogue.id}")
        voiced = _voice_dialogue(dialogue, rng, pools, base, report)
        if voiced is not None:
            out.append(voiced)
    result = DatasetSplit("paired", split, tuple(out), MELD_LABELS, report)
    log.info("%s", report.summary())
    return result


def load_voice_chains(
    split: str, root: Path | str = DEFAULT_ROOT, options: VoiceChainOptions | None = None
) -> DatasetSplit:
    """Seeded chains of clips from one or two voices of the split (see module docstring)."""
    options = options or VoiceChainOptions()
    require_split("voice-chains", split, SHARED_SPLITS)
    root = Path(root)
    report = LoadReport("voice-chains", split, source=str(root / "acted_speech.csv"))
    report.note(f"voice-only conversations: clips of {', '.join(options.corpora)}; the words carry no emotion")
    pool = _split_pool(
        split, root, options.corpora, options.seed, options.check_audio, options.max_missing_fraction, report
    )
    pools = _Pools(pool)
    voices = pools.voices
    corpus_voices: dict[str, list[str]] = defaultdict(list)
    for voice in voices:
        corpus_voices[pools.info[voice].corpus].append(voice)
    mean_turns = (options.min_turns + options.max_turns) / 2
    count = options.num_dialogues or options.repeats * max(1, math.ceil(len(pool) / mean_turns))

    dialogues = []
    for i in range(count):
        rng = random.Random(f"chains:{options.seed}:{split}:{i}")
        first = rng.choice(voices)
        mates = [v for v in corpus_voices[pools.info[first].corpus] if v != first]
        cast = [first]
        if mates and rng.random() < options.two_speaker_fraction:
            cast.append(rng.choice(mates))
        speaker, last_label, used = 0, {}, set()
        utterances = []
        for turn in range(rng.randint(options.min_turns, options.max_turns)):
            if turn and len(cast) == 2 and rng.random() < options.switch_probability:
                speaker = 1 - speaker
            voice = cast[speaker]
            label = last_label.get(voice)
            if label is None or rng.random() >= options.label_persistence:
                label = rng.choice(sorted(pools.by_voice[voice]))
            last_label[voice] = label
            clip = _pick_clip(rng, pools.by_voice[voice][label], used)
            used.add(clip.path)
            source = _relative(clip.path, Path(os.path.abspath(root)))
            utterances.append(
                Utterance(f"chain{i:05d}", turn, voice, clip.path, None, None, clip.text, label, voice, source)
            )
        dialogues.append(Dialogue(f"chain{i:05d}", tuple(utterances)))
    report.rows = sum(len(d) for d in dialogues)
    result = DatasetSplit("voice-chains", split, tuple(dialogues), MELD_LABELS, report)
    log.info("%s", report.summary())
    return result
