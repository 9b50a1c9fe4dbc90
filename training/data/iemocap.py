"""IEMOCAP (Busso et al. 2008) read from the official release layout, six classes.

Layout under ``root`` (the ``IEMOCAP_full_release`` folder)::

    Session1..5/dialog/EmoEvaluation/<dialog>.txt      "[6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5, 2.5, 2.5]"
    Session1..5/dialog/transcriptions/<dialog>.txt     "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
    Session1..5/sentences/wav/<dialog>/<utterance>.wav

The usual six classes (happy, sad, neutral, angry, excited, frustrated). Utterances
the annotators gave another or no majority label (xxx, oth, sur, fea, dis) are
excluded by design and counted as such, not as errors. Utterances of a dialogue are
ordered by start time. The speaker is the session's actor: ``Ses01F_impro01_M013``
is spoken by ``Ses01.M`` (the letter opening the last part of the id; the letter
after ``Ses01`` only says who wore the markers). Splits: sessions other than
``test_session`` give ``train`` and a seeded held-out ``validation`` subset of their
dialogues; ``test_session`` gives ``test`` (leave-one-session-out).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from training.data.records import (
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

IEMOCAP_SPLITS = ("train", "validation", "test")
IEMOCAP_LABELS = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
LABEL_CODES = {"hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated"}
#: Codes outside the six classes: excluded by design (xxx = no majority).
EXCLUDED_CODES = {"xxx": "no majority", "oth": "other", "sur": "surprise", "fea": "fear", "dis": "disgust"}
SESSIONS = (1, 2, 3, 4, 5)

_EVAL_LINE = re.compile(r"^\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+(\S+)")
_TRANSCRIPT_LINE = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s*(.*)$")


@dataclass(frozen=True)
class IemocapOptions:
    """``test_session``: the held-out session. ``validation_fraction`` of the other
    sessions' dialogues (seeded by ``seed``) form ``validation``. Audio options as MELD's."""

    test_session: int = 5
    validation_fraction: float = 0.1
    seed: int = 0
    audio: bool = True
    check_audio: bool = True
    keep_text_only: bool = False
    max_missing_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.test_session not in SESSIONS:
            raise ValueError(f"test_session must be one of {SESSIONS}, got {self.test_session}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        check_options_fraction(self.max_missing_fraction)


@dataclass(frozen=True)
class _Entry:
    utt_id: str
    start_s: float
    end_s: float
    code: str


def load_iemocap(split: str, root: Path | str, options: IemocapOptions | None = None) -> DatasetSplit:
    """IEMOCAP ``split`` (train, validation or test) with the six usual labels."""
    options = options or IemocapOptions()
    require_split("iemocap", split, IEMOCAP_SPLITS)
    root = Path(root)
    sessions = {n: root / f"Session{n}" for n in SESSIONS if (root / f"Session{n}" / "dialog").is_dir()}
    if options.test_session not in sessions:
        raise DataError(
            f"IEMOCAP Session{options.test_session}/dialog not found under {root}; "
            "point root at the IEMOCAP_full_release folder holding Session1..Session5"
        )
    report = LoadReport("iemocap", split, source=str(root))
    missing = [n for n in SESSIONS if n not in sessions]
    if missing:
        report.note(f"sessions {missing} are absent under {root}")

    dialog_files = _select_dialogs(split, sessions, options)
    dialogues = []
    for session_dir, eval_file in dialog_files:
        dialogue = _load_dialog(session_dir, eval_file, options, report)
        if dialogue is not None:
            dialogues.append(dialogue)
    result = DatasetSplit("iemocap", split, tuple(dialogues), IEMOCAP_LABELS, report)
    hint = (
        f"check the Session*/sentences/wav folders under {root} or pass audio=False"
        if options.audio
        else f"check the Session*/dialog folders under {root}"
    )
    report.check_fraction(report.affected(), report.rows, "utterances", hint, options.max_missing_fraction)
    log.info("%s", report.summary())
    return result


def _select_dialogs(split: str, sessions: dict[int, Path], options: IemocapOptions) -> list[tuple[Path, Path]]:
    """(session folder, EmoEvaluation file) of the split's dialogues, sorted by dialogue id."""
    files = []
    for n, session_dir in sorted(sessions.items()):
        if (n == options.test_session) != (split == "test"):
            continue
        eval_dir = session_dir / "dialog" / "EmoEvaluation"
        files += [(session_dir, f) for f in sorted(eval_dir.glob("*.txt")) if not f.name.startswith(".")]
    if split == "test":
        return files
    ids = sorted(f.stem for _, f in files)
    n_val = round(options.validation_fraction * len(ids))
    if options.validation_fraction > 0 and len(ids) > 1:
        n_val = min(max(1, n_val), len(ids) - 1)
    held_out = set(random.Random(f"iemocap-validation:{options.seed}").sample(ids, n_val))
    return [(s, f) for s, f in files if (f.stem in held_out) == (split == "validation")]


def _read_evaluation(path: Path) -> list[_Entry]:
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EVAL_LINE.match(line)
        if match:
            start, end, utt_id, code = match.groups()
            entries.append(_Entry(utt_id, float(start), float(end), code.lower()))
    return entries


def _read_transcripts(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match:
            texts[match.group(1)] = normalise_text(match.group(2))
    return texts


def speaker_of(utt_id: str) -> str:
    """``Ses01F_impro01_M013`` -> ``Ses01.M``: session plus the letter opening the last id part."""
    return f"{utt_id[:5]}.{utt_id.rsplit('_', 1)[-1][:1]}"


def _load_dialog(session_dir: Path, eval_file: Path, options: IemocapOptions, report: LoadReport) -> Dialogue | None:
    dialog = eval_file.stem
    entries = sorted(_read_evaluation(eval_file), key=lambda e: (e.start_s, e.utt_id))
    report.rows += len(entries)
    transcript_file = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
    texts = _read_transcripts(transcript_file)
    if entries and not texts:
        report.note(f"no transcript file {transcript_file}")
    wav_dir = session_dir / "sentences" / "wav" / dialog
    utterances = []
    for entry in entries:
        where = f"iemocap/{entry.utt_id}"
        if entry.code in EXCLUDED_CODES:
            report.exclude_by_design(f"label {entry.code} ({EXCLUDED_CODES[entry.code]})")
            continue
        if entry.code not in LABEL_CODES:
            report.add("unknown_label", where, f"code {entry.code!r} is not one of {', '.join(LABEL_CODES)}")
            continue
        text = texts.get(entry.utt_id) or None
        audio: Path | None = None
        if options.audio:
            path = wav_dir / f"{entry.utt_id}.wav"
            keep, audio = usable_audio(path, text, report, where, options.check_audio, options.keep_text_only)
            if not keep:
                continue
        if text is None:
            if audio is None:
                report.add("empty_text", where, f"no transcript in {transcript_file.name} and no audio")
                continue
            report.add("empty_text", where, "no transcript; Whisper will fill it", "kept")
        utterances.append(
            Utterance(
                dialog,
                len(utterances),
                speaker_of(entry.utt_id),
                audio,
                None,
                None,
                text,
                LABEL_CODES[entry.code],
                None,
                where,
            )
        )
    if not utterances:
        report.note(f"dialogue {dialog} has no usable utterance")
        return None
    return Dialogue(dialog, tuple(utterances))
