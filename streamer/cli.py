"""``ser-live``: track emotions from the microphone or a recording.

ser-live                          # microphone, Textual UI
ser-live --replay talk.m4a        # a recording, in real time
ser-live --replay talk.wav --speed max --no-ui --jsonl events.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import threading
from pathlib import Path

from streamer.guards import check_outputs, export_path, stop_on_signals
from streamer.options import (  # noqa: F401 - BUNDLED_MODEL re-exported
    BUNDLED_MODEL,
    COMPUTE_TYPES,
    DEFAULT_BLOCK_MS,
    TEXT_RUNTIMES,
    check_asr_threads,
    check_cli_model_options,
    check_uncertain_below,
    sequential_blas,
    sleeping_threads,
)
from streamer.speakers import SpeakerCounts, speaker_config

sleeping_threads()  # before torch or Whisper loads (they load lazily, below)

log = logging.getLogger("ser-live")


#: Settings whose errors name a config field: the flag the user typed instead.
_FLAGS = {
    "block_ms": "--block-ms",
    "aggressiveness": "--vad-aggressiveness",
    "frame_ms": "--frame-ms",
    "end_silence_ms": "--end-silence-ms",
    "preroll_ms": "--preroll-ms",
    "min_utterance_ms": "--min-utterance-ms",
    "max_utterance_ms": "--max-utterance-ms",
}


class _Replay(argparse.Action):
    """``--replay`` keeps every path in ``replays``; ``replay`` is the one recording of a
    single-file session (None with several), as the rest of the command expects."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.replays = list(values)
        namespace.replay = values[0] if len(values) == 1 else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ser-live", description="Real-time conversational speech emotion tracker")
    ap.set_defaults(replays=[])
    src = ap.add_argument_group("input")
    src.add_argument(
        "--replay",
        type=Path,
        nargs="+",
        action=_Replay,
        metavar="FILE",
        help="replay a recording instead of the microphone; several files or folders with --out-dir",
    )
    src.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="replay every --replay recording (a folder: its audio and video files) as fast as possible, models "
        "loaded once, writing <name>.jsonl, <name>.html (and --export) per recording and summary.csv here",
    )
    src.add_argument("--speed", choices=("realtime", "max"), default="realtime", help="replay pace")
    src.add_argument("--split-channels", action="store_true", help="each stereo channel is one speaker")
    src.add_argument("--speakers", type=int, default=None, metavar="N", help="people in a mono input, when known")
    src.add_argument("--max-speakers", type=int, default=None, metavar="N", help="at most N speakers (default 8)")
    src.add_argument(
        "--second-pass",
        action="store_true",
        help="after a --replay, re-cluster the speakers over the whole recording and use them in --export, "
        "--report, --plot and the summary (the --jsonl log keeps the live labels)",
    )
    src.add_argument("--device", default=None, help="microphone by index or name (see --list-devices)")
    src.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    src.add_argument("--block-ms", type=int, default=DEFAULT_BLOCK_MS, help="audio block length in milliseconds")
    mdl = ap.add_argument_group("models")
    mdl.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled HBAF)")
    mdl.add_argument("--asr-model", default="tiny.en", help="faster-whisper model name or path")
    mdl.add_argument("--language", default=None, help="ASR language (default: the model's)")
    mdl.add_argument(
        "--compute-type",
        default="auto",
        help=f"CTranslate2 compute type for Whisper: {', '.join(COMPUTE_TYPES)} (auto: int8 on CPU)",
    )
    mdl.add_argument("--compute-device", default="auto", help="auto, cpu or cuda for the models")
    mdl.add_argument(
        "--asr-threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for Whisper, and torch's with them (default: half the cores, at most 4; 0: CTranslate2's "
        "own default)",
    )
    mdl.add_argument("--text-encoder", default=None, help="override the checkpoint's text encoder path")
    mdl.add_argument(
        "--text-runtime",
        choices=TEXT_RUNTIMES,
        default="auto",
        help="what runs the text encoder: ONNX Runtime (same vectors, ~2x faster on a CPU; exported once into the "
        "user's cache), torch, or auto (ONNX on the CPU when it can be prepared)",
    )
    vad = ap.add_argument_group("segmenter")
    vad.add_argument("--vad-aggressiveness", type=int, default=2, choices=range(4))
    vad.add_argument("--frame-ms", type=int, default=30, choices=(10, 20, 30))
    vad.add_argument("--end-silence-ms", type=int, default=500)
    vad.add_argument("--preroll-ms", type=int, default=200)
    vad.add_argument("--min-utterance-ms", type=int, default=300)
    vad.add_argument("--max-utterance-ms", type=int, default=15000)
    vad.add_argument(
        "--no-speculate",
        action="store_true",
        help="plain sequential processing: no transcribing during the end-of-speech wait (default except with "
        "--speed max) and no openSMILE alongside Whisper",
    )
    out = ap.add_argument_group("output")
    out.add_argument("--no-ui", action="store_true", help="print one line per utterance instead of the UI")
    out.add_argument(
        "--jsonl",
        type=Path,
        default=None,
        help="append one JSON event per utterance (an existing file is appended to, never replaced)",
    )
    out.add_argument(
        "--interim",
        action="store_true",
        help='interim transcripts: words of an utterance still being spoken, in the UI and (type "interim") '
        "in --jsonl and the line output; real-time input only; doubles the CPU load (docs/benchmarks.md)",
    )
    out.add_argument(
        "--uncertain-below",
        type=float,
        default=0.0,
        metavar="P",
        help='label an utterance "uncertain" when the model\'s confidence is below P (its answer is kept as the '
        "event's guess); 0, the default, always shows the answer; docs/results.md: share labelled vs accuracy",
    )
    out.add_argument("--export", choices=("csv", "srt", "vtt"), default=None, help="write the timeline at the end")
    out.add_argument(
        "--export-path",
        type=Path,
        default=None,
        help="where --export writes (default: next to the --replay input, or to the --record file, with the "
        "format's suffix; session.<format> in the current folder otherwise)",
    )
    out.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE.html",
        help="write a self-contained HTML report at the end: emotion timeline per speaker, emotion shares, transcript",
    )
    out.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="write the emotion timeline as a PNG")
    out.add_argument("--record", type=Path, default=None, help="record the captured audio to this FLAC file")
    out.add_argument(
        "--overwrite", action="store_true", help="let --record and --export replace existing files (never the input)"
    )
    out.add_argument("--save-dir", type=Path, default=Path("recordings"), help="where the UI's save key writes")
    out.add_argument("--no-save", action="store_true", help="the UI's save key writes nothing (no file is left)")
    out.add_argument("-v", "--verbose", action="store_true")
    return ap


def _with_flags(message: str) -> str:
    """A config error names its field (``block_ms``): name the option the user typed instead."""
    return re.sub(r"\b(" + "|".join(_FLAGS) + r")\b", lambda m: _FLAGS[m.group(1)], message)


def _segmenter_config(args):
    from streamer.segmenter import SegmenterConfig

    try:
        return SegmenterConfig(
            aggressiveness=args.vad_aggressiveness,
            frame_ms=args.frame_ms,
            end_silence_ms=args.end_silence_ms,
            preroll_ms=args.preroll_ms,
            min_utterance_ms=args.min_utterance_ms,
            max_utterance_ms=args.max_utterance_ms,
        )
    except ValueError as exc:
        raise ValueError(_with_flags(str(exc))) from exc


def check_options(args) -> None:
    """Options that would otherwise fail deep inside a library, with a message naming the wrong thing."""
    if args.block_ms <= 0:
        raise ValueError(f"--block-ms must be a positive number of milliseconds, got {args.block_ms}")
    check_uncertain_below(args.uncertain_below, "--uncertain-below")
    check_asr_threads(args.asr_threads, "--asr-threads")
    if len(args.replays) > 1:
        raise ValueError("several --replay recordings need --out-dir, where each gets its own outputs")
    if args.replay is not None:
        if args.replay.is_dir():
            raise ValueError(
                f"--replay {args.replay} is a folder; give an audio or video file, or --out-dir to replay every "
                "recording in it"
            )
        if not args.replay.is_file():
            raise ValueError(f"no such recording: {args.replay}; check the path given to --replay")
    check_cli_model_options(args)
    speaker_config(args)
    if getattr(args, "second_pass", False) and args.replay is None:
        raise ValueError("--second-pass re-clusters a finished --replay; a live session keeps its live labels")


def _tracker(args, segmenter):
    """The models, loaded once, with the command's options."""
    from streamer.api import EmotionTracker

    return EmotionTracker(
        args.model,
        asr_model=args.asr_model,
        device=args.compute_device,
        compute_type=args.compute_type,
        language=args.language,
        text_encoder=args.text_encoder,
        text_runtime=args.text_runtime,
        segmenter=segmenter,
        split_channels=args.split_channels,
        speakers=speaker_config(args),
        uncertain_below=args.uncertain_below,
        asr_threads=args.asr_threads,
    )


def build_pipeline(args):
    """Everything the session needs, or a one-sentence ValueError (bad path, bad model, no device...).

    The models come from :class:`streamer.api.EmotionTracker`, the Python API: the command
    only adds what a terminal session has (the paced source, the recording, the UI)."""
    from streamer.audio import FileSource, Recorder
    from streamer.microphone import MicrophoneSource
    from streamer.pipeline import PipelineConfig

    check_options(args)
    check_outputs(args)
    seg = _segmenter_config(args)
    if args.replay is not None:  # the input is checked before the models load (seconds)
        source = FileSource(args.replay, block_ms=args.block_ms, speed=args.speed, split_channels=args.split_channels)
    else:
        source = MicrophoneSource(args.device, block_ms=args.block_ms)
    tracker = _tracker(args, seg)
    recorder = Recorder(args.record) if args.record else None
    speculate = not args.no_speculate and not (args.replay is not None and args.speed == "max")
    config = PipelineConfig(speculate=speculate, overlap=not args.no_speculate, interim=speculate and args.interim)
    return tracker.live_pipeline(source, recorder=recorder, config=config), tracker.checkpoint


class Collecting:
    """A pipeline wrapper that keeps the utterance events the UI shows, for ``--export``."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.events: list = []

    def describe(self) -> dict[str, str]:
        return self.pipeline.describe()

    def run(self, emit, stop, paused) -> None:
        from streamer.events import UtteranceEvent

        def tee(event) -> None:
            if isinstance(event, UtteranceEvent):
                self.events.append(event)
            emit(event)

        self.pipeline.run(tee, stop, paused)


def _sentence(message: object) -> str:
    """An error message on one line, its control characters (from a file name...) made visible."""
    from streamer.export import escape_controls

    return escape_controls(" ".join(str(message).split()))


def export_timeline(events: list, args) -> Path:
    from streamer.export import export

    return export(events, export_path(args), args.export)


def second_pass(events: list, args, description: dict[str, str] | None = None) -> list:
    """The events with ``--second-pass``'s re-clustered speakers (said on stderr and in the report)."""
    if not getattr(args, "second_pass", False):
        return events
    from streamer.recluster import second_pass as recluster_events

    events, note = recluster_events(events, speaker_config(args))
    if note:
        _say(f"# {note}", sys.stderr)
        if description is not None:
            description["speakers"] = note
    return events


def _write_export(events: list, args, prefix: str = "", description: dict[str, str] | None = None) -> bool:
    """Write ``--export``, ``--report`` and ``--plot`` (whatever else failed); one sentence per
    output that cannot be written, and False when any could not."""
    from streamer.report import write_plot, write_report

    title = args.replay.stem if args.replay is not None else "ser-live session"
    outputs = [
        ("--export", export_path(args), lambda: export_timeline(events, args)),
        ("--report", args.report, lambda: write_report(events, args.report, title, description=description)),
        ("--plot", args.plot, lambda: write_plot(events, args.plot)),
    ]
    ok = True
    for flag, path, write in outputs:
        if path is None:
            continue
        try:
            written = write()
        except Exception as exc:  # noqa: BLE001 - a derived output (a plotting bug...) must not end in a traceback
            ok = False
            _say(
                f"ser-live: error: could not write the {flag} file {path} ({_sentence(exc)}); "
                "the other outputs are complete",
                sys.stderr,
            )
            continue
        _say(f"{prefix}wrote {written}", sys.stderr)
    return ok


def _say(line: str, stream=None) -> None:
    """Print a line. A terminal that went away (SIGHUP) or a closed pipe (``| head``) must not
    stop the analysis or the file outputs: the stream then goes to /dev/null."""
    stream = stream or sys.stdout
    try:
        print(line, file=stream, flush=True)
    except OSError:  # BrokenPipeError, EIO
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def run_headless(pipeline, args) -> int:
    from streamer.events import InterimEvent, StatusEvent, UtteranceEvent
    from streamer.export import JsonlWriter, escape_controls, format_line

    events: list[UtteranceEvent] = []
    writer = JsonlWriter(args.jsonl) if args.jsonl else None
    status = {"error": False}

    def emit(event) -> None:
        nonlocal writer
        interim = args.interim and isinstance(event, InterimEvent)
        if interim:
            _say(f"… {event.speaker or '-'}: {escape_controls(event.text)}")
        if isinstance(event, UtteranceEvent) or interim:
            if not interim:
                events.append(event)
                _say(format_line(event))
            if writer is not None:
                try:
                    writer.write(event)
                except (OSError, ValueError) as exc:  # full disk...: the analysis and other outputs go on
                    status["error"] = True
                    _say(
                        f"ser-live: error: stopped appending to --jsonl {writer.path} "
                        f"({_sentence(exc)}); the analysis and the other outputs go on",
                        sys.stderr,
                    )
                    with contextlib.suppress(OSError):
                        writer.close()
                    writer = None
        elif isinstance(event, StatusEvent):
            if event.error:
                status["error"] = True
                _say(f"error: {_sentence(event.message)}", sys.stderr)
            elif args.verbose:
                _say(f"# {_sentence(event.message)}", sys.stderr)

    stop, paused = threading.Event(), threading.Event()
    received: list[int] = []
    try:
        with stop_on_signals(stop) as received:
            pipeline.run(emit, stop, paused)
    except KeyboardInterrupt:  # a second signal: end now (the pipeline closed the recording)
        stop.set()
    finally:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        describe = getattr(pipeline, "describe", None)  # any Pipeline; describe() is optional for the report
        description = describe() if describe is not None else None
        events = second_pass(events, args, description)
        if not _write_export(events, args, "# ", description):
            status["error"] = True
        counts = SpeakerCounts()
        for e in events:
            counts.add(e.speaker, e.label)
        for line in counts.lines():  # the per-speaker summary, at the end of a replay or session
            _say(f"# {line}", sys.stderr)
    if received:
        return 128 + received[0]
    if status["error"]:
        return 1
    if not events and not stop.is_set():
        _say("ser-live: no speech found in the input; check the input level or lower --vad-aggressiveness", sys.stderr)
        return 3
    return 0


def _quiet_libraries(verbose: bool) -> None:
    """Model-loading progress bars would garble the one-line-per-utterance output."""
    if verbose:
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # transformers is a dependency; this only guards odd installs
        pass


def main(argv: list[str] | None = None) -> int:
    with sequential_blas():  # the whole session; numpy's threads come back after it
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _quiet_libraries(args.verbose)
    try:
        if args.list_devices:
            from streamer.microphone import list_devices

            print(list_devices())
            return 0
        if args.out_dir is not None:
            from streamer.cli_batch import run_many

            return run_many(args, _tracker)
        pipeline, ck = build_pipeline(args)
        if args.no_ui:
            return run_headless(pipeline, args)
        from streamer.ui import EmotionApp

        tee = Collecting(pipeline)
        app = EmotionApp(
            tee,
            ck.labels,
            save_dir=args.save_dir,
            jsonl_path=args.jsonl,
            allow_save=not args.no_save,
            interim_jsonl=args.interim,
        )
        app.run()
        description = pipeline.describe()
        if not _write_export(second_pass(tee.events, args, description), args, description=description):
            return 1
        return 128 + app.received_signal if app.received_signal else 0
    except (ValueError, OSError) as exc:  # AudioError, CheckpointError, FeatureError are ValueErrors
        print(f"ser-live: error: {_sentence(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # python -m streamer.cli, as the ser-live script
    sys.exit(main())
