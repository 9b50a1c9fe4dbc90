"""Textual front end: timeline, level meter, emotion-over-time strip and status bar.

The pipeline runs in ONE thread worker and hands events over with ``post_message``, which is
thread-safe and never waits for the UI, so a slow screen cannot stall audio capture. Level
events arrive at the audio block rate; they go through a one-slot mailbox (the latest level
wins) so at most one level message is ever queued, however far behind the UI falls.
Everything the app keeps grows at most to a fixed size: ``max_rows`` widgets on screen and
``record_limit`` compact JSON lines / strip codes / latency samples for the whole session.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from bisect import bisect_left, insort
from collections import deque
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from streamer.events import Event, LevelEvent, Pipeline, StatusEvent, UtteranceEvent
from streamer.export import JsonlWriter, event_to_json, format_clock, write_session_jsonl

log = logging.getLogger(__name__)

RECORD_LIMIT = 100_000
_COLOUR_NAMES = {
    "grey70": "neutral neu",
    "pale_green3": "calm",
    "yellow": "joy happy happiness hap",
    "dark_orange": "excited excitement exc",
    "cyan": "surprise surprised sur",
    "red": "anger angry ang",
    "orange_red1": "frustrated frustration fru",
    "dodger_blue1": "sadness sad",
    "medium_purple": "fear fearful fea",
    "green": "disgust dis",
    "dark_khaki": "contempt",
}
_NAMED_COLOURS = {name: colour for colour, names in _COLOUR_NAMES.items() for name in names.split()}
_FALLBACK = ("magenta", "spring_green2", "light_salmon1", "orchid", "steel_blue1", "gold1", "deep_pink2")
_FAILED_COLOUR = "grey50"
_EIGHTHS = " ▏▎▍▌▋▊▉█"
_STATES = {
    "paused": ("⏸ paused   ", "bold yellow"),
    "stopping": ("… stopping ", "dim"),
    "ended": ("■ input ended", "bold"),
    "stopped": ("■ pipeline stopped", "bold red"),
}


def hbar(fraction: float, width: int) -> str:
    """Horizontal bar in eighth blocks, padded with ░ (no spaces, so wrapped text never splits it)."""
    fraction = min(max(fraction if math.isfinite(fraction) else 0.0, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    return bar + "░" * (width - len(bar))


def compress_codes(codes: list[int] | deque[int], width: int) -> list[int]:
    """One code per cell: the codes themselves, or the most frequent code of each equal share."""
    n = len(codes)
    if n <= width:
        return list(codes)
    arr = np.fromiter(codes, dtype=np.int64, count=n)
    shifted = arr - arr.min()
    bins = (np.arange(n) * width) // n
    counts = np.zeros((width, int(shifted.max()) + 1), dtype=np.int64)
    np.add.at(counts, (bins, shifted), 1)
    return (counts.argmax(axis=1) + arr.min()).tolist()


class Palette:
    """Stable label -> (code, colour); labels the model did not declare get appended, not dropped."""

    def __init__(self, labels: list[str]) -> None:
        self.labels: list[str] = []
        self._code: dict[str, int] = {}
        for label in labels:
            self.code(label)

    def code(self, label: str | None) -> int:
        if label is None:
            return -1
        if label not in self._code:
            self._code[label] = len(self.labels)
            self.labels.append(label)
        return self._code[label]

    def colour(self, label: str | None) -> str:
        if label is None:
            return _FAILED_COLOUR
        return _NAMED_COLOURS.get(label.lower()) or _FALLBACK[self.code(label) % len(_FALLBACK)]


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
    """An utterance or status event crossing from the worker thread to the UI thread."""

    def __init__(self, event: UtteranceEvent | StatusEvent) -> None:
        super().__init__()
        self.event = event


class LevelTick(Message):
    """A new level is waiting in the app's one-slot mailbox."""


class UtteranceRow(Widget):
    """One timeline row; with ``details`` a second line of per-class probability bars."""

    DEFAULT_CSS = "UtteranceRow { height: auto; }"
    details: reactive[bool] = reactive(False, layout=True)

    def __init__(self, event: UtteranceEvent, palette: Palette, details: bool = False) -> None:
        super().__init__()
        self.event = event
        # Format now, not in render(): a malformed event fails where it arrives, not at paint time.
        self._cells = [Text(format_clock(event.start_s), style="dim"), Text(event.speaker or "-", style="bold")]
        if event.error is not None:
            self._cells += [
                Text("ERROR", style="bold red"),
                Text.assemble((event.error, "red"), "  ", (event.text, "dim")),
            ]
        else:
            verdict = Text.assemble(
                (event.label or "?", f"bold {palette.colour(event.label)}"), f" {event.confidence:.2f}"
            )
            self._cells += [verdict, Text(event.text)]
        known = [k for k in palette.labels if k in event.probs] + [k for k in event.probs if k not in palette.labels]
        bars = [
            Text.assemble(
                (k, palette.colour(k)), " ", (hbar(event.probs[k], 5), palette.colour(k)), f" {event.probs[k]:.2f}"
            )
            for k in known
        ]
        self._bars = Text("  ").join(bars) if bars else Text("no class probabilities", style="dim")
        self.set_reactive(UtteranceRow.details, details)

    def render(self) -> RenderableType:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=8, no_wrap=True)
        grid.add_column(width=6, no_wrap=True, overflow="ellipsis")
        grid.add_column(width=14, no_wrap=True)
        grid.add_column(ratio=1)
        grid.add_row(*self._cells)
        if self.details:
            grid.add_row("", "", "", self._bars)
        return grid


class LevelMeter(Widget):
    """Input level in dBFS (-60..0) with the listening/speech/paused/ended state."""

    DEFAULT_CSS = "LevelMeter { height: 1; padding: 0 1; }"
    level: reactive[LevelEvent | None] = reactive(None)
    state: reactive[str] = reactive("live")  # live | paused | stopping | ended | stopped

    def render(self) -> RenderableType:
        lv = self.level
        if self.state in _STATES:
            head = _STATES[self.state]
        elif lv is None:
            head = ("… waiting  ", "dim")
        else:
            head = ("● speech   ", "bold green") if lv.speech else ("○ listening", "dim")
        if lv is None:
            return Text.assemble(head)
        width = max(self.size.width - 40, 10)
        colour = "red" if lv.level_dbfs > -3 else "yellow" if lv.level_dbfs > -12 else "green"
        bar = hbar((lv.level_dbfs + 60) / 60, width)
        return Text.assemble(head, "  ▕", (bar, colour), "▏ ", f"{lv.level_dbfs:6.1f} dBFS  t={lv.time_s:.1f}s")


class EmotionStrip(Widget):
    """The whole session, one coloured cell per utterance (majority label per cell once it overflows)."""

    DEFAULT_CSS = "EmotionStrip { height: 4; border: round $secondary; }"

    def __init__(self, palette: Palette, limit: int) -> None:
        super().__init__()
        self.palette = palette
        self.codes: deque[int] = deque(maxlen=limit)

    def add(self, label: str | None) -> None:
        self.codes.append(self.palette.code(label))
        self._update_title()
        self.refresh()

    def on_resize(self) -> None:
        self._update_title()

    def _update_title(self) -> None:
        per_cell = math.ceil(len(self.codes) / max(self.size.width, 1))
        extra = f" · ≈{per_cell} per cell" if per_cell > 1 else ""
        self.border_title = f"emotion over time · {len(self.codes)} utterances{extra}"

    def render(self) -> RenderableType:
        cells = compress_codes(self.codes, max(self.size.width, 1))
        labels = self.palette.labels
        strip = Text.assemble(
            *[("×", _FAILED_COLOUR) if c < 0 else ("█", self.palette.colour(labels[c])) for c in cells]
        )
        legend = Text("  ").join(Text.assemble(("■ ", self.palette.colour(k)), k) for k in labels)
        return Text("\n").join([strip, legend])


class EmotionApp(App[None]):
    """Live emotion tracker UI; drives ``pipeline.run`` in one thread worker."""

    TITLE = "ser-live"
    CSS = """
    #timeline { height: 1fr; border: round $primary; }
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
        max_rows: int = 500,
        record_limit: int = RECORD_LIMIT,
        quit_timeout_s: float = 3.0,
    ) -> None:
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be a non-empty list of distinct class names, got {labels!r}.")
        if max_rows < 1 or record_limit < 1:
            raise ValueError(f"max_rows ({max_rows}) and record_limit ({record_limit}) must be at least 1.")
        super().__init__()
        self.pipeline = pipeline
        self.palette = Palette(list(labels))
        self.save_dir = Path(save_dir) if save_dir is not None else Path("recordings")
        self.max_rows, self.record_limit, self.quit_timeout_s = max_rows, record_limit, quit_timeout_s
        self.stop, self.paused, self.pipeline_done = threading.Event(), threading.Event(), threading.Event()
        self._writer = JsonlWriter(jsonl_path) if jsonl_path is not None else None
        self._level_lock = threading.Lock()
        self._level: LevelEvent | None = None
        self._level_posted = False
        self._record: deque[str] = deque(maxlen=record_limit)
        self._rows: deque[UtteranceRow] = deque()
        self._latency: dict[str, RollingMedian] = {}
        self._last_latency: dict[str, float] = {}
        self._info: dict[str, str] = {}
        self._worker: Worker[None] | None = None
        self.utterance_count = self.error_count = self.dropped_blocks = 0
        self.message, self.finished, self.details = "starting", False, False
        self.last_saved: Path | None = None

    # ------------------------------------------------------------------ layout and start-up

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="timeline")
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
        self.query_one("#timeline", VerticalScroll).anchor()
        self._worker = self.run_worker(
            self._run_pipeline, name="pipeline", group="pipeline", thread=True, exit_on_error=False
        )
        self._refresh_status()

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
        if not isinstance(event, UtteranceEvent | StatusEvent):
            raise TypeError(
                f"pipeline emitted {type(event).__name__}; emit takes UtteranceEvent, LevelEvent or StatusEvent."
            )
        writer = self._writer
        if writer is not None and isinstance(event, UtteranceEvent):
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
            else:
                self._apply_status(event)
        except Exception as e:  # one malformed event must not take the session down
            log.exception("could not show %r", event)
            self.error_count += 1
            self.message = f"could not show an event: {e}"
            self.notify(self.message, severity="error", markup=False)
        self._refresh_status()

    def _add_utterance(self, event: UtteranceEvent) -> None:
        row = UtteranceRow(event, self.palette, self.details)
        self._record.append(event_to_json(event))
        self.utterance_count += 1
        if event.error is not None:
            self.error_count += 1
        else:
            self._last_latency = dict(event.latency_ms)
            for stage, ms in event.latency_ms.items():
                self._latency.setdefault(stage, RollingMedian(self.record_limit)).add(float(ms))
        self.query_one(EmotionStrip).add(event.label if event.error is None else None)
        self.query_one("#timeline", VerticalScroll).mount(row)
        self._rows.append(row)
        while len(self._rows) > self.max_rows:
            self._rows.popleft().remove()

    def _apply_status(self, event: StatusEvent) -> None:
        if event.model:
            self._info["model"] = self.sub_title = event.model
        if event.device:
            self._info["device"] = event.device
        self.dropped_blocks = max(self.dropped_blocks, event.dropped_blocks)  # a running total
        if event.message:
            self.message = event.message
        if event.error:
            self.error_count += 1
            self.notify(event.message, severity="error", markup=False)
        if event.finished:
            self.finished = True
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
        for row in self._rows:
            row.details = self.details

    def action_save(self) -> None:
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
        self.last_saved = path
        self.notify(f"saved {len(lines)} utterances to {path}", markup=False)

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
        if self._writer is not None:
            self._writer.close()
