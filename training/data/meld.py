"""MELD (Poria et al., ACL 2019) read from the official release layout.

Layout under ``root``::

    train_sent_emo.csv   dev_sent_emo.csv   test_sent_emo.csv
    train_splits/diaX_uttY.mp4
    dev_splits_complete/diaX_uttY.mp4
    output_repeated_splits_test/diaX_uttY.mp4

A clip may also be extracted audio with the same stem (``diaX_uttY.wav``/``.flac``),
which is preferred over the video. CSV columns: Sr No., Utterance, Speaker, Emotion,
Sentiment, Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime. The CSV's
StartTime/EndTime locate the clip in the episode, not in the clip, so utterances
use the whole clip. With ``audio=False`` the CSV alone is enough (text-only use).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from training.data.records import (
    MELD_LABELS,
    DatasetSplit,
    Dialogue,
    Utterance,
    check_options_fraction,
    normalise_text,
    require_split,
    usable_audio,
)
from training.data.report import DataError, LoadReport

log = logging.getLogger(__name__)

MELD_SPLITS = ("train", "dev", "test")
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
OPTIONAL_COLUMNS = ("Sr No.", "Sentiment", "Season", "Episode", "StartTime", "EndTime")
#: Clip suffixes in order of preference: extracted audio decodes faster than video.
CLIP_SUFFIXES = (".wav", ".flac", ".mp4")
DEFAULT_ROOT = Path("../shared/data/meld")


@dataclass(frozen=True)
class MeldOptions:
    """``audio=False``: text-only, no clips needed. ``check_audio``: probe each clip's header
    at load (off: only check the file exists; decoding errors get reported later).
    ``keep_text_only``: keep utterances whose clip is missing or broken without audio
    instead of excluding them. ``max_missing_fraction``: above it, loading fails."""

    audio: bool = True
    check_audio: bool = True
    keep_text_only: bool = False
    max_missing_fraction: float = 0.05

    def __post_init__(self) -> None:
        check_options_fraction(self.max_missing_fraction)


def load_meld(split: str, root: Path | str = DEFAULT_ROOT, options: MeldOptions | None = None) -> DatasetSplit:
    """MELD ``split`` (train, dev or test) with the seven emotion labels in MELD's order."""
    options = options or MeldOptions()
    require_split("meld", split, MELD_SPLITS)
    root = Path(root)
    csv_path = root / f"{split}_sent_emo.csv"
    if not csv_path.is_file():
        raise DataError(
            f"MELD {split} transcript {csv_path} does not exist; point root at the folder holding {split}_sent_emo.csv"
        )
    report = LoadReport("meld", split, source=str(csv_path))
    rows = _read_csv(csv_path, report)
    report.rows = len(rows)
    clips = _index_clips(root / CLIP_DIRS[split]) if options.audio else {}

    by_dialogue: dict[int, dict[int, Utterance]] = {}
    for line, row in rows:
        found = _utterance(row, line, split, csv_path.name, root / CLIP_DIRS[split], clips, options, report)
        if found is None:
            continue
        dia, utt = found
        turn = utt.turn
        turns = by_dialogue.setdefault(dia, {})
        if turn in turns:
            report.add("duplicate", f"{csv_path.name}:{line}", f"dia{dia}_utt{turn} appears twice; kept the first")
            continue
        turns[turn] = utt

    dialogues = tuple(
        Dialogue(f"dia{dia}", tuple(turns[t] for t in sorted(turns))) for dia, turns in sorted(by_dialogue.items())
    )
    result = DatasetSplit("meld", split, dialogues, MELD_LABELS, report)
    hint = (
        f"look in {root / CLIP_DIRS[split]} (clips named diaX_uttY.mp4, .wav or .flac) or pass audio=False"
        if options.audio
        else f"check {csv_path}"
    )
    report.check_fraction(report.affected(), report.rows, "utterances", hint, options.max_missing_fraction)
    log.info("%s", report.summary())
    return result


def _read_csv(path: Path, report: LoadReport) -> list[tuple[int, dict[str, str]]]:
    """Rows with their line numbers; fails on a missing required column, reports missing optional ones."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="cp1252")
        report.note(f"{path.name} is not UTF-8; read it as cp1252")
    reader = csv.DictReader(text.splitlines(keepends=True))
    columns = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = columns
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{path} lacks the MELD column(s) {', '.join(missing)}; it needs {', '.join(REQUIRED_COLUMNS)} "
            f"(found {', '.join(columns) or 'no header'})"
        )
    for column in OPTIONAL_COLUMNS:
        if column not in columns:
            report.add("missing_column", path.name, f"optional column {column!r} is absent", "kept")
    return [(reader.line_num, row) for row in reader]


def _index_clips(folder: Path) -> dict[str, Path]:
    """Stem -> clip path, preferring extracted audio; one directory listing instead of a stat per row."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    rank = {suffix: i for i, suffix in enumerate(CLIP_SUFFIXES)}
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            suffix = path.suffix.lower()
            if suffix not in rank or not entry.is_file():
                continue
            old = found.get(path.stem)
            if old is None or rank[suffix] < rank[old.suffix.lower()]:
                found[path.stem] = path
    return found


def _utterance(
    row: dict[str, str],
    line: int,
    split: str,
    csv_name: str,
    clip_dir: Path,
    clips: dict[str, Path],
    options: MeldOptions,
    report: LoadReport,
) -> tuple[int, Utterance] | None:
    """One CSV row as (dialogue number, utterance), or None (reported) when it cannot be used."""
    where = f"{csv_name}:{line}"
    try:
        dia, turn = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
    except (TypeError, ValueError):
        report.add("bad_value", where, f"Dialogue_ID/Utterance_ID {row['Dialogue_ID']!r}/{row['Utterance_ID']!r}")
        return None
    stem = f"dia{dia}_utt{turn}"
    where = f"meld/{split}/{stem}"
    label = (row["Emotion"] or "").strip().lower()
    if label not in MELD_LABELS:
        report.add("unknown_label", where, f"emotion {row['Emotion']!r} is not one of {', '.join(MELD_LABELS)}")
        return None
    speaker = normalise_text(row["Speaker"] or "")
    if not speaker:
        report.add("bad_value", where, "empty Speaker; named it 'unknown'", "kept")
        speaker = "unknown"
    text = normalise_text(row["Utterance"] or "") or None

    audio: Path | None = None
    if options.audio:
        path = clips.get(stem, clip_dir / f"{stem}.mp4")
        keep, audio = usable_audio(path, text, report, where, options.check_audio, options.keep_text_only)
        if not keep:
            return None
    if text is None:
        if audio is None:
            report.add("empty_text", where, "no transcript and no audio")
            return None
        report.add("empty_text", where, "no transcript; Whisper will fill it", "kept")
    return dia, Utterance(f"dia{dia}", turn, speaker, audio, None, None, text, label, None, where)
