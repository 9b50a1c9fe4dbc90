"""The live pipeline on the demo recordings with fake ASR/features (fast) and a tiny model."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models import FeaturePipeline
from streamer.audio import FileSource
from streamer.events import LevelEvent, StatusEvent, UtteranceEvent
from streamer.pipeline import LivePipeline, PipelineConfig, UtteranceProcessor

RECORDINGS = Path(__file__).parent.parent / "recordings"
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


class FakeTranscriber:
    """Fails on utterances longer than ``fail_over_s`` (a property of the audio, so it does
    not depend on how often speculation calls it)."""

    def __init__(self, fail_over_s: float = 1e9):
        self.calls = 0
        self.fail_over_s = fail_over_s

    def transcribe(self, audio: np.ndarray) -> str:
        self.calls += 1
        if len(audio) / 16000 > self.fail_over_s:
            raise RuntimeError("decoder exploded")
        return f"utterance of {len(audio) / 16000:.2f} seconds"


class FakeFeatures:
    """Energy statistics as the 'text' vector: cheap, deterministic, depends on the audio.
    Like the real extractor, the audio-only part can be computed ahead (in another thread)."""

    def __init__(self):
        self.audio_threads: set[str] = set()

    def audio_part(self, audio):
        self.audio_threads.add(threading.current_thread().name)
        x = np.array([np.log(np.mean(audio**2) + 1e-9), len(audio) / 16000, audio.std(), np.abs(audio).max()])
        return {"text": torch.tensor(x, dtype=torch.float32)}, {"opensmile": 0.1}

    def utterance(self, audio, text, speaker=None, audio_part=None, encoded=None, norm_key=None):
        feats, ms = audio_part if audio_part is not None else self.audio_part(audio)
        return {**feats, "speaker": speaker or 0}, {**ms, "text": 0.1}


def processor(fail_over_s=1e9):
    torch.manual_seed(0)
    model = models.build("text", input_dim=4, hidden=8)
    ck = models.Checkpoint(model.eval(), LABELS, FeaturePipeline())
    return UtteranceProcessor(ck, FakeFeatures(), FakeTranscriber(fail_over_s))


def run(pipeline) -> list:
    events = []
    pipeline.run(events.append, threading.Event(), threading.Event())
    return events


def truth(name):
    return [json.loads(line) for line in (RECORDINGS / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["demo-kitchen", "demo-office"])
def test_demo_segments_match_the_script(name):
    events = run(LivePipeline(FileSource(RECORDINGS / f"{name}.flac", speed="max"), processor()))
    utts = [e for e in events if isinstance(e, UtteranceEvent)]
    expected = truth(name)
    assert len(utts) == len(expected)
    for got, want in zip(utts, expected):
        assert abs(got.start_s - want["start_s"]) < 0.35
        assert abs(got.end_s - want["end_s"]) < 0.35
        assert got.label in LABELS and abs(sum(got.probs.values()) - 1) < 1e-3
        assert {"asr", "text", "model", "total"} <= got.latency_ms.keys()
    assert any(isinstance(e, LevelEvent) and e.speech for e in events)
    assert isinstance(events[-1], StatusEvent) and events[-1].finished


def test_same_events_for_any_block_size():
    def labels(block_ms):
        src = FileSource(RECORDINGS / "demo-office.flac", block_ms=block_ms, speed="max")
        return [
            (e.start_s, e.end_s, e.label, e.probs)
            for e in run(LivePipeline(src, processor()))
            if isinstance(e, UtteranceEvent)
        ]

    assert labels(20) == labels(100) == labels(370)


def test_split_channels_gives_speakers():
    src = FileSource(RECORDINGS / "demo-kitchen-stereo.flac", speed="max", split_channels=True)
    utts = [e for e in run(LivePipeline(src, processor())) if isinstance(e, UtteranceEvent)]
    assert [e.speaker for e in sorted(utts, key=lambda e: e.start_s)] == [t["speaker"] for t in truth("demo-kitchen")]


def test_a_failing_utterance_does_not_end_the_session():
    # utterance 1 of demo-office is the only one longer than 3.8 s
    events = run(LivePipeline(FileSource(RECORDINGS / "demo-office.flac", speed="max"), processor(3.8)))
    utts = [e for e in events if isinstance(e, UtteranceEvent)]
    assert utts[1].error == "decoder exploded" and utts[1].label is None
    assert all(e.error is None and e.label for e in utts[2:])
    assert len(utts) == len(truth("demo-office"))


def test_source_failure_is_reported_and_recording_kept(tmp_path):
    from streamer.audio import Recorder, load_audio

    class Dies:
        channels, dropped_blocks, description = 1, 3, "fake mic"

        def __iter__(self):
            for _ in range(5):
                yield np.full(1600, 0.1, np.float32)
            raise OSError("device unplugged")

    rec = Recorder(tmp_path / "session.flac")
    events = run(LivePipeline(Dies(), processor(), recorder=rec))
    last = events[-1]
    assert isinstance(last, StatusEvent) and last.error and "device unplugged" in last.message
    assert last.dropped_blocks == 3
    assert len(load_audio(tmp_path / "session.flac")) == 5 * 1600


def test_pause_drops_audio_and_stop_ends():
    src = FileSource(RECORDINGS / "demo-office.flac", speed="max")
    paused = threading.Event()
    paused.set()
    events = []
    LivePipeline(src, processor()).run(events.append, threading.Event(), paused)
    assert not any(isinstance(e, UtteranceEvent) for e in events)
    stop = threading.Event()
    stop.set()
    events = []
    LivePipeline(FileSource(RECORDINGS / "demo-office.flac", speed="max"), processor()).run(
        events.append, stop, threading.Event()
    )
    assert not any(isinstance(e, UtteranceEvent) for e in events)


def test_dropped_audio_is_reported_while_it_happens():
    class Lossy:
        channels, description = 1, "lossy mic"

        def __init__(self):
            self.dropped_blocks = 0

        def __iter__(self):
            for i in range(20):
                self.dropped_blocks = i // 5  # drops grow during the session
                yield np.zeros(1600, np.float32)

    events = run(LivePipeline(Lossy(), processor()))
    counts = [e.dropped_blocks for e in events if isinstance(e, StatusEvent) and not e.finished and e.dropped_blocks]
    assert counts == [1, 2, 3]
    assert events[-1].dropped_blocks == 3


@pytest.mark.parametrize("name", ["demo-kitchen", "demo-office"])
def test_speculation_and_overlap_change_nothing_but_latency(name):
    def events(speculate, block_ms, overlap=True):
        src = FileSource(RECORDINGS / f"{name}.flac", block_ms=block_ms, speed="max")
        pipe = LivePipeline(src, processor(), config=PipelineConfig(speculate=speculate, overlap=overlap))
        return [(e.start_s, e.end_s, e.text, e.label, e.probs) for e in run(pipe) if isinstance(e, UtteranceEvent)]

    plain = events(False, 100, overlap=False)
    assert events(True, 100) == plain == events(True, 30) == events(False, 100) == events(True, 100, overlap=False)


@pytest.mark.parametrize("speculate", [True, False])
def test_overlap_runs_the_audio_features_in_their_own_thread(speculate):
    def audio_threads(overlap):
        proc = processor()
        config = PipelineConfig(speculate=speculate, overlap=overlap)
        run(LivePipeline(FileSource(RECORDINGS / "demo-office.flac", speed="max"), proc, config=config))
        return proc.features.audio_threads

    assert {t.rsplit("_", 1)[0] for t in audio_threads(True)} == {"ser-live-audio"}
    assert not any(t.startswith("ser-live-audio") for t in audio_threads(False))


def test_speculation_prepares_the_final_utterance_before_the_decision():
    proc = processor()
    pipe = LivePipeline(FileSource(RECORDINGS / "demo-office.flac", speed="max"), proc)
    utts = [e for e in run(pipe) if isinstance(e, UtteranceEvent)]
    # every final utterance was transcribed ahead (speculatively) and reused: at most a few
    # extra calls for pauses inside utterances, never one per utterance on top
    assert len(utts) <= proc.transcriber.calls < 2 * len(utts)
    # and each says how long its guess had before the decision
    heads = [e.latency_ms["head_start"] for e in utts if "head_start" in e.latency_ms]
    assert len(heads) >= len(utts) - 2 and min(heads) >= 0


def test_pause_keeps_the_session_clock():
    """Utterances after a pause keep their true times (the paused audio is skipped, not forgotten)."""
    paused = threading.Event()

    class PausingSource:
        channels, dropped_blocks, description = 1, 0, "pausing"

        def __iter__(self):
            for i, block in enumerate(FileSource(RECORDINGS / "demo-office.flac", speed="max", block_ms=100)):
                if i == 100:  # 10.0 s .. 12.0 s unheard
                    paused.set()
                elif i == 120:
                    paused.clear()
                yield block

    events = []
    LivePipeline(PausingSource(), processor()).run(events.append, threading.Event(), paused)
    utts = [e for e in events if isinstance(e, UtteranceEvent)]
    expected = [t for t in truth("demo-office") if t["end_s"] < 10.0 or t["start_s"] > 12.0]
    assert len(utts) == len(expected)
    for got, want in zip(utts, expected):
        assert abs(got.start_s - want["start_s"]) < 0.35 and abs(got.end_s - want["end_s"]) < 0.35


def test_speech_heard_before_a_source_failure_gets_its_event():
    from streamer.audio import load_audio

    speech = load_audio(RECORDINGS / "demo-office.flac")[: int(2.0 * 16000)]  # mid first utterance

    class DiesMidSentence:
        channels, dropped_blocks, description = 1, 0, "fake mic"

        def __iter__(self):
            for i in range(0, len(speech), 1600):
                yield speech[i : i + 1600]
            raise OSError("device unplugged")

    events = run(LivePipeline(DiesMidSentence(), processor()))
    kinds = [type(e).__name__ for e in events if not isinstance(e, LevelEvent)]
    assert kinds[-2:] == ["UtteranceEvent", "StatusEvent"] and events[-1].error


def _utt(start: int, end: int, decided: int = -1):
    from streamer.segmenter import Utterance

    audio = (0.1 * np.random.default_rng(start).standard_normal(end - start)).astype(np.float32)
    return Utterance(start, end, audio, decided)


def test_a_stale_guess_stops_after_its_asr_pass():
    from streamer.work import STALE

    proc = processor()
    stale = threading.Event()
    stale.set()
    p = proc.prepare(_utt(0, 16000), None, stale)
    assert p.error == STALE and p.features is None and proc.transcriber.calls == 1
    assert proc.prepare(_utt(0, 16000), None, threading.Event()).features is not None


def test_a_stale_guess_with_the_shared_encoder_skips_its_decode():
    """Speech goes on while the shared encoder pass runs: the decode (most of a long turn's
    ASR) is not started, so the worker is free sooner for the utterance that will end."""
    from streamer.work import STALE

    stale = threading.Event()

    class SharedEncoder(FakeTranscriber):
        def encode(self, audio):
            stale.set()
            return "encoder states"

        def transcribe(self, audio, encoded=None):
            assert encoded == "encoder states"
            return super().transcribe(audio)

    class SharedFeatures(FakeFeatures):
        shares_encoder = True

    class Voices:  # the speaker stage: counts the voice vectors it is asked for
        calls = 0

        def embed(self, audio):
            Voices.calls += 1
            return "voice"

        def peek(self, voice):
            return None

    ck = processor().checkpoint
    proc = UtteranceProcessor(ck, SharedFeatures(), SharedEncoder(), Voices())
    with ThreadPoolExecutor(1) as audio_pool:
        p = proc.prepare(_utt(0, 16000), audio_pool, stale)
        assert p.error == STALE and p.features is None and proc.transcriber.calls == 0 and "asr" in p.latency
        assert Voices.calls == 0  # nor the voice vector
        fresh = proc.prepare(_utt(0, 16000), audio_pool, threading.Event())
    assert fresh.features is not None and fresh.text == "utterance of 1.00 seconds" and proc.transcriber.calls == 1
    assert fresh.voice == "voice" and Voices.calls == 1


@pytest.mark.parametrize("final_end", [24000, 16000])
def test_speech_going_on_flags_the_guess_and_the_final_event_is_still_whole(final_end):
    """The guess (0-1 s) is in its ASR pass when speech goes on: it is flagged and dropped
    after ASR; the final utterance (longer, or after all the same samples) is prepared whole."""
    from streamer.work import STALE, Work

    proc = processor()
    gate = threading.Event()
    transcribe = proc.transcriber.transcribe
    proc.transcriber.transcribe = lambda audio: (gate.wait(5), transcribe(audio))[1]
    work = Work(proc, speculate=True)
    try:
        work.speculate(0, _utt(0, 16000))  # the worker is held inside the guess's ASR pass
        _, guess, stale = work.pending[0]
        work.speculate(0, None)  # a voiced frame: no guess any more
        assert stale.is_set()
        gate.set()
        assert guess.result().error == STALE
        event = work.finish(0, _utt(0, final_end, final_end))
        assert event.text == f"utterance of {final_end / 16000:.2f} seconds" and event.label in LABELS
    finally:
        gate.set()
        work.close()


def test_below_the_uncertain_threshold_the_label_says_so_and_keeps_the_guess():
    """``uncertain_below``: no emotion claimed below it, the answer kept as the guess, and nothing else
    changes (confidence, probabilities, the dialogue state the next utterances see)."""
    src = lambda: FileSource(RECORDINGS / "demo-kitchen.flac", speed="max")  # noqa: E731
    plain = [e for e in run(LivePipeline(src(), processor())) if isinstance(e, UtteranceEvent)]
    below = float(np.median([e.confidence for e in plain]))
    proc = processor()
    proc.uncertain_below = below
    marked = [e for e in run(LivePipeline(src(), proc)) if isinstance(e, UtteranceEvent)]
    assert len(marked) == len(plain)
    unsure = [(p, m) for p, m in zip(plain, marked) if p.confidence < below]
    assert 0 < len(unsure) < len(plain)
    for p, m in zip(plain, marked):
        assert (m.confidence, m.probs) == (p.confidence, p.probs)
        if p.confidence < below:
            assert (m.label, m.guess) == ("uncertain", p.label)
            assert m.to_dict()["guess"] == p.label
        else:
            assert (m.label, m.guess) == (p.label, None) and "guess" not in m.to_dict()
    with pytest.raises(ValueError, match="uncertain_below must be a confidence from 0 to below 1"):
        UtteranceProcessor(proc.checkpoint, FakeFeatures(), FakeTranscriber(), uncertain_below=1.0)
