"""Users' own conversations, described by a manifest (CSV or JSONL); see docs/manifest.md.

One row (CSV) or one JSON object per line (JSONL) per utterance:

==============  ========  ==================================================================
column          required  meaning
==============  ========  ==================================================================
dialogue_id     yes       any string; the utterances of a dialogue share it
turn            yes       integer >= 0 ordering the utterances of a dialogue (gaps allowed)
speaker         yes       any string naming who speaks (unique within the dialogue)
audio           no*       audio file, relative to the manifest's folder or absolute
start_s         no        segment start in the audio file, seconds (empty: from 0)
end_s           no        segment end, seconds (empty: to the end of the file)
text            no*       transcript (empty: Whisper transcribes the audio)
label           no        emotion label (empty: unlabelled; still used as context)
split           no        split name (train, validation, test, ...)
==============  ========  ==================================================================

(*) a row needs audio or text (or both). ``root`` is either a manifest file or a folder
of one manifest per split (``train.csv``, ``test.jsonl``, ...). In a file with a
``split`` column the split selects rows; a file without one is the single split
``all``. Labels are ``labels=`` when given (anything else is an unknown label);
otherwise they are inferred from every split of the manifest, so all splits share one
order: MELD's seven in MELD's order when every label is one of them, else sorted. A
mix of MELD's labels and others (a typo such as ``furious!!``), or labels that are not
plain names, is refused with the rows named unless ``labels=`` declares them.
Rows with bad types, duplicate (dialogue_id, turn), unknown labels or missing or
unreadable audio are excluded (or kept text-only with ``keep_text_only``) and reported.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data.records import (
    MELD_LABELS,
    DatasetSplit,
    Dialogue,
    Utterance,
    as_names,
    check_options_fraction,
    normalise_text,
    usable_audio,
)
from training.data.report import DataError, LoadReport

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("dialogue_id", "turn", "speaker")
OPTIONAL_COLUMNS = ("audio", "start_s", "end_s", "text", "label", "split")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
WHOLE_FILE_SPLIT = "all"


@dataclass(frozen=True)
class ManifestOptions:
    """``labels``: the label set in order (None: inferred). Audio options as MELD's."""

    labels: tuple[str, ...] | None = None
    check_audio: bool = True
    keep_text_only: bool = False
    max_missing_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.labels is not None:
            object.__setattr__(self, "labels", as_names(self.labels))
            if not self.labels or len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels must be distinct and not empty, got {self.labels}")
            for label in self.labels:  # they end up in checkpoints, terminals and every output
                if len(label) > MAX_LABEL_CHARS or not label.isprintable() or not label.strip():
                    raise ValueError(f"label {label!r} must be 1 to {MAX_LABEL_CHARS} printable characters")
        check_options_fraction(self.max_missing_fraction)


Row = tuple[Path, int, dict[str, Any]]  # manifest file, line number, values


def manifest_splits(root: Path | str) -> tuple[str, ...]:
    """The split names a manifest file or folder offers."""
    root = Path(root)
    files = _manifest_files(root)
    if root.is_dir():
        return tuple(sorted(files))
    return _file_splits(_read_file(files[""]))


def load_manifest(split: str, root: Path | str, options: ManifestOptions | None = None) -> DatasetSplit:
    """The ``split`` of a manifest file or folder (see the module docstring for the format)."""
    options = options or ManifestOptions()
    root = Path(root)
    files = _manifest_files(root)
    all_rows = {name: _read_file(path) for name, path in files.items()}
    unassigned = 0
    if root.is_dir():
        choices = tuple(sorted(files))
        rows = all_rows.get(split)
    else:
        file_rows = all_rows[""]
        choices = _file_splits(file_rows)
        if choices == (WHOLE_FILE_SPLIT,):
            rows = file_rows if split == WHOLE_FILE_SPLIT else None
        else:
            rows = [r for r in file_rows if _text(r[2].get("split")) == split] if split in choices else None
            unassigned = sum(_text(values.get("split")) is None for _, _, values in file_rows)
    if rows is None:
        raise DataError(f"manifest {root} has no split {split!r}: choose one of {', '.join(choices)}")

    labels = options.labels or _infer_labels([r for rs in all_rows.values() for r in rs], root)
    report = LoadReport("manifest", split, source=str(root), rows=len(rows))
    if unassigned:
        report.note(f"{unassigned} rows of {root.name} have an empty split and belong to no split")
    by_dialogue: dict[str, dict[int, Utterance]] = {}
    for path, line, values in rows:
        utt = _utterance(path, line, values, labels, options, report)
        if utt is None:
            continue
        turns = by_dialogue.setdefault(utt.dialogue_id, {})
        if utt.turn in turns:
            report.add("duplicate", utt.source, f"dialogue {utt.dialogue_id!r} turn {utt.turn} appears twice")
            continue
        turns[utt.turn] = utt
    dialogues = tuple(Dialogue(d, tuple(turns[t] for t in sorted(turns))) for d, turns in by_dialogue.items())
    result = DatasetSplit("manifest", split, dialogues, labels, report)
    hint = f"fix the rows listed in the report of {root} (audio paths are relative to the manifest's folder)"
    report.check_fraction(report.affected(), report.rows, "rows", hint, options.max_missing_fraction)
    log.info("%s", report.summary())
    return result


def _file_splits(rows: list[Row]) -> tuple[str, ...]:
    names = sorted({name for _, _, values in rows if (name := _text(values.get("split"))) is not None})
    return tuple(names) if names else (WHOLE_FILE_SPLIT,)


def _manifest_files(root: Path) -> dict[str, Path]:
    """Split name -> file for a folder; ``{"": file}`` for a single manifest file."""
    if root.is_file():
        if root.suffix.lower() not in MANIFEST_SUFFIXES:
            raise DataError(f"manifest {root} must be a .csv or .jsonl file")
        return {"": root}
    if root.is_dir():
        files = {p.stem: p for p in sorted(root.iterdir()) if p.suffix.lower() in MANIFEST_SUFFIXES}
        if files:
            return files
        raise DataError(f"folder {root} holds no <split>.csv or <split>.jsonl manifest")
    raise DataError(f"manifest {root} does not exist; pass root= a .csv/.jsonl manifest or a folder of them")


def _read_file(path: Path) -> list[Row]:
    """Rows of one manifest file; fails when it is not text or a required column is absent from it."""
    try:
        return _parse_file(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"manifest {path} is not a UTF-8 {path.suffix.lstrip('.').upper()} text file ({_short(exc)}); "
            "see docs/manifest.md for the format"
        ) from exc


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_file(path: Path) -> list[Row]:
    rows: list[Row] = []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = [(path, reader.line_num, dict(row)) for row in reader]
    else:
        columns_seen: dict[str, None] = {}
        for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as exc:
                values = {"__error__": f"invalid JSON: {exc.msg}"}
            if not isinstance(values, dict):
                values = {"__error__": "a line must be one JSON object"}
            columns_seen.update(dict.fromkeys(values))
            rows.append((path, line_no, values))
        columns = [c for c in columns_seen if c != "__error__"]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or not {"audio", "text"} & set(columns):
        missing += [] if {"audio", "text"} & set(columns) else ["audio or text"]
        raise DataError(
            f"manifest {path} lacks column(s) {', '.join(missing)}; see docs/manifest.md for the format "
            f"(found {', '.join(columns) or 'no columns'})"
        )
    return rows


def _text(value: Any) -> str | None:
    """A cell as stripped text, None when empty or null."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any, kind: type) -> int | float | None:
    """Parse an int or float cell; None when empty; ValueError when not a finite number."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    text = _text(value)
    if text is None:
        return None
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    if kind is int:
        if number != int(number):
            raise ValueError(f"{text!r} is not an integer")
        return int(number)
    return number


#: What an inferred label may look like: a word or a few (letters, digits, ' - _ and inner spaces).
_LABEL_NAME = re.compile(r"[^\W_](?:[\w' -]*\w)?")
MAX_LABEL_CHARS = 40


def _plain_label(label: str) -> bool:
    return len(label) <= MAX_LABEL_CHARS and _LABEL_NAME.fullmatch(label) is not None


def _infer_labels(rows: list[Row], root: Path) -> tuple[str, ...]:
    """The label set when none is declared: MELD's seven when the data uses only those, the labels
    found when none of them is MELD's; a mix (a typo next to MELD's, "furious!!") is refused."""
    where: dict[str, list[str]] = {}
    for path, line, values in rows:
        if (label := _text(values.get("label"))) is not None:
            where.setdefault(label, []).append(f"{path.name}:{line}")
    found = set(where)
    if not found:
        log.info("manifest %s has no labels: unlabelled data (inference or context only)", root)
        return ()
    if found <= set(MELD_LABELS):
        return MELD_LABELS
    odd = sorted(label for label in found if not _plain_label(label))
    if found & set(MELD_LABELS):
        odd = sorted(found - set(MELD_LABELS))
        what = "has labels outside MELD's seven"
    else:
        what = "has labels that are not plain names"
    if odd:
        listed = ", ".join(f"{label!r} ({len(where[label])} rows, e.g. {where[label][0]})" for label in odd[:5])
        raise DataError(
            f"manifest {root} {what}: {listed}; fix those rows, or declare the whole label set with "
            "--labels a,b,c (labels= in Python)"
        )
    return tuple(sorted(found))


def _utterance(
    path: Path,
    line: int,
    values: dict[str, Any],
    labels: tuple[str, ...],
    options: ManifestOptions,
    report: LoadReport,
) -> Utterance | None:
    """One row as an utterance, or None (reported) when it cannot be used."""
    where = f"{path.name}:{line}"
    if "__error__" in values:
        report.add("bad_value", where, values["__error__"])
        return None
    dialogue_id, speaker = _text(values.get("dialogue_id")), _text(values.get("speaker"))
    if dialogue_id is None or speaker is None:
        report.add("bad_value", where, "dialogue_id and speaker must not be empty")
        return None
    try:
        turn = _number(values.get("turn"), int)
        start_s = _number(values.get("start_s"), float)
        end_s = _number(values.get("end_s"), float)
    except ValueError as exc:
        report.add("bad_value", where, f"turn, start_s and end_s must be numbers: {exc}")
        return None
    if turn is None or turn < 0:
        report.add("bad_value", where, f"turn must be an integer >= 0, got {values.get('turn')!r}")
        return None
    if (start_s is not None and start_s < 0) or (end_s is not None and end_s <= (start_s or 0.0)):
        report.add("bad_value", where, f"segment start_s={start_s} end_s={end_s} is not 0 <= start_s < end_s")
        return None
    label = _text(values.get("label"))
    if label is not None and label not in labels:
        report.add("unknown_label", where, f"label {label!r} is not one of {', '.join(labels) or 'no labels'}")
        return None
    raw_text = _text(values.get("text"))
    text = normalise_text(raw_text) if raw_text else None
    audio_name = _text(values.get("audio"))
    audio: Path | None = None
    if audio_name is not None:
        given = Path(audio_name).expanduser()
        given = given if given.is_absolute() else path.parent / given
        keep, audio = usable_audio(given, text, report, where, options.check_audio, options.keep_text_only, end_s)
        if not keep:
            return None
    if audio is None and text is None:
        report.add("empty_text", where, "the row has neither audio nor text")
        return None
    return Utterance(dialogue_id, turn, speaker, audio, start_s, end_s, text, label, None, where)
