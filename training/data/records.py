"""The records every dataset loader produces, and the checks they share.

All datasets come out as a :class:`DatasetSplit` of :class:`Dialogue` objects whose
:class:`Utterance` records point at audio (or not) and carry text (or ``None``, for
Whisper to fill), a label and a speaker, so training code has one path for all.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from training.data.report import DataError, LoadReport

log = logging.getLogger(__name__)

#: MELD's seven classes in MELD's order; the shared corpora map onto these.
MELD_LABELS = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

#: Audio formats soundfile decodes; everything else (mp4, m4a, mp3, ...) is probed with PyAV.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif"})


@dataclass(frozen=True)
class Utterance:
    """One turn of a dialogue.

    ``turn`` orders the utterances of a dialogue: it is the source's own index (MELD's
    Utterance_ID, a manifest's ``turn``) and may skip numbers where the source lacks an
    utterance; the position in :attr:`Dialogue.utterances` is the dense index.
    ``start_s``/``end_s`` cut a segment out of ``audio_path`` (``None``: the whole file).
    ``text`` ``None`` means "no transcript: let Whisper fill it"; ``label`` ``None`` means
    unlabelled (it still gives context). ``voice`` is whose recording the audio is when
    that differs from the conversational ``speaker`` (paired data); ``source`` names the
    origin (file, CSV row) for reports; ``augment`` makes the audio a new voice in a new
    room (:mod:`training.augment`, training copies only).
    """

    dialogue_id: str
    turn: int
    speaker: str
    audio_path: Path | None = None
    start_s: float | None = None
    end_s: float | None = None
    text: str | None = None
    label: str | None = None
    voice: str | None = None
    source: str = ""
    #: A :mod:`training.augment` spec applied to the audio before any feature sees it (None: as recorded).
    augment: str | None = None

    def __post_init__(self) -> None:
        if self.audio_path is None and self.text is None:
            raise ValueError(f"utterance {self.dialogue_id}#{self.turn} has neither audio nor text")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"utterance {self.dialogue_id}#{self.turn} ends ({self.end_s}) before it starts")

    @property
    def key(self) -> str:
        return f"{self.dialogue_id}#{self.turn}"


@dataclass(frozen=True)
class Dialogue:
    """A conversation: utterances in turn order (strictly increasing ``turn``)."""

    id: str
    utterances: tuple[Utterance, ...]

    def __post_init__(self) -> None:
        if not self.utterances:
            raise ValueError(f"dialogue {self.id!r} has no utterances")
        turns = [u.turn for u in self.utterances]
        if any(b <= a for a, b in zip(turns, turns[1:])):
            raise ValueError(f"dialogue {self.id!r} turns are not strictly increasing: {turns}")

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def speakers(self) -> tuple[str, ...]:
        """Distinct speakers in order of first appearance."""
        return tuple(dict.fromkeys(u.speaker for u in self.utterances))


@dataclass
class DatasetSplit:
    """One split of one dataset: dialogues, the label set in its fixed order, and the report."""

    dataset: str
    name: str
    dialogues: tuple[Dialogue, ...]
    labels: tuple[str, ...]
    report: LoadReport = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.report is None:
            self.report = LoadReport(self.dataset, self.name)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{self.dataset} {self.name}: duplicate labels in {self.labels}")
        self.report.kept = self.num_utterances

    def __len__(self) -> int:
        return len(self.dialogues)

    def utterances(self) -> Iterator[Utterance]:
        for dialogue in self.dialogues:
            yield from dialogue.utterances

    @property
    def num_utterances(self) -> int:
        return sum(len(d) for d in self.dialogues)

    def label_index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"label {label!r} is not one of {self.dataset}'s labels {self.labels}") from None

    def label_counts(self) -> dict[str, int]:
        """Label -> number of labelled utterances, in label order (zeros included)."""
        counts = Counter(u.label for u in self.utterances() if u.label is not None)
        return {label: counts.get(label, 0) for label in self.labels}

    def voices(self) -> set[str]:
        """Recorded voices (``voice``, else ``speaker``) of the utterances with audio."""
        return {u.voice or u.speaker for u in self.utterances() if u.audio_path is not None}

    def report_unreadable(self, utterance: Utterance, reason: str, action: str = "text-only") -> None:
        """For later stages: record an audio file that failed to decode (checks at load can be off).

        ``action`` says what the stage did with the utterance: the default, "text-only",
        fits feature extraction that marks the audio absent and keeps the text.
        """
        self.report.add("unreadable_audio", utterance.source or str(utterance.audio_path), reason, action)


# --- text -----------------------------------------------------------------------------------

# UTF-8 read as cp1252 ("mojibake") for the characters these transcripts use.
_MOJIBAKE = {
    "â€™": "'",
    "â€˜": "'",
    "â€œ": '"',
    "â€\x9d": '"',
    "â€”": "-",
    "â€“": "-",
    "â€¦": "...",
    "Ã©": "é",
    "Ã¨": "è",
    "Ã³": "ó",
    "Ã¡": "á",
    "Ã±": "ñ",
    "Â ": " ",
}
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201a": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2014": "-",
        "\u2013": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)
_SPACE = re.compile(r"\s+")
_C1 = re.compile("[\u0080-\u009f]")


def _repair_mojibake(text: str) -> str:
    """Undo UTF-8 decoded as cp1252 or latin-1; fall back to a table for mixed text."""
    for codec in ("cp1252", "latin-1"):
        try:
            return text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
    for bad, good in _MOJIBAKE.items():
        text = text.replace(bad, good)
    return text


def normalise_text(text: str) -> str:
    """Plain, ASCII-punctuated, single-spaced text, as Whisper writes it.

    Typographic quotes, apostrophes, dashes and ellipses become ASCII; UTF-8 that was
    decoded as cp1252 somewhere upstream ("â€™") is repaired first; runs of whitespace
    (double spaces after full stops, tabs, non-breaking spaces) become one space.
    """
    if "â€" in text or "Ã" in text or "Â" in text:
        text = _repair_mojibake(text)
    # Lone C1 controls are cp1252 bytes decoded as latin-1 (e.g. "\x92" for an apostrophe).
    text = _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="ignore"), text)
    text = unicodedata.normalize("NFC", text).translate(_TYPOGRAPHIC)
    if not text.isprintable():  # drop control and format characters (slow path: most text is printable)
        text = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch)[0] != "C")
    return _SPACE.sub(" ", text).strip()


# --- audio ----------------------------------------------------------------------------------


def probe_audio(path: Path) -> float:
    """Duration in seconds of an audio (or video-with-audio) file, reading headers only.

    Raises ``ValueError`` with the reason when the file cannot be opened, has no audio
    stream or is empty. Cheap enough to run over a whole release at load time.
    """
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile

        try:
            info = soundfile.info(str(path))
        except Exception as exc:  # libsndfile raises its own error types
            raise ValueError(f"cannot read audio header: {exc}") from exc
        duration = info.frames / info.samplerate if info.samplerate else 0.0
    else:
        import av

        try:
            with av.open(str(path)) as container:
                streams = container.streams.audio
                stream = streams[0] if streams else None
                if stream is None:
                    duration = None
                elif container.duration:
                    duration = container.duration / 1_000_000
                elif stream.duration and stream.time_base:
                    duration = float(stream.duration * stream.time_base)
                else:
                    duration = float("nan")  # unknown from headers; decoding will tell
        except Exception as exc:  # PyAV raises FFmpeg errors (OSError/ValueError subclasses) and others
            raise ValueError(f"cannot open media file: {exc}") from exc
        if duration is None:
            raise ValueError("the file has no audio stream")
    if duration == 0.0:
        raise ValueError("the audio is empty (0 samples)")
    return duration


def check_audio(
    path: Path, report: LoadReport, where: str, probe: bool, end_s: float | None = None, action: str = "excluded"
) -> bool:
    """True when ``path`` exists (and, with ``probe``, decodes and covers ``end_s``); else report it."""
    if not path.is_file():
        report.add("missing_audio", where, f"no file at {path}", action)
        return False
    if not probe:
        return True
    try:
        duration = probe_audio(path)
    except ValueError as exc:
        report.add("unreadable_audio", where, f"{path}: {exc}", action)
        return False
    if end_s is not None and duration == duration and end_s > duration + 0.05:
        report.add("bad_value", where, f"segment ends at {end_s:.2f} s but {path} lasts {duration:.2f} s", action)
        return False
    return True


def usable_audio(
    path: Path,
    text: str | None,
    report: LoadReport,
    where: str,
    probe: bool,
    keep_text_only: bool,
    end_s: float | None = None,
) -> tuple[bool, Path | None]:
    """(keep the utterance?, its audio or None): a line whose audio fails :func:`check_audio`
    is kept text-only when ``keep_text_only`` and it has a transcript, else excluded; the
    report says which."""
    fallback = "text-only" if keep_text_only and text else "excluded"
    if check_audio(path, report, where, probe, end_s=end_s, action=fallback):
        return True, path
    return fallback == "text-only", None


def as_names(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Option values naming several things: a tuple/list, or one comma-separated string (CLI)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def check_options_fraction(value: float, name: str = "max_missing_fraction") -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def require_split(dataset: str, split: str, splits: tuple[str, ...]) -> None:
    if split not in splits:
        raise DataError(f"{dataset} has no split {split!r}: choose one of {', '.join(splits)}")
