"""Guards of a ``ser-live`` session: outputs checked before it starts, signals that end it cleanly.

Nothing recorded or written may be lost and nothing may be written where it should not:
every output path is checked up front (not discovered broken after an hour of analysis),
never overwrites the input or, without ``--overwrite``, an existing file; and SIGINT,
SIGTERM and SIGHUP end a session the way the end of the input does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


def export_path(args) -> Path | None:
    """Where ``--export`` writes: ``--export-path``, else next to the input (or the recording)."""
    if not args.export:
        return None
    if args.export_path is not None:
        return args.export_path
    base = args.replay or args.record or Path("session")
    return base.with_suffix(f".{args.export}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(args) -> None:
    """Every output checked before the session starts, so none is discovered broken at the end.

    Each output must not be the input nor another output, must not exist (unless
    ``--overwrite``; ``--jsonl`` appends by design), and its folder must exist and be writable."""
    export_flag = "--export-path" if args.export_path is not None else "--export"  # as the user typed it
    outputs = [("--record", args.record), ("--jsonl", args.jsonl), (export_flag, export_path(args))]
    outputs += [("--report", getattr(args, "report", None)), ("--plot", getattr(args, "plot", None))]
    outputs = [(flag, path) for flag, path in outputs if path is not None]
    seen: list[tuple[str, Path]] = []
    for flag, path in outputs:
        if args.replay is not None and _same_file(path, args.replay):
            raise ValueError(
                f"{flag} {path} is the --replay input; ser-live never writes onto its input, give another path"
            )
        for other_flag, other in seen:
            if _same_file(path, other):
                raise ValueError(f"{flag} and {other_flag} both name {path}; give each output its own file")
        seen.append((flag, path))
        if path.is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file path")
        if path.exists() and flag != "--jsonl" and not args.overwrite:
            raise ValueError(f"{flag} {path} already exists; pass --overwrite to replace it, or give another path")
        folder = path.parent
        if flag == "--jsonl":  # JsonlWriter creates missing folders: check the first one that exists
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{flag} {path}: the folder {folder} does not exist; create it or give another path")
        if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ValueError(
                f"{flag} {path}: cannot write in {folder} (read-only or no permission); give a writable path"
            )
    _check_save_dir(args)
    report, plot = getattr(args, "report", None), getattr(args, "plot", None)
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--report writes HTML; give a path ending in .html, not {report.name}")
    if plot is not None and plot.suffix.lower() != ".png":
        raise ValueError(f"--plot writes PNG; give a path ending in .png, not {plot.name}")
    if args.record is not None and args.record.suffix.lower() != ".flac":
        raise ValueError(f"--record writes FLAC; give a path ending in .flac, not {args.record.name}")


def _check_save_dir(args) -> None:
    """The UI's save key writes into ``--save-dir`` (created when missing): the folder, or the
    first one above it that exists, must be a writable folder before the session starts."""
    save_dir = getattr(args, "save_dir", None)
    if save_dir is None or getattr(args, "no_ui", False) or getattr(args, "no_save", False):
        return
    if save_dir.exists() and not save_dir.is_dir():
        raise ValueError(f"--save-dir {save_dir} is a file; give a folder (or --no-save)")
    folder = Path(save_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--save-dir {save_dir}: cannot write in {folder}; give a writable folder (or --no-save)")


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP end the session the way the input ending does.

    The first one only sets ``stop``: the pipeline then flushes the utterance in progress,
    finalises the recording, and the caller writes the exports. A second one raises
    KeyboardInterrupt (an impatient user, a supervisor's second try) and ends at once, the
    recording still closed. The numbers of the signals received are appended to the list."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread (embedded): leave signals alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
