"""Textual front end: the app that runs the pipeline and lays out timeline, meter, strip and status bar.

The pipeline runs in ONE thread worker and hands events over with ``post_message``, which is
thread-safe and never waits for the UI, so a slow screen cannot stall audio capture. Level
events arrive at the audio block rate; they go through a one-slot mailbox (the latest level
wins) so at most one level message is ever queued, however far behind the UI falls.
Everything the app keeps grows at most to a fixed size: ``max_rows`` timeline rows and
``record_limit`` compact JSON lines / strip codes / latency samples for the whole session.
The widgets themselves live in :mod:`streamer.widgets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import threading
import time
from bisect import bisect_left, insort
from collections import deque
from functools import partial
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from streamer.events import Event, InterimEvent, LevelEvent, Pipeline, StatusEvent, UtteranceEvent
from streamer.export import JsonlWriter, escape_controls, event_to_json, write_session_jsonl
from streamer.speakers import SpeakerCounts
from streamer.widgets import EmotionStrip, InterimRow, LevelMeter, Palette, Timeline, UtteranceRow

log = logging.getLogger(__name__)

RECORD_LIMIT = 100_000


class RollingMedian:
    """Exact median of the last ``limit`` samples (sorted list + insertion order)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        if len(self._order) == self.limit:
            del self._sorted[bisect_left(self._sorted, self._order.popleft())]
        self._order.append(value)
        insort(self._sorted, value)

    @property
    def median(self) -> float:
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return math.nan
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class PipelineMessage(Message):
    """An utterance or status event crossing from the worker thread to the UI thread.

    ``posted_at`` (perf_counter, taken in the worker as the pipeline emits) starts the
    "ui" latency stage: from the event leaving the pipeline to the screen refresh that shows it.
    """

    def __init__(self, event: UtteranceEvent | InterimEvent | StatusEvent) -> None:
        super().__init__()
        self.event = event
        self.posted_at = time.perf_counter()


class LevelTick(Message):
    """A new level is waiting in the app's one-slot mailbox."""


class EmotionApp(App[None]):
    """Live emotion tracker UI; drives ``pipeline.run`` in one thread worker."""

    TITLE = "ser-live"
    CSS = """
    #status { height: 2; padding: 0 1; background: $boost; text-wrap: nowrap; text-overflow: ellipsis; }
    """
    BINDINGS = [
        Binding("p", "toggle_pause", "pause/resume"),
        Binding("s", "save", "save"),
        Binding("d", "toggle_details", "details"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        pipeline: Pipeline,
        labels: list[str],
        save_dir: Path | None = None,
        jsonl_path: Path | None = None,
        allow_save: bool = True,
        max_rows: int = 500,
        record_limit: int = RECORD_LIMIT,
        quit_timeout_s: float = 3.0,
        interim_jsonl: bool = False,
    ) -> None:
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be a non-empty list of distinct class names, got {labels!r}.")
        if max_rows < 1 or record_limit < 1:
            raise ValueError(f"max_rows ({max_rows}) and record_limit ({record_limit}) must be at least 1.")
        super().__init__()
        self.pipeline = pipeline
        self.emotion_labels = list(labels)
        self.palette = Palette(self.emotion_labels)
        self.save_dir = Path(save_dir) if save_dir is not None else Path("recordings")
        #: False (``--no-save``): the save key writes nothing, for sessions that must leave no file.
        self.allow_save = allow_save
        self.max_rows, self.record_limit, self.quit_timeout_s = max_rows, record_limit, quit_timeout_s
        self.stop, self.paused, self.pipeline_done = threading.Event(), threading.Event(), threading.Event()
        self._writer = JsonlWriter(jsonl_path) if jsonl_path is not None else None
        #: ``--interim``: interim events go to the JSONL too (the timeline always shows them)
        self.interim_jsonl = interim_jsonl
        #: (start_s, ms from emission to the refresh that drew it) per interim row, for benchmarks
        self.interim_shown: deque[tuple[float, float]] = deque(maxlen=record_limit)
        self._level_lock = threading.Lock()
        self._level: LevelEvent | None = None
        self._level_posted = False
        self._record: deque[str] = deque(maxlen=record_limit)
        self._latency: dict[str, RollingMedian] = {}
        self._last_latency: dict[str, float] = {}
        #: (utterance index, ms from emission to the refresh that drew its row), for benchmarks
        self.ui_latency_ms: deque[tuple[int, float]] = deque(maxlen=record_limit)
        self._info: dict[str, str] = {}
        self._worker: Worker[None] | None = None
        self.utterance_count = self.error_count = self.dropped_blocks = 0
        self.speaker_counts = SpeakerCounts()  # the per-speaker emotion shares under the status line
        self.message, self.finished, self.details = "starting", False, False
        self.last_saved: Path | None = None
        #: SIGTERM/SIGHUP received (its number), which ended the app like the quit key; 0 if none
        self.received_signal = 0

    # ------------------------------------------------------------------ layout and start-up

    def compose(self) -> ComposeResult:
        yield Header()
        yield Timeline(self.max_rows, id="timeline")
        yield EmotionStrip(self.palette, self.record_limit)
        yield LevelMeter()
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        try:
            self._info = {str(k): str(v) for k, v in self.pipeline.describe().items()}
        except Exception as e:  # a broken describe() must not keep the session from running
            log.exception("pipeline.describe() failed")
            self._info = {"describe": f"failed: {e}"}
        self.sub_title = self._info.get("model", "")
        self._worker = self.run_worker(
            self._run_pipeline, name="pipeline", group="pipeline", thread=True, exit_on_error=False
        )
        self._watch_signals(True)
        self._refresh_status()

    def _watch_signals(self, on: bool) -> None:
        """SIGTERM/SIGHUP quit like the q key: the pipeline flushes and stops, and Textual leaves
        the alternate screen and turns mouse reporting off (killed outright, it cannot)."""
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no loop or not the main thread
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if on:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                else:
                    loop.remove_signal_handler(sig)

    def _on_signal(self, signum: int) -> None:
        if not self.received_signal:
            self.received_signal = signum
            self.call_later(self.action_quit)

    # ------------------------------------------------------------------ worker thread side

    def _run_pipeline(self) -> None:
        try:
            self.pipeline.run(self._emit, self.stop, self.paused)
        finally:
            self.pipeline_done.set()

    def _emit(self, event: Event) -> None:
        """Called by the pipeline in the worker thread; never blocks on the UI."""
        if isinstance(event, LevelEvent):
            with self._level_lock:
                self._level, post, self._level_posted = event, not self._level_posted, True
            if post:
                self._post(LevelTick())
            return
        if not isinstance(event, UtteranceEvent | InterimEvent | StatusEvent):
            raise TypeError(
                f"pipeline emitted {type(event).__name__}; emit takes UtteranceEvent, InterimEvent, LevelEvent or "
                "StatusEvent."
            )
        writer = self._writer
        logged = isinstance(event, UtteranceEvent) or (self.interim_jsonl and isinstance(event, InterimEvent))
        if writer is not None and logged:
            try:
                writer.write(event)
            except (OSError, ValueError) as e:
                log.exception("could not append to %s", writer.path)
                self._writer = None
                self._post(PipelineMessage(StatusEvent(f"stopped appending to {writer.path}: {e}", error=True)))
        self._post(PipelineMessage(event))

    def _post(self, message: Message) -> None:
        try:
            self.post_message(message)
        except RuntimeError:  # the event loop closed while the pipeline was still finishing
            log.debug("dropped %s after the UI closed", type(message).__name__)

    # ------------------------------------------------------------------ UI thread side

    def on_level_tick(self, _: LevelTick) -> None:
        with self._level_lock:
            level, self._level_posted = self._level, False
        self.query_one(LevelMeter).level = level

    def on_pipeline_message(self, message: PipelineMessage) -> None:
        event = message.event
        try:
            if isinstance(event, UtteranceEvent):
                self._add_utterance(event)
                self.call_after_refresh(self._shown, event, message.posted_at)
            elif isinstance(event, InterimEvent):
                self.query_one(Timeline).set_interim(event.channel, InterimRow(event))
                self.call_after_refresh(self._interim_shown, event, message.posted_at)
            else:
                self._apply_status(event)
        except Exception as e:  # one malformed event must not take the session down
            log.exception("could not show %r", event)
            self.error_count += 1
            self.message = f"could not show an event: {e}"
            self.notify(self.message, severity="error", markup=False)
        self._refresh_status()

    def _add_utterance(self, event: UtteranceEvent) -> None:
        row = UtteranceRow(event, self.palette)  # the timeline applies its details setting
        self._record.append(event_to_json(event))
        self.utterance_count += 1
        self.speaker_counts.add(event.speaker, event.label)
        if event.error is not None:
            self.error_count += 1
        else:
            self._last_latency = dict(event.latency_ms)
            for stage, ms in event.latency_ms.items():
                self._latency.setdefault(stage, RollingMedian(self.record_limit)).add(float(ms))
        self.query_one(EmotionStrip).add(event.label if event.error is None else None)
        self.query_one(Timeline).add(row)

    def _interim_shown(self, event: InterimEvent, posted_at: float) -> None:
        self.interim_shown.append((event.start_s, (time.perf_counter() - posted_at) * 1000))

    def _shown(self, event: UtteranceEvent, posted_at: float) -> None:
        """Runs after the refresh that drew ``event``'s row: the end of its "ui" stage."""
        ms = (time.perf_counter() - posted_at) * 1000
        self.ui_latency_ms.append((event.index, ms))
        if event.error is None:
            self._last_latency["ui"] = ms
            self._latency.setdefault("ui", RollingMedian(self.record_limit)).add(ms)
            self._refresh_status()

    def _apply_status(self, event: StatusEvent) -> None:
        if event.model:
            self._info["model"] = self.sub_title = event.model
        if event.device:
            self._info["device"] = event.device
        self.dropped_blocks = max(self.dropped_blocks, event.dropped_blocks)  # a running total
        if event.message:
            self.message = escape_controls(event.message)
        if event.error:
            self.error_count += 1
            self.notify(escape_controls(event.message), severity="error", markup=False)
        if event.finished:
            self.finished = True
            for channel in list(self.query_one(Timeline).interim):  # no final will come for these
                self.query_one(Timeline).set_interim(channel, None)
            self.query_one(LevelMeter).state = "ended"
            self.notify("input ended — press q to quit")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker or event.state not in (WorkerState.ERROR, WorkerState.SUCCESS):
            return
        meter = self.query_one(LevelMeter)
        if event.state is WorkerState.ERROR:
            self.error_count += 1
            self.message = f"pipeline failed: {event.worker.error!r}"
            self.notify(self.message, severity="error", markup=False)
            meter.state = "stopped"
        elif not self.finished and not self.stop.is_set():
            self.message = "pipeline stopped"
            meter.state = "stopped"
        self._refresh_status()

    def _refresh_status(self) -> None:
        info = dict(self._info)
        head = [f"{k} {info.pop(k)}" for k in ("model", "device", "asr") if k in info]
        head += [f"{k} {v}" for k, v in info.items()]
        state = "PAUSED" if self.paused.is_set() else "input ended" if self.finished else "live"
        line1 = Text.assemble(
            (state, "bold yellow" if state == "PAUSED" else "bold"),
            "  ",
            " · ".join(head),
            f"  │ utterances {self.utterance_count} · dropped blocks {self.dropped_blocks} · ",
            (f"errors {self.error_count}", "bold red" if self.error_count else ""),
            f"  │ {self.message}",
        )
        lat = " · ".join(
            f"{k} {self._last_latency.get(k, math.nan):.0f}/{m.median:.0f}" for k, m in self._latency.items()
        )
        line2 = Text(f"latency ms last/p50: {lat}" if lat else "latency ms: no utterance yet", style="dim")
        if self.speaker_counts.counts:  # each speaker's emotion shares first: what the session is about
            line2 = Text.assemble(" · ".join(self.speaker_counts.lines()), "  │  ", line2)
        self.query_one("#status", Static).update(Text("\n").join([line1, line2]))

    # ------------------------------------------------------------------ key bindings

    def action_toggle_pause(self) -> None:
        if self.paused.is_set():
            self.paused.clear()
        else:
            self.paused.set()
        meter = self.query_one(LevelMeter)
        if meter.state in ("live", "paused"):
            meter.state = "paused" if self.paused.is_set() else "live"
        self._refresh_status()

    def action_toggle_details(self) -> None:
        self.details = not self.details
        self.query_one(Timeline).details = self.details

    def action_save(self) -> None:
        if not self.allow_save:
            self.notify("saving is off (--no-save): nothing was written", severity="warning")
            return
        lines = list(self._record)
        if not lines:
            self.notify("nothing to save yet", severity="warning")
            return
        self.run_worker(
            partial(self._save, lines, self.save_dir), name="save", group="save", thread=True, exit_on_error=False
        )

    def _save(self, lines: list[str], directory: Path) -> None:
        """Thread worker: file I/O of up to ``record_limit`` lines stays off the UI thread."""
        try:
            path = write_session_jsonl(lines, directory)
        except OSError as e:
            log.exception("could not save the session to %s", directory)
            self.notify(f"could not save to {directory}: {e}", severity="error", markup=False)  # notify is thread-safe
            return
        report = self._save_report(lines, path)
        self.last_saved = path
        also = f" and {report.name}" if report is not None else ""
        self.notify(f"saved {len(lines)} utterances to {path}{also}", markup=False)

    def _save_report(self, lines: list[str], saved: Path) -> Path | None:
        """The HTML report next to the saved JSONL (same name, .html): the session at a glance.
        The JSONL is the record; a report that cannot be written is said, not fatal."""
        import json

        from streamer.export import event_from_dict
        from streamer.report import write_report

        try:
            events = [event_from_dict(json.loads(line)) for line in lines]
            return write_report(events, saved.with_suffix(".html"), labels=self.emotion_labels)
        except (OSError, ValueError) as e:
            log.warning("could not write the HTML report next to %s: %s", saved, e)
            self.notify(f"could not write the HTML report: {e}", severity="warning", markup=False)
            return None

    async def action_quit(self) -> None:
        self.stop.set()
        if self.query_one(LevelMeter).state in ("live", "paused"):
            self.query_one(LevelMeter).state = "stopping"
        deadline = time.monotonic() + self.quit_timeout_s
        while self._worker is not None and not self.pipeline_done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # keep handling messages while the pipeline winds down
        if self._worker is not None and not self.pipeline_done.is_set():
            log.warning("pipeline did not return within %.1f s of stop; exiting anyway", self.quit_timeout_s)
        self.exit()

    def on_unmount(self) -> None:
        self.stop.set()
        self._watch_signals(False)
        if self._writer is not None:
            self._writer.close()
