"""Self-contained Textual widgets of the live UI and their text-formatting helpers.

The timeline and its rows, the level meter and the emotion-over-time strip, plus the label
palette they share. Separate from :mod:`streamer.ui` because none of it knows about
the pipeline, the worker thread or the app's message handling: each widget only
renders the events or values it is given, so it can be read and tested on its own.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.events import Resize
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from streamer.events import InterimEvent, LevelEvent, UtteranceEvent
from streamer.export import escape_controls, format_clock, label_text
from streamer.speakers import speaker_cell, speaker_style

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
    "grey42": "uncertain",  # no emotion claimed (--uncertain-below): darker than neutral, not failure's grey50
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


class UtteranceRow:
    """One timeline row; with ``details`` a second line of per-class probability bars."""

    def __init__(self, event: UtteranceEvent, palette: Palette, details: bool = False) -> None:
        self.event = event
        self.details = details
        # Format now, not in render(): a malformed event fails where it arrives, not at paint time.
        # Control characters from a transcript or a label must not reach the terminal.
        speaker, text = escape_controls(speaker_cell(event)), escape_controls(event.text)
        self._cells = [Text(format_clock(event.start_s), style="dim"), Text(speaker, style=speaker_style(event))]
        if event.error is not None:
            self._cells += [
                Text("ERROR", style="bold red"),
                Text.assemble((escape_controls(event.error), "red"), "  ", (text, "dim")),
            ]
        else:
            verdict = Text.assemble(
                (label_text(event) if event.label else "?", f"bold {palette.colour(event.label)}"),
                f" {event.confidence:.2f}",
            )
            self._cells += [verdict, Text(text)]
        known = [k for k in palette.labels if k in event.probs] + [k for k in event.probs if k not in palette.labels]
        bars = [
            Text.assemble(
                (escape_controls(k), palette.colour(k)),
                " ",
                (hbar(event.probs[k], 5), palette.colour(k)),
                f" {event.probs[k]:.2f}",
            )
            for k in known
        ]
        self._bars = Text("  ").join(bars) if bars else Text("no class probabilities", style="dim")

    def render(self) -> RenderableType:
        grid = _row_grid(self._cells)
        if self.details:
            grid.add_row("", "", "", self._bars)
        return grid


def _row_grid(cells: list[Text]) -> Table:
    """A timeline row's grid: clock, speaker, label, words (the same columns for every row kind)."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=8, no_wrap=True)
    grid.add_column(width=6, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=14, no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(*cells)
    return grid


class InterimRow:
    """The row of an utterance still being spoken: its words so far, marked as interim (dim,
    italic, "…"); the timeline shows it below the finished rows until the final replaces it."""

    details = False  # no probabilities yet; the timeline sets the attribute on every row

    def __init__(self, event: InterimEvent) -> None:
        self.event = event
        self._cells = [
            Text(format_clock(event.start_s), style="dim"),
            Text(escape_controls(event.speaker or "-"), style="bold"),
            Text("… interim", style="dim italic"),
            Text(escape_controls(event.text) or "…", style="dim italic"),
        ]

    def render(self) -> RenderableType:
        return _row_grid(self._cells)


class Timeline(ScrollView):
    """The last ``max_rows`` utterances as pre-rendered lines, drawn a screen line at a time.

    Textual lays out every child widget of a container on each change, so a timeline of
    row widgets got slower with every row (45-80 ms a new row at 400-600 rows). Here each
    row is rendered once into strips at the current width (again only on resize or when
    details are toggled) and ``render_line`` reads the visible ones: adding a row costs the
    same with 5 or 500 rows. It follows the newest row unless the user scrolled up.
    """

    DEFAULT_CSS = "Timeline { height: 1fr; border: round $primary; scrollbar-gutter: stable; }"

    def __init__(self, max_rows: int, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: deque[UtteranceRow] = deque(maxlen=max_rows)
        self._heights: deque[int] = deque()
        self._lines: list[Strip] = []
        self._width = 0
        self._details = False
        #: rows of utterances still being spoken, by channel, drawn after the finished rows
        self.interim: dict[int, InterimRow] = {}
        self._interim_lines: list[Strip] = []
        #: whether the view sits at the newest row. Kept from scroll positions rather than read
        #: off them when a row lands: a burst of rows arrives before the deferred scroll to the
        #: end has run, and reading then would find the view "scrolled up" and stop following.
        self._following = True

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._following = new_value >= self.max_scroll_y

    @property
    def details(self) -> bool:
        return self._details

    @details.setter
    def details(self, value: bool) -> None:
        self._details = value
        for row in self.rows:
            row.details = value
        self._reflow()

    def set_interim(self, channel: int, row: InterimRow | None) -> None:
        """Show (or with None remove) the interim row of ``channel``, below the finished rows."""
        follow = self._following
        if row is None:
            if self.interim.pop(channel, None) is None:
                return
        else:
            self.interim[channel] = row
        self._render_interim()
        self._resized(follow)

    def _render_interim(self) -> None:
        self._interim_lines = [line for key in sorted(self.interim) for line in self._render_row(self.interim[key])]

    def add(self, row: UtteranceRow) -> None:
        """Append a finished row; it replaces the interim row of the same utterance (same start:
        both come from the same sample count), wherever the final's speaker name comes from."""
        follow = self._following
        replaced = [k for k, r in self.interim.items() if r.event.start_s == row.event.start_s]
        for key in replaced:
            del self.interim[key]
        if replaced:
            self._render_interim()
        row.details = self._details
        if len(self.rows) == self.rows.maxlen:
            self.rows.popleft()
            del self._lines[: self._heights.popleft()]
        self.rows.append(row)
        self._append_lines(row)
        self._resized(follow)

    def _append_lines(self, row: UtteranceRow) -> None:
        strips = self._render_row(row)
        self._heights.append(len(strips))
        self._lines.extend(strips)

    def _render_row(self, row: UtteranceRow) -> list[Strip]:
        if self._width <= 0:
            return []  # no size yet: on_resize renders every row
        console = self.app.console
        lines = console.render_lines(row.render(), console.options.update_width(self._width), pad=True)
        return [Strip(line, self._width) for line in lines]

    def _reflow(self) -> None:
        follow = self._following
        self._lines, self._heights = [], deque()
        for row in self.rows:
            self._append_lines(row)
        self._render_interim()
        self._resized(follow)

    def _resized(self, follow: bool) -> None:
        self.virtual_size = Size(self._width, len(self._lines) + len(self._interim_lines))
        if follow:
            # At once, not after the next refresh: a deferred scroll lands after whatever the
            # user did in between and would yank a view they just scrolled up back down.
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.refresh()

    def on_resize(self, event: Resize) -> None:
        width = self.scrollable_content_region.width
        if width != self._width:
            self._width = width
            self._reflow()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        index = scroll_y + y
        lines = self._lines
        if index >= len(lines):
            index -= len(lines)
            lines = self._interim_lines
        if index >= len(lines):
            return Strip.blank(width, self.rich_style)
        return lines[index].crop_extend(scroll_x, scroll_x + width, self.rich_style).apply_style(self.rich_style)


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
