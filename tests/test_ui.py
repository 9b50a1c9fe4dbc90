"""EmotionApp driven headless (App.run_test + pilot) by a scripted fake pipeline."""

from __future__ import annotations

import html
import io
import threading
import time

import pytest
from rich.console import Console
from textual.widgets import Static

from streamer.events import LevelEvent, StatusEvent, UtteranceEvent
from streamer.export import read_jsonl
from streamer.ui import EmotionApp, LevelTick, PipelineMessage, RollingMedian
from streamer.widgets import EmotionStrip, LevelMeter, Palette, Timeline, compress_codes, hbar

LABELS = ["neutral", "joy", "anger", "sadness"]


def utt(i, label="joy", conf=0.82, text=None, error=None, total_ms=200.0):
    probs = {k: (conf if k == label else (1 - conf) / 3) for k in LABELS} if error is None else {}
    return UtteranceEvent(
        index=i,
        start_s=2.0 * i + 0.25,
        end_s=2.0 * i + 1.5,
        speaker="AB"[i % 2],
        text=text if text is not None else f"sentence number {i}",
        label=None if error else label,
        confidence=0.0 if error else conf,
        probs=probs,
        latency_ms={"asr": total_ms / 2, "model": 3.0, "total": total_ms},
        error=error,
    )


class FakePipeline:
    """Runs a script: events are emitted, floats sleep (interruptible by stop), callables get
    (emit, stop, paused). After the script it blocks until stop, like a live microphone."""

    def __init__(self, script, block_at_end=True):
        self.script = list(script)
        self.block_at_end = block_at_end
        self.returned = threading.Event()
        self.thread_name = None

    def describe(self):
        return {"model": "fake-hbaf", "device": "cpu", "asr": "tiny.en"}

    def run(self, emit, stop, paused):
        self.thread_name = threading.current_thread().name
        try:
            for item in self.script:
                if stop.is_set():
                    return
                if isinstance(item, float):
                    stop.wait(item)
                elif callable(item):
                    item(emit, stop, paused)
                else:
                    emit(item)
            if self.block_at_end:
                stop.wait()
        finally:
            self.returned.set()


async def until(pilot, condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.02)


def rendered(widget, width=110):
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.render())
    return console.export_text()


def rows(app):
    return list(app.query_one(Timeline).rows)


def status_text(app):
    return app.query_one("#status", Static).content.plain


async def test_events_appear_in_order_and_meter_and_status_update():
    script = [
        StatusEvent("microphone open", model="fake-hbaf", device="cpu"),
        LevelEvent(0.1, -42.0, False),
        utt(0, "joy", total_ms=100.0),
        utt(1, "anger", 0.7, total_ms=400.0),
        0.05,
        utt(2, "sadness", 0.6, total_ms=250.0),
        LevelEvent(6.5, -9.5, True),
        StatusEvent("overrun", dropped_blocks=3),
    ]
    app = EmotionApp(FakePipeline(script), LABELS)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.utterance_count == 3 and app.dropped_blocks == 3)
        await until(pilot, lambda: app.query_one(LevelMeter).level == script[6])
        assert [r.event.index for r in rows(app)] == [0, 1, 2]
        text = rendered(rows(app)[1])
        assert "00:02.2" in text and "anger 0.70" in text and "sentence number 1" in text and " B " in text
        meter = app.query_one(LevelMeter).render().plain
        assert "speech" in meter and "-9.5 dBFS" in meter
        status = status_text(app)
        for part in ("fake-hbaf", "device cpu", "asr tiny.en", "utterances 3", "dropped blocks 3", "overrun"):
            assert part in status
        assert "total 250/250" in status and "asr 125/125" in status  # last 250; median of 100, 400, 250
        assert len(app.query_one(EmotionStrip).codes) == 3


async def test_ui_stage_is_measured_from_emission_to_the_refresh_that_draws_the_row():
    app = EmotionApp(FakePipeline([utt(0), utt(1)]), LABELS)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.ui_latency_ms) == 2)
        assert [i for i, _ in app.ui_latency_ms] == [0, 1]
        assert all(0.0 <= ms < 5000.0 for _, ms in app.ui_latency_ms)
        late = PipelineMessage(utt(2))
        late.posted_at -= 0.5  # as if it had waited 500 ms in the queue
        app.post_message(late)
        await until(pilot, lambda: len(app.ui_latency_ms) == 3)
        assert app.ui_latency_ms[-1][0] == 2 and app.ui_latency_ms[-1][1] >= 500.0
        assert len(rows(app)) == 3
        assert "ui " in status_text(app)


async def test_pause_key_sets_event_the_pipeline_observes():
    seen = []

    def watch(emit, stop, paused):
        assert paused.wait(5)
        seen.append("paused")
        while paused.is_set() and not stop.is_set():
            time.sleep(0.01)
        seen.append("resumed")

    app = EmotionApp(FakePipeline([watch]), LABELS)
    async with app.run_test() as pilot:
        await pilot.press("p")
        assert app.paused.is_set() and "PAUSED" in status_text(app)
        assert "paused" in app.query_one(LevelMeter).render().plain
        await until(pilot, lambda: seen == ["paused"])
        await pilot.press("p")
        assert not app.paused.is_set() and "PAUSED" not in status_text(app)
        await until(pilot, lambda: seen == ["paused", "resumed"])


async def test_details_toggle_shows_probability_bars():
    app = EmotionApp(FakePipeline([utt(0, "joy", 0.82), utt(1, "anger", 0.5)]), LABELS)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 2)
        assert "0.06" not in rendered(rows(app)[0])  # (1 - 0.82) / 3 appears only in the details
        await pilot.press("d")
        assert app.details and all(r.details for r in rows(app))
        detail = rendered(rows(app)[0])
        assert "joy ████▏ 0.82" in detail and "neutral" in detail and "0.06" in detail
        await pilot.press("d")
        assert not app.details and not any(r.details for r in rows(app))
        assert "0.06" not in rendered(rows(app)[0])


async def test_save_writes_session_jsonl_without_overwriting(tmp_path):
    events = [utt(0), utt(1, "anger", text='said "hi", then — ✓ 你好'), utt(2, error="asr failed")]
    app = EmotionApp(FakePipeline(events), LABELS, save_dir=tmp_path / "rec")
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.utterance_count == 3)
        await pilot.press("s")
        await until(pilot, lambda: app.last_saved is not None)
        first = app.last_saved
        app.last_saved = None
        await pilot.press("s")
        await until(pilot, lambda: app.last_saved is not None)
    assert first.parent == tmp_path / "rec" and first.name.startswith("session-") and first.suffix == ".jsonl"
    assert app.last_saved != first
    assert read_jsonl(first) == events and read_jsonl(app.last_saved) == events
    report = first.with_suffix(".html").read_text()  # the save key also writes the picture of the session
    assert "<svg" in report and all(html.escape(e.text) in report for e in events)


async def test_save_with_nothing_recorded_writes_no_file(tmp_path):
    app = EmotionApp(FakePipeline([LevelEvent(0.1, -40.0, False)]), LABELS, save_dir=tmp_path)
    async with app.run_test() as pilot:
        await pilot.press("s")
        await pilot.pause(0.1)
        assert app.last_saved is None
    assert list(tmp_path.iterdir()) == []


async def test_quit_sets_stop_and_waits_for_the_worker():
    def wind_down(emit, stop, paused):
        stop.wait()
        time.sleep(0.3)  # e.g. closing the audio device

    pipeline = FakePipeline([utt(0), wind_down])
    app = EmotionApp(pipeline, LABELS)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.utterance_count == 1)
        assert not pipeline.returned.is_set()  # blocked like a live microphone
        await pilot.press("q")
        assert app.stop.is_set() and pipeline.returned.is_set() and app.pipeline_done.is_set()
    assert not app.is_running and app.return_code == 0
    assert pipeline.thread_name != threading.main_thread().name


async def test_quit_gives_up_on_a_pipeline_that_ignores_stop():
    gate = threading.Event()
    app = EmotionApp(FakePipeline([lambda emit, stop, paused: gate.wait(10)]), LABELS, quit_timeout_s=0.2)
    try:
        async with app.run_test() as pilot:
            t0 = time.monotonic()
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, timeout_s=4.0)
            assert 0.2 <= time.monotonic() - t0 < 4.0 and not app.pipeline_done.is_set()
    finally:
        gate.set()


async def test_failed_utterance_shows_error_and_session_continues():
    script = [utt(0), utt(1, error="whisper: decoder crashed"), 0.05, utt(2, "sadness")]
    app = EmotionApp(FakePipeline(script), LABELS)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 3)
        failed = rendered(rows(app)[1])
        assert "ERROR" in failed and "whisper: decoder crashed" in failed
        assert "sadness" in rendered(rows(app)[2])
        assert app.error_count == 1 and "errors 1" in status_text(app)
        assert list(app.query_one(EmotionStrip).codes) == [1, -1, 3]


async def test_stays_responsive_while_pipeline_blocks_and_floods_levels():
    gate = threading.Event()
    last = LevelEvent(99.0, -20.0, True)

    def flood(emit, stop, paused):
        for i in range(20_000):
            emit(LevelEvent(i * 0.01, -50.0, False))
        emit(last)
        gate.wait(10)  # the worker is now busy/blocked

    ticks = []
    app = EmotionApp(FakePipeline([flood]), LABELS)
    async with app.run_test(message_hook=lambda m: ticks.append(1) if isinstance(m, LevelTick) else None) as pilot:
        await until(pilot, lambda: app.query_one(LevelMeter).level == last)
        assert len(ticks) < 10_000  # levels are coalesced: at most one tick waits in the queue
        t0 = time.monotonic()
        await pilot.press("d")
        assert app.details and time.monotonic() - t0 < 2.0
        assert not gate.is_set()  # the worker really was still blocked
        gate.set()


async def test_input_end_shows_and_app_stays_open_until_q():
    app = EmotionApp(FakePipeline([utt(0), StatusEvent("file done", finished=True)], block_at_end=False), LABELS)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.finished and app.pipeline_done.is_set())
        await pilot.pause(0.1)
        assert app.is_running and "input ended" in app.query_one(LevelMeter).render().plain
        assert "input ended" in status_text(app)
        await pilot.press("q")
    assert not app.is_running


async def test_pipeline_crash_is_reported_and_app_stays_open():
    def crash(emit, stop, paused):
        raise RuntimeError("audio device vanished")

    app = EmotionApp(FakePipeline([utt(0), crash]), LABELS)
    async with app.run_test() as pilot:
        await until(pilot, lambda: "pipeline failed" in app.message)
        assert "audio device vanished" in app.message and app.is_running
        assert "pipeline stopped" in app.query_one(LevelMeter).render().plain
        assert len(rows(app)) == 1


async def test_timeline_rows_are_bounded_but_record_keeps_everything(tmp_path):
    events = [utt(i, LABELS[i % 4]) for i in range(12)]
    app = EmotionApp(FakePipeline(events), LABELS, save_dir=tmp_path, max_rows=4)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.utterance_count == 12)
        await pilot.pause(0.05)
        assert [r.event.index for r in rows(app)] == [8, 9, 10, 11]
        assert app.query_one(Timeline).virtual_size.height == 4  # the dropped rows' lines are gone too
        assert len(app.query_one(EmotionStrip).codes) == 12
        await pilot.press("s")
        await until(pilot, lambda: app.last_saved is not None)
    assert [e.index for e in read_jsonl(app.last_saved)] == list(range(12))


def visible(app) -> str:
    timeline = app.query_one(Timeline)
    return "\n".join(timeline.render_line(y).text for y in range(timeline.scrollable_content_region.height))


async def test_timeline_follows_the_newest_row_unless_scrolled_up():
    app = EmotionApp(FakePipeline([utt(i) for i in range(60)] + [1.5, utt(60), utt(61)]), LABELS)
    async with app.run_test(size=(120, 40)) as pilot:
        timeline = app.query_one(Timeline)
        await until(pilot, lambda: app.utterance_count == 60)
        # Following the newest row happens on a refresh after the row lands: wait for it (a
        # slow CI machine needs more than one frame) rather than sleeping a fixed time.
        await until(pilot, lambda: "sentence number 59" in visible(app))
        assert "sentence number 0 " not in visible(app)
        assert timeline.virtual_size.height == 60 and timeline.scroll_y == timeline.max_scroll_y > 0
        await until(pilot, lambda: timeline.show_vertical_scrollbar)  # what a user scrolls with
        timeline.scroll_home(animate=False, immediate=True)
        assert timeline.scroll_y == 0
        await until(pilot, lambda: app.utterance_count == 62)
        await pilot.pause(0.05)
        assert timeline.scroll_y == 0 and "sentence number 0 " in visible(app)  # the user's position is kept


async def test_timeline_wraps_long_transcripts_and_reflows_on_resize_and_details():
    long_text = " ".join(f"word{i}" for i in range(60))
    app = EmotionApp(FakePipeline([utt(0, text=long_text), utt(1)]), LABELS)
    async with app.run_test(size=(80, 30)) as pilot:
        timeline = app.query_one(Timeline)
        await until(pilot, lambda: app.utterance_count == 2)
        await pilot.pause(0.05)
        narrow = timeline.virtual_size.height
        assert narrow > 3 and "word59" in visible(app)  # wrapped, nothing cut off
        await pilot.resize_terminal(200, 30)
        await pilot.pause(0.1)
        assert 2 <= timeline.virtual_size.height < narrow
        wide = timeline.virtual_size.height
        await pilot.press("d")
        await pilot.pause(0.05)
        assert timeline.virtual_size.height == wide + 2 and "joy ████" in visible(app)


async def test_jsonl_path_appends_each_utterance_as_it_arrives(tmp_path):
    log_path = tmp_path / "live.jsonl"
    old = utt(99, text="from an earlier session")
    from streamer.export import JsonlWriter

    with JsonlWriter(log_path) as w:
        w.write(old)
    seen_on_disk = []

    def check_disk(emit, stop, paused):
        seen_on_disk.append(len(read_jsonl(log_path)))

    app = EmotionApp(
        FakePipeline([utt(0), check_disk, utt(1), LevelEvent(1.0, -30, False)]), LABELS, jsonl_path=log_path
    )
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.utterance_count == 2)
    assert seen_on_disk == [2]  # written by the time emit() returned, before the UI showed it
    assert read_jsonl(log_path) == [old, utt(0), utt(1)]


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        EmotionApp(FakePipeline([]), [])
    with pytest.raises(ValueError, match="labels"):
        EmotionApp(FakePipeline([]), ["joy", "joy"])
    with pytest.raises(ValueError, match="max_rows"):
        EmotionApp(FakePipeline([]), LABELS, max_rows=0)


def test_compress_codes_keeps_or_aggregates():
    assert compress_codes([0, 1, -1], 5) == [0, 1, -1]
    assert compress_codes([0, 0, 0, 1, 2, 2, 2, 2], 2) == [0, 2]
    many = [3] * 50_000 + [-1] * 50_000
    out = compress_codes(many, 10)
    assert out == [3] * 5 + [-1] * 5


def test_hbar_rolling_median_and_palette():
    assert hbar(0.0, 4) == "░░░░" and hbar(1.0, 4) == "████" and hbar(0.5, 4) == "██░░"
    assert hbar(1 / 16, 2) == "▏░" and hbar(float("nan"), 3) == "░░░" and hbar(2.0, 2) == "██"
    m = RollingMedian(limit=3)
    assert m.median != m.median  # NaN while empty
    for v in (10.0, 1.0, 5.0, float("nan")):
        m.add(v)
    assert m.median == 5.0
    m.add(7.0)  # 10 leaves the window: 1, 5, 7
    assert m.median == 5.0
    m.add(0.0)  # 1, 5, 7 -> 5, 7, 0
    assert m.median == 5.0
    m.add(100.0)  # 7, 0, 100
    assert m.median == 7.0
    m2 = RollingMedian(limit=10)
    for v in (4.0, 1.0, 3.0, 2.0):
        m2.add(v)
    assert m2.median == 2.5
    p = Palette(["neutral", "joy"])
    assert p.code("joy") == 1 and p.code("other") == 2 and p.labels == ["neutral", "joy", "other"]
    assert p.colour("joy") == "yellow" and p.colour(None) == "grey50" and p.colour("other") != p.colour("joy")


async def test_no_save_leaves_no_file(tmp_path):
    app = EmotionApp(FakePipeline([utt(0)]), LABELS, save_dir=tmp_path / "rec", allow_save=False)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.utterance_count == 1)
        await pilot.press("s")
        await pilot.pause(0.5)  # a save would have written by now (its worker takes milliseconds)
    assert app.last_saved is None and not (tmp_path / "rec").exists()


async def test_an_uncertain_utterance_reads_uncertain_with_its_guess_and_counts_as_its_own_share():
    from dataclasses import replace

    from streamer.widgets import UtteranceRow

    unsure = replace(utt(1, "joy", 0.3), label="uncertain", guess="joy")
    verdict = UtteranceRow(unsure, Palette(LABELS))._cells[2]
    assert verdict.plain == "uncertain (joy?) 0.30" and "grey42" in str(verdict.spans[0].style)
    app = EmotionApp(FakePipeline([utt(0), unsure]), LABELS)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.utterance_count == 2)
    assert app.speaker_counts.shares() == {"A": {"joy": 1.0}, "B": {"uncertain": 1.0}}
