"""Many recordings at once: ``ser-live --replay a.wav b.m4a calls/ --out-dir out/``.

The models are loaded once (one :class:`~streamer.api.EmotionTracker`) and every recording
is a conversation of its own, replayed as fast as possible. Each gets ``<name>.jsonl``
(written as its utterances come, so an interruption keeps what was analysed),
``<name>.html`` (the report) and, with ``--export``, ``<name>.<format>``; ``summary.csv``
has a row per recording and speaker: utterances, the share of each emotion, the mean
confidence. One recording that cannot be read or fails midway is reported in one line
and the others go on; the caller's exit status says whether any failed.

No prints here: progress goes to the ``say`` callback the command passes.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from streamer.decode import SOUNDFILE_SUFFIXES
from streamer.events import UtteranceEvent
from streamer.export import JsonlWriter, _atomic_write, escape_controls, export
from streamer.report import emotion_shares, speaker_of, write_report

log = logging.getLogger(__name__)

#: What a folder's audio and video files end in (anything else in it is ignored).
MEDIA_SUFFIXES = SOUNDFILE_SUFFIXES | {
    ".mp3",
    ".m4a",
    ".aac",
    ".opus",
    ".wma",
    ".amr",
    ".mp4",
    ".m4v",
    ".mkv",
    ".mov",
    ".webm",
    ".avi",
}
SUMMARY_NAME = "summary.csv"


def collect_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders as their audio/video files (sorted, not recursive); duplicates once.

    A path that does not exist, or a folder without any media file, is a typo to fix
    before the models load: one sentence naming it."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            media = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            if not media:
                raise ValueError(
                    f"--replay {path} is a folder without audio or video files "
                    f"({', '.join(sorted(MEDIA_SUFFIXES))}); give another folder or the files"
                )
            found.update(dict.fromkeys(media))
        elif path.exists():
            found[path] = None
        else:
            raise ValueError(f"no such recording: {path}; check the paths given to --replay")
    return list(found)


def output_names(inputs: Sequence[Path]) -> dict[Path, str]:
    """A distinct output name per input: its stem, made unique by its suffix and then a number."""
    names: dict[Path, str] = {}
    used: set[str] = {Path(SUMMARY_NAME).stem}
    for path in inputs:
        name = path.stem
        if name in used:
            name = f"{path.stem}-{path.suffix.lstrip('.')}"
        n = 2
        while name in used:
            name, n = f"{path.stem}-{n}", n + 1
        used.add(name)
        names[path] = name
    return names


@dataclass(frozen=True)
class BatchOutputs:
    """Where a batch writes, checked before the models load."""

    out_dir: Path
    export_format: str | None = None
    overwrite: bool = False
    #: ``--second-pass``: the report and export get speakers re-clustered over each recording.
    second_pass: bool = False

    def __post_init__(self) -> None:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"--out-dir {self.out_dir} is a file; give a folder (it is created if missing)")

    def files(self, name: str) -> list[Path]:
        suffixes = [".jsonl", ".html"] + ([f".{self.export_format}"] if self.export_format else [])
        return [self.out_dir / f"{name}{s}" for s in suffixes]

    def check(self, names: dict[Path, str]) -> None:
        """Nothing written yet is replaced without ``--overwrite``; the folder must be writable."""
        inputs = {p.resolve() for p in names}
        targets = [self.out_dir / SUMMARY_NAME] + [f for name in names.values() for f in self.files(name)]
        for target in targets:
            if target.resolve() in inputs:
                raise ValueError(f"--out-dir would write {target} over an input; give another --out-dir")
            if target.exists() and not self.overwrite:
                raise ValueError(
                    f"--out-dir {self.out_dir} already holds {target.name}; pass --overwrite to replace "
                    "the outputs, or give another --out-dir"
                )
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out-dir {self.out_dir} cannot be created ({exc.strerror or exc})") from exc


@dataclass
class FileResult:
    """What one recording gave: its events, or the sentence saying why it failed."""

    path: Path
    name: str
    events: list[UtteranceEvent] = field(default_factory=list)
    error: str | None = None
    audio_s: float = 0.0
    seconds: float = 0.0


def process_file(
    tracker, path: Path, name: str, outputs: BatchOutputs, stop: threading.Event | None = None
) -> FileResult:
    """Replay one recording through ``tracker``, writing its JSONL as it goes, then its report/export."""
    result = FileResult(path, name)
    jsonl, report, *exported = outputs.files(name)
    t0 = time.perf_counter()
    if outputs.overwrite:
        jsonl.unlink(missing_ok=True)  # checked: only with --overwrite; a re-run must not append twice
    writer = None
    try:
        from streamer.audio import FileSource

        result.audio_s = FileSource(path, speed="max").duration_s or 0.0  # a probe: unreadable files fail here
        events = tracker.track(path)
        writer = JsonlWriter(jsonl)
        for event in events:
            result.events.append(event)
            writer.write(event)
            if stop is not None and stop.is_set():
                events.close()
                result.error = "interrupted"
                break
    except Exception as exc:  # noqa: BLE001 - AudioError, decoding failures midway, a full disk: the next file goes on
        result.error = " ".join(str(exc).split()) or type(exc).__name__
        log.info("%s failed: %s", path, result.error)
    finally:
        if writer is not None:
            writer.close()
    if result.events or result.error is None:  # what was analysed is kept in every form asked for
        try:
            description = tracker.description
            if outputs.second_pass:
                from streamer.recluster import second_pass

                result.events, note = second_pass(result.events, tracker.speakers)
                description = {**description, "speakers": note} if note else description
            write_report(result.events, report, path.stem, tracker.labels, description)
            if exported:
                export(result.events, exported[0], outputs.export_format)
        except Exception as exc:  # noqa: BLE001 - the JSONL is written; the next file goes on
            result.error = result.error or f"could not write its outputs ({exc})"
    result.seconds = time.perf_counter() - t0
    return result


def summary_rows(results: Sequence[FileResult], labels: Sequence[str]) -> list[dict[str, object]]:
    """A row per recording and speaker; a failed recording without events has one row with its error."""
    rows: list[dict[str, object]] = []
    for res in results:
        shares = emotion_shares(res.events)
        speakers = sorted({speaker_of(e) for e in res.events})
        if not speakers:
            speakers = [""]
        for spk in speakers:
            mine = [e for e in res.events if speaker_of(e) == spk]
            ok = [e for e in mine if e.label is not None]
            row: dict[str, object] = {
                "file": str(res.path),
                "speaker": spk,
                "utterances": len(mine),
                "failed_utterances": len(mine) - len(ok),
                "mean_confidence": f"{sum(e.confidence for e in ok) / len(ok):.4f}" if ok else "",
            }
            for label in labels:
                row[f"share_{label}"] = f"{shares.get(spk, {}).get(label, 0.0):.4f}" if ok else ""
            row["error"] = res.error or ""
            rows.append(row)
    return rows


def write_summary(results: Sequence[FileResult], labels: Sequence[str], path: Path) -> Path:
    """``summary.csv``, atomically (an interrupted batch still leaves a whole file)."""
    rows = summary_rows(results, labels)
    header = ["file", "speaker", "utterances", "failed_utterances", "mean_confidence"]
    header += [f"share_{label}" for label in labels] + ["error"]

    def write(f: TextIO) -> None:
        out = csv.DictWriter(f, header, lineterminator="\n")
        out.writeheader()
        for row in rows:
            out.writerow({k: escape_controls(v) if isinstance(v, str) else v for k, v in row.items()})

    return _atomic_write(path, write)


def run_batch(
    tracker,
    inputs: Sequence[Path],
    outputs: BatchOutputs,
    say: Callable[[str, bool], None],
    stop: threading.Event | None = None,
) -> list[FileResult]:
    """Every recording one after another through the one tracker; ``say(line, is_error)`` per file.

    Returns the results (the summary is written even when interrupted, for the files done)."""
    names = output_names(inputs)
    results: list[FileResult] = []
    try:
        for k, path in enumerate(inputs, 1):
            if stop is not None and stop.is_set():
                break
            res = process_file(tracker, path, names[path], outputs, stop)
            results.append(res)
            where = f"[{k}/{len(inputs)}] {path}"
            if res.error:
                kept = f" ({len(res.events)} utterances before it kept)" if res.events else ""
                say(f"{where}: {res.error}{kept}; the other files go on", True)
            else:
                pace = f", {res.audio_s / res.seconds:.1f}x real time" if res.seconds > 0 and res.audio_s else ""
                say(
                    f"{where}: {len(res.events)} utterances in {res.seconds:.1f} s{pace} -> "
                    f"{outputs.out_dir / names[path]}.jsonl",
                    False,
                )
    finally:
        write_summary(results, tracker.labels, outputs.out_dir / SUMMARY_NAME)
    return results
