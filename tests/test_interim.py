"""Interim words and piecewise transcripts: segmenter cuts, the piece cache, the pipeline's
interim events (never changing the final ones), the --interim JSONL and the UI's interim row."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.audio import FileSource, load_audio
from streamer.events import InterimEvent, StatusEvent, UtteranceEvent
from streamer.export import read_jsonl
from streamer.interim import INTERIM_POLICY, PieceTranscripts
from streamer.pipeline import LivePipeline, PipelineConfig
from streamer.segmenter import Segmenter, SegmenterConfig, Utterance
from tests.test_pipeline import FakeFeatures, processor

STORY = Path(__file__).parent.parent / "recordings" / "demo-story.flac"


#: Piecewise transcripts on (off by default until measured): cuts at 200 ms pauses.
CUTS = SegmenterConfig(cut_pause_ms=200)


@pytest.fixture(scope="module")
def story() -> np.ndarray:
    return load_audio(STORY)


def segment(audio: np.ndarray, config: SegmenterConfig, block: int = 1600):
    """Finished utterances, and every in-progress snapshot taken after each block."""
    seg = Segmenter(config)
    finals, snapshots = [], []
    for i in range(0, len(audio), block):
        finals += seg.push(audio[i : i + block])
        now = seg.in_progress()
        if now is not None:
            snapshots.append(now)
    return finals + seg.flush(), snapshots


def session_cuts(utt: Utterance) -> list[int]:
    return [utt.start_sample + c for c in utt.cuts]


def test_long_turns_get_cuts_at_pauses_and_every_piece_is_long_enough(story):
    config = CUTS
    finals, _ = segment(story, config)
    assert len(finals) == 6
    assert any(u.cuts for u in finals)  # the story's turns have sentence pauses
    for u in finals:
        for a, b in u.pieces():
            assert b - a >= config.min_piece_ms * 16  # 16 samples a millisecond


def test_in_progress_cuts_are_the_finished_utterances_cuts(story):
    finals, snapshots = segment(story, CUTS)
    for final in finals:
        during = [s for s in snapshots if s.start_sample == final.start_sample]
        assert during, "no in-progress snapshot of a long turn"
        for snap in during:
            n = min(len(snap.audio), len(final.audio))  # a snapshot may run into the end silence
            np.testing.assert_array_equal(snap.audio[:n], final.audio[:n])
            assert snap.decided_at_sample == -1
            # every cut but the last one seen so far is final (the last may be dropped if too
            # little speech follows it)
            assert set(session_cuts(snap)[:-1]) <= set(session_cuts(final))
        seen = {c for s in during for c in session_cuts(s)}
        assert set(session_cuts(final)) <= seen


def test_cuts_do_not_depend_on_block_sizes_and_can_be_turned_off(story):
    a, _ = segment(story, CUTS, block=480)
    b, _ = segment(story, CUTS, block=2731)
    assert [(u.start_sample, u.end_sample, u.cuts) for u in a] == [(u.start_sample, u.end_sample, u.cuts) for u in b]
    none, _ = segment(story, SegmenterConfig(cut_pause_ms=0))
    assert [(u.start_sample, u.end_sample) for u in none] == [(u.start_sample, u.end_sample) for u in a]
    assert not any(u.cuts for u in none)


def test_cut_settings_are_validated_and_bad_cuts_rejected():
    with pytest.raises(ValueError, match="cut_pause_ms"):
        SegmenterConfig(cut_pause_ms=500)
    with pytest.raises(ValueError, match="min_piece_ms"):
        SegmenterConfig(min_piece_ms=200)
    with pytest.raises(ValueError, match="cuts"):
        Utterance(0, 100, np.zeros(100, np.float32), 100, cuts=(50, 40))


class PieceFake:
    """Text names the audio (length, sum) and the encoder window it was decoded on, so a final
    transcript that used an interim window or the wrong samples reads differently."""

    def __init__(self):
        self.calls: list[int] = []

    def encode(self, audio, policy=None):
        return (len(audio), policy.min_window_s if policy is not None else 15.0)

    def transcribe(self, audio, encoded=None):
        self.calls.append(len(audio))
        window = encoded[1] if encoded is not None else 15.0
        return f"n{len(audio)} s{float(np.abs(audio).sum()):.1f} w{window:g}"


def test_pieces_are_decoded_once_and_interim_prepares_the_final():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000 * 9).astype(np.float32)
    final = Utterance(32000, 32000 + len(audio), audio, -1, channel=1, cuts=(16000 * 3, 16000 * 6))
    fake = PieceFake()
    pieces = PieceTranscripts(fake)
    so_far = Utterance(32000, 32000 + 16000 * 7, audio[: 16000 * 7].copy(), -1, channel=1, cuts=(16000 * 3, 16000 * 6))
    words = pieces.interim(so_far)
    assert words.endswith(f"w{INTERIM_POLICY.min_window_s:g}")  # the open piece on the cheap window
    assert fake.calls == [48000, 48000, 16000]
    text = pieces.text(final)
    assert fake.calls[3:] == [48000]  # only the last piece was left to decode
    assert pieces.reused == 2
    fresh = PieceTranscripts(PieceFake()).text(final)
    assert text == fresh  # the same transcript as without any interim decode
    assert "w10" not in text and text.count("w15") == 3
    whole = Utterance(0, len(audio), audio, -1)
    assert PieceTranscripts(fake).text(whole, fake.encode(audio)) == fake.transcribe(audio)


class Paced:
    """A recording's blocks with a short pause between them, so the worker has idle moments."""

    def __init__(self, path):
        self.inner = FileSource(path, speed="max")
        self.duration_s = 0.0

    def __iter__(self):
        for block in self.inner:
            time.sleep(0.002)
            yield block
        self.duration_s = self.inner.duration_s


def run_story(config: PipelineConfig, segmenter: SegmenterConfig = CUTS) -> list:
    proc = processor()
    proc.transcriber = PieceFake()
    proc.pieces = PieceTranscripts(proc.transcriber)
    proc.features = FakeFeatures()
    events: list = []
    LivePipeline(Paced(STORY), proc, segmenter, config=config).run(events.append, threading.Event(), threading.Event())
    return events


def finals(events) -> list[tuple]:
    return [(e.start_s, e.end_s, e.text, e.label, e.probs) for e in events if isinstance(e, UtteranceEvent)]


@pytest.mark.parametrize("segmenter", [CUTS, SegmenterConfig()], ids=["piecewise", "whole"])
def test_interim_events_never_change_the_final_events(segmenter):
    on = run_story(PipelineConfig(interim=True), segmenter)
    off = run_story(PipelineConfig(interim=False), segmenter)
    plain = run_story(PipelineConfig(speculate=False, overlap=False), segmenter)
    assert finals(on) == finals(off) == finals(plain)
    assert len(finals(on)) == 6
    interims = [e for e in on if isinstance(e, InterimEvent)]
    assert not any(isinstance(e, InterimEvent) for e in off + plain)
    assert len(interims) >= 6  # 8-10 s turns, one every second while the worker is idle
    starts = {f[0] for f in finals(on)}
    assert {e.start_s for e in interims} <= starts  # each names the start its final will have
    for e in interims:
        assert e.end_s - e.start_s >= 1.5 and e.text
    # an interim event comes before its utterance's final event, never after it
    order = [(type(e).__name__, e.start_s) for e in on if isinstance(e, InterimEvent | UtteranceEvent)]
    for i, (kind, start) in enumerate(order):
        if kind == "InterimEvent":
            assert ("UtteranceEvent", start) in order[i + 1 :]


def _wait(future) -> None:
    future.result(timeout=10)


def test_a_guess_outgrown_by_speech_shows_its_words_as_interim_and_resets_the_cadence():
    """A speculative guess is a whole decode of the utterance so far: when speech goes on past
    it, its words are shown (no second decode of the same audio), never after the final."""
    from streamer.work import Work
    from tests.test_pipeline import _utt

    proc = processor()
    work = Work(proc, speculate=True, guess_words_after=16000)
    try:
        work.speculate(0, _utt(0, 8000))  # 0.5 s: too short for interim words
        _wait(work.pending[0][1])
        work.speculate(0, None)
        assert work.interims() == []
        work.speculate(0, _utt(0, 32000))  # a pause after 2 s of speech
        _wait(work.pending[0][1])
        work.speculate(0, None)  # speech goes on
        (event,) = work.interims()
        assert isinstance(event, InterimEvent)
        assert (event.start_s, event.end_s, event.text) == (0.0, 2.0, "utterance of 2.00 seconds")
        assert work.interim_at[0] == 32000  # the next interim decode waits a full interval from here
        assert work.interims() == []  # shown once
        work.speculate(0, _utt(0, 48000))  # another pause, at 3 s: it ends there after all
        _wait(work.pending[0][1])
        final = work.finish(0, _utt(0, 48000, 56000))
        assert final.text == "utterance of 3.00 seconds"
        assert work.interims() == []  # the final event has the words: no interim after it
    finally:
        work.close()


def test_guesses_give_no_interim_words_unless_asked():
    from streamer.work import Work
    from tests.test_pipeline import _utt

    work = Work(processor(), speculate=True)
    try:
        work.speculate(0, _utt(0, 32000))
        _wait(work.pending[0][1])
        work.speculate(0, None)
        assert work.interims() == []
    finally:
        work.close()


def test_interim_needs_speculation_and_sane_cadence():
    with pytest.raises(ValueError, match="speculate"):
        PipelineConfig(interim=True, speculate=False)
    with pytest.raises(ValueError, match="interim_every_ms"):
        PipelineConfig(interim_every_ms=10)


# ---------------------------------------------------------------------------- JSONL and line output

INTERIM = InterimEvent(0.25, 2.0, "A", "so yesterday I", 0, {"asr": 80.0})
FINAL = UtteranceEvent(0, 0.25, 4.0, "A", "so yesterday I took the train", "neutral", 0.9, {"neutral": 0.9})


class Scripted:
    def describe(self):
        return {}

    def run(self, emit, stop, paused):
        for e in (INTERIM, FINAL, StatusEvent("input ended", finished=True)):
            emit(e)


@pytest.mark.parametrize("flag", [False, True])
def test_jsonl_gets_interim_events_only_with_the_flag(tmp_path, capsys, flag):
    from streamer.cli import build_parser, run_headless

    path = tmp_path / "events.jsonl"
    argv = ["--no-ui", "--jsonl", str(path)] + (["--interim"] if flag else [])
    assert run_headless(Scripted(), build_parser().parse_args(argv)) == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d.get("type") for d in lines] == (["interim", None] if flag else [None])
    assert [e.text for e in read_jsonl(path)] == [FINAL.text]  # readers skip interim records
    out = capsys.readouterr().out
    assert ("so yesterday I\n" in out) is flag


# ---------------------------------------------------------------------------- the UI


async def test_ui_shows_an_interim_row_then_the_final_replaces_it(tmp_path):
    from streamer.ui import EmotionApp
    from streamer.widgets import Timeline
    from tests.test_ui import LABELS, FakePipeline, rendered, until

    later = dataclasses.replace(INTERIM, end_s=3.0, text="so yesterday I took the")
    path = tmp_path / "ui.jsonl"
    pipeline = FakePipeline([INTERIM, 0.4, later, 0.4, FINAL])
    app = EmotionApp(pipeline, LABELS, jsonl_path=path)
    async with app.run_test() as pilot:
        timeline = app.query_one(Timeline)
        await until(pilot, lambda: timeline.interim)
        assert not timeline.rows
        assert "interim" in rendered(timeline.interim[0]) and "so yesterday I" in rendered(timeline.interim[0])
        await until(pilot, lambda: "took the" in rendered(timeline.interim.get(0, timeline.interim.get(0))))
        await until(pilot, lambda: timeline.rows)
        assert not timeline.interim  # replaced by the final row
        assert [r.event.text for r in timeline.rows] == [FINAL.text]
        assert len(app.interim_shown) == 2
    assert [json.loads(line).get("type") for line in path.read_text().splitlines()] == [None]


def test_a_guess_or_a_final_takes_the_worker_from_a_running_interim_decode():
    """An interim decode holds the one worker for an encoder pass and a decode; when speech pauses
    (a guess) or ends (the final) meanwhile, it gives up after its encoder pass, so the words that
    matter do not wait behind words about to be replaced."""
    from streamer.work import Work
    from tests.test_pipeline import _utt

    gate, inside = threading.Event(), threading.Event()

    class Gated(PieceFake):
        def encode(self, audio, policy=None):
            if policy is INTERIM_POLICY:
                inside.set()
                gate.wait(10)
            return super().encode(audio, policy)

    class Speaking:  # a segmenter 3 s into an utterance
        samples_seen = 48000

        def in_progress(self):
            return _utt(0, 48000)

    def interim_then(step) -> tuple[list[str], list[int], object]:
        """Start an interim decode, hold it in its encoder pass, do ``step(work)``, then let it go."""
        proc = processor()
        proc.transcriber = Gated()
        proc.pieces = PieceTranscripts(proc.transcriber)
        work = Work(proc, speculate=True)
        gate.clear()
        inside.clear()
        try:
            work.interim(0, Speaking(), after=16000, every=16000)
            assert inside.wait(10)
            threading.Timer(0.05, gate.set).start()  # lets a final (which waits for the worker) through
            result = step(work)
            for future in [*(f for f, _ in work.interim_jobs.values()), *(f for _, f, _ in work.pending.values())]:
                _wait(future)
            return [e.text for e in work.interims() if isinstance(e, InterimEvent)], proc.transcriber.calls, result
        finally:
            gate.set()
            work.close()

    shown, calls, _ = interim_then(lambda work: None)
    assert len(shown) == 1 and shown[0].startswith("n48000") and calls == [48000]  # left alone: it finishes
    shown, calls, _ = interim_then(lambda work: work.speculate(0, _utt(0, 52000)))
    assert shown == [] and calls == [52000]  # the guess's decode only
    shown, calls, final = interim_then(lambda work: work.finish(0, _utt(0, 56000, 64000)))
    assert shown == [] and calls == [56000] and final.text.startswith("n56000")
