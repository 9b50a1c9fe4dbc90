"""Timeline output: the live JSONL log, CSV/SRT/VTT exports and the ``--no-ui`` line format.

The JSONL log is the session's primary record, so it is append-only: an existing file is
never truncated, every line is flushed as soon as it is written, and a file left with a
half-written last line (crash, full disk) is first terminated with a newline so the new
lines stay parseable. The CSV/SRT/VTT exports are derived views and are written atomically
(temporary file + rename) so an interrupted export never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from streamer.events import InterimEvent, UtteranceEvent

log = logging.getLogger(__name__)

FORMATS = ("csv", "srt", "vtt")
_FIELDS = tuple(f.name for f in fields(UtteranceEvent))
_REQUIRED = ("index", "start_s", "end_s", "text")


# ----------------------------------------------------------------------------- time formats


def _check_time(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"time {seconds!r} s is not a finite non-negative number; events must carry session times.")
    return seconds


def format_clock(seconds: float) -> str:
    """``MM:SS.d`` (``H:MM:SS.d`` from one hour on): short enough for a timeline column."""
    tenths = round(_check_time(seconds) * 10)
    hours, rest = divmod(tenths, 36_000)
    minutes, rest = divmod(rest, 600)
    secs, frac = divmod(rest, 10)
    clock = f"{minutes:02d}:{secs:02d}.{frac}"
    return f"{hours}:{clock}" if hours else clock


def _timestamp(seconds: float, sep: str) -> str:
    # Round once to whole milliseconds and split integers, so 59.9996 s becomes 00:01:00,000
    # rather than an invalid 00:00:60,000.
    ms = round(_check_time(seconds) * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def srt_timestamp(seconds: float) -> str:
    """SubRip time: ``HH:MM:SS,mmm`` (comma before the milliseconds)."""
    return _timestamp(seconds, ",")


def vtt_timestamp(seconds: float) -> str:
    """WebVTT time: ``HH:MM:SS.mmm`` (full stop before the milliseconds)."""
    return _timestamp(seconds, ".")


# ----------------------------------------------------------------------------- terminal safety

#: Characters a terminal or text viewer acts on instead of showing: C0/C1 controls (ESC starts
#: colour, cursor and title sequences), DEL, and the bidi overrides that reorder what is shown.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written out visibly (``\x1b``, ``\u202e``).

    Transcripts, labels and error messages come from models and files ser-live does not
    control; printed raw, an ESC in them would drive the user's terminal."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def _json_controls(line: str) -> str:
    # json.dumps escapes C0 itself; C1, DEL and bidi controls it leaves raw with ensure_ascii=False.
    return _CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", line)


# ----------------------------------------------------------------------------- one-line text


def format_line(event: UtteranceEvent) -> str:
    """The ``--no-ui`` line: ``00:03.2–00:05.9  A  joy (0.82)  "text"``; failures say ERROR."""
    span = f"{format_clock(event.start_s)}–{format_clock(event.end_s)}"
    speaker = "+".join(event.overlap) + "?" if event.overlap else event.speaker or "-"  # A+B?: both at once
    if event.error is not None:
        verdict = f"ERROR: {_one_line(event.error)}"
    else:
        verdict = f"{label_text(event)} ({event.confidence:.2f})"
    return f'{span}  {_one_line(speaker)}  {verdict}  "{_one_line(event.text)}"'


def label_text(event: UtteranceEvent) -> str:
    """The label as people read it: ``uncertain (joy?)`` keeps the guess in sight."""
    label = _one_line(str(event.label))
    return f"{label} ({_one_line(event.guess)}?)" if event.guess else label


def _one_line(text: str) -> str:
    return escape_controls(" ".join(text.split()))


def cue_text(event: UtteranceEvent) -> str:
    """Subtitle text carrying the emotion: ``[joy 0.82] Speaker A: text``."""
    if event.error is not None:
        tag = f"[error: {_one_line(event.error)}]"
    else:
        tag = f"[{label_text(event)} {event.confidence:.2f}]"
    who = f"Speaker {_one_line(event.speaker)}" if event.speaker else ""
    if event.overlap:
        who = f"Speakers {' and '.join(map(_one_line, event.overlap))} at once"
    text = _one_line(event.text)
    body = f"{who}: {text}" if who and text else who or text
    return f"{tag} {body}" if body else tag


# ----------------------------------------------------------------------------- JSON lines


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity; write ``null`` so every line stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def event_to_json(event: UtteranceEvent) -> str:
    """One compact JSON object (no trailing newline) with every field of the event."""
    line = json.dumps(_finite(event.to_dict()), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _json_controls(line)


def event_from_dict(data: dict[str, Any]) -> UtteranceEvent:
    """Inverse of ``event_to_json``; ``null`` confidence/probabilities come back as NaN."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"utterance record lacks {missing}; it was not written by JsonlWriter.")
    kwargs = {k: data[k] for k in _FIELDS if k in data}
    kwargs.setdefault("speaker", None)
    kwargs.setdefault("label", None)
    kwargs["confidence"] = math.nan if kwargs.get("confidence") is None else float(kwargs["confidence"])
    for key in ("probs", "latency_ms"):
        kwargs[key] = {k: math.nan if v is None else float(v) for k, v in (kwargs.get(key) or {}).items()}
    kwargs["overlap"] = tuple(kwargs.get("overlap") or ())
    return UtteranceEvent(**kwargs)


class JsonlWriter:
    """Append-only, line-flushed JSONL log of utterance events; safe to call from any thread.

    The pipeline thread writes here directly so the record never waits on the UI.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.count = 0
        needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:
            log.warning("%s ended with a partial line; appending after a line break", self.path)
            self._file.write("\n")
            self._file.flush()

    def write(self, event: UtteranceEvent | InterimEvent) -> None:
        """Append one event as a line and flush it to the OS (interim events carry ``"type": "interim"``)."""
        if not isinstance(event, UtteranceEvent | InterimEvent):
            raise TypeError(
                f"JsonlWriter takes UtteranceEvent or InterimEvent, got {type(event).__name__}; "
                "filter the events first."
            )
        self.write_line(event_to_json(event))

    def write_line(self, line: str) -> None:
        """Append an already serialised record (from ``event_to_json``)."""
        with self._lock:
            if self._file is None:
                raise ValueError(f"JsonlWriter for {self.path} is closed; open a new writer to append more.")
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_session_jsonl(lines: Sequence[str], directory: str | os.PathLike[str]) -> Path:
    """Write ``event_to_json`` lines to a new ``session-<local time>.jsonl`` in ``directory``.

    Files are created exclusively (a second save in the same second gets ``-1``, ``-2`` ...),
    so a save never overwrites an earlier recording.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"session-{datetime.now():%Y%m%d-%H%M%S}"
    for n in range(1000):
        path = directory / (f"{stem}.jsonl" if n == 0 else f"{stem}-{n}.jsonl")
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
            return path
        except FileExistsError:
            continue
    raise OSError(f"{directory} already holds 1000 files named {stem}*; clean it up or pick another directory.")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_jsonl(path: str | os.PathLike[str], skip_invalid: bool = False) -> list[UtteranceEvent]:
    """Read a JsonlWriter log back. A bad line raises, unless ``skip_invalid`` (then it is logged)."""
    events = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if isinstance(data, dict) and data.get("type") == "interim":
                    continue  # --interim words, replaced by the utterance's own record
                events.append(event_from_dict(data))
            except (ValueError, TypeError) as e:
                if not skip_invalid:
                    raise ValueError(
                        f"{path}:{number} is not a valid utterance record ({e}); pass skip_invalid=True to skip it."
                    ) from e
                log.warning("skipping invalid line %s:%d (%s)", path, number, e)
    return events


# ----------------------------------------------------------------------------- exports


def _atomic_write(path: str | os.PathLike[str], write: Callable[[TextIO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        # mkstemp makes the file private (0600); an export is an ordinary file, as open() would make it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _union(dicts: Iterable[dict[str, float]]) -> list[str]:
    keys: dict[str, None] = {}
    for d in dicts:
        keys.update(dict.fromkeys(d))
    return list(keys)


def write_csv(events: Sequence[UtteranceEvent], path: str | os.PathLike[str]) -> Path:
    """One row per utterance; one ``prob_<label>`` and ``latency_<stage>_ms`` column per key seen."""
    events = list(events)
    labels = _union(e.probs for e in events)
    stages = _union(e.latency_ms for e in events)
    header = ["index", "start_s", "end_s", "speaker", "text", "label", "confidence"]
    header += [f"prob_{escape_controls(k)}" for k in labels] + [f"latency_{escape_controls(k)}_ms" for k in stages]
    header += ["error"]

    def write(f: TextIO) -> None:
        out = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        out.writerow(header)
        for e in events:
            _check_time(e.start_s)
            _check_time(e.end_s)
            text, label, speaker = (escape_controls(x or "") for x in (e.text, e.label, e.speaker))
            row = [e.index, _fmt(e.start_s, 3), _fmt(e.end_s, 3), speaker, text, label]
            row.append(_fmt(e.confidence, 4) if e.error is None else "")
            row += [_fmt(e.probs.get(k), 4) for k in labels]
            row += [_fmt(e.latency_ms.get(k), 1) for k in stages]
            row.append(escape_controls(e.error or ""))
            out.writerow(row)

    return _atomic_write(path, write)


def _cues(events: Sequence[UtteranceEvent]) -> list[tuple[float, float, str]]:
    cues = []
    for e in events:
        if _check_time(e.end_s) < _check_time(e.start_s):
            raise ValueError(f"utterance {e.index} ends ({e.end_s} s) before it starts ({e.start_s} s); fix its times.")
        cues.append((e.start_s, e.end_s, cue_text(e)))
    return cues


def write_srt(events: Sequence[UtteranceEvent], path: str | os.PathLike[str]) -> Path:
    """SubRip subtitles, numbered from 1, one cue per utterance."""
    cues = _cues(events)

    def write(f: TextIO) -> None:
        for n, (start, end, text) in enumerate(cues, start=1):
            f.write(f"{n}\n{srt_timestamp(start)} --> {srt_timestamp(end)}\n{text}\n\n")

    return _atomic_write(path, write)


def _vtt_escape(text: str) -> str:
    # "<" starts a tag and "&" an entity in WebVTT; escaping ">" also rules out a stray "-->".
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_vtt(events: Sequence[UtteranceEvent], path: str | os.PathLike[str]) -> Path:
    """WebVTT subtitles, one cue per utterance."""
    cues = _cues(events)

    def write(f: TextIO) -> None:
        f.write("WEBVTT\n\n")
        for start, end, text in cues:
            f.write(f"{vtt_timestamp(start)} --> {vtt_timestamp(end)}\n{_vtt_escape(text)}\n\n")

    return _atomic_write(path, write)


def export(events: Sequence[UtteranceEvent], path: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """Write ``events`` as ``fmt`` ("csv", "srt" or "vtt"); without ``fmt`` the file suffix decides."""
    fmt = (fmt or Path(path).suffix.lstrip(".")).lower()
    writers = {"csv": write_csv, "srt": write_srt, "vtt": write_vtt}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return writers[fmt](events, path)
