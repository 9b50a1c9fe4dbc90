"""Online speaker assignment: causality, long-session stability, bad inputs, wiring into events and the model."""

from __future__ import annotations

import argparse
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models import FeaturePipeline
from streamer.audio import FileSource
from streamer.cli import main
from streamer.events import UtteranceEvent
from streamer.pipeline import LivePipeline, UtteranceProcessor
from streamer.speakers import (
    SpeakerConfig,
    SpeakerCounts,
    SpeakerStage,
    SpeakerTracker,
    resemblyzer_weights,
    speaker_config,
)
from tests.conftest import err_line
from tests.test_pipeline import LABELS, FakeFeatures, FakeTranscriber
from training.speakers import Conversation, Turn, score

RECORDINGS = Path(__file__).parent.parent / "recordings"
needs_weights = pytest.mark.skipif(resemblyzer_weights() is None, reason="resemblyzer weights not installed")


def voices(k: int, seed: int = 0) -> np.ndarray:
    """``k`` synthetic speaker directions, far apart (like GE2E vectors of different people)."""
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(256, k)))[0].T.astype(np.float32)


def utterance_of(centre: np.ndarray, rng: np.random.Generator, noise: float = 0.025) -> np.ndarray:
    """One utterance: its speaker's direction plus per-utterance variation (emotion, words, room)."""
    x = centre + rng.normal(scale=noise, size=centre.shape)
    return (x / np.linalg.norm(x)).astype(np.float32)


#: The tracker's mechanics on synthetic vectors: no projection (it is fitted on real GE2E vectors, and
#: random directions are not), full session centring, the threshold those vectors were made for.
RAW = SpeakerConfig(projection=None, center_strength=1.0, new_below=-0.1)


def session(n: int, k: int = 3, seed: int = 1) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    centres = voices(k)
    who = [int(rng.integers(k)) for _ in range(n)]
    return [utterance_of(centres[w], rng) for w in who], who


def test_causal_adding_an_utterance_never_changes_earlier_labels():
    embeddings, _ = session(60)
    full = [a.speaker for a in map(SpeakerTracker(RAW).push, embeddings)]
    for t in (1, 2, 5, 17, 59):
        prefix = [a.speaker for a in map(SpeakerTracker(RAW).push, embeddings[:t])]
        assert prefix == full[:t]


def test_labels_follow_first_appearance_and_match_the_truth():
    embeddings, who = session(40)
    labels = [SpeakerTracker(RAW).push(e).speaker for e in embeddings[:1]]  # one-utterance session: A
    assert labels == ["A"]
    tracker = SpeakerTracker(RAW)
    labels = [tracker.push(e).speaker for e in embeddings]
    first_seen = list(dict.fromkeys(who))
    assert labels == ["ABC"[first_seen.index(w)] for w in who]


def test_two_hour_looped_session_has_no_churn_and_bounded_memory():
    """2 h of 4 s turns (1800 utterances), the same conversation looped: labels never move, state stays small."""
    embeddings, who = session(45)
    tracker = SpeakerTracker(RAW)
    first = [tracker.push(e).speaker for e in embeddings]
    tracemalloc.start()
    for _ in range(3):  # warm-up loops
        [tracker.push(e) for e in embeddings]
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(36):
        assert [tracker.push(e).speaker for e in embeddings] == first
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert tracker.speakers == ["A", "B", "C"] and tracker._centroids.shape == (3, 256)
    assert grown < 64 * 1024, f"tracker state grew by {grown} bytes over two hours"


def test_bound_and_known_count():
    embeddings, who = session(50, k=5)
    raw = {"center_weight": 0.0, "new_below": 0.7, "projection": None}  # the bound itself, without the session centring
    for cfg, n in (
        (SpeakerConfig(max_speakers=3, **raw), 3),
        (SpeakerConfig(speakers=2, **raw), 2),
        (SpeakerConfig(**raw), 5),
    ):
        tracker = SpeakerTracker(cfg)
        labels = {tracker.push(e).speaker for e in embeddings}
        assert len(labels) == n and tracker.speakers == list("ABCDE"[:n])


def test_a_known_count_opens_a_similar_voice_until_everyone_is_heard():
    """Two of three people sound alike (cosine 0.8, above ``new_below``): knowing there are three,
    the looser ``fill_below`` opens the third; not knowing it, or once all three are heard, it does not."""
    a, b, other = voices(3)
    c = 0.8 * b + 0.6 * other  # unit: b and other are orthonormal
    rng = np.random.default_rng(3)
    who = [0, 1, 2, 1, 2, 0, 2, 1] * 3
    embeddings = [utterance_of((a, b, c)[w], rng, noise=0.01) for w in who]
    raw = {"center_weight": 0.0, "new_below": 0.7, "projection": None}

    def labels(cfg: SpeakerConfig) -> list[str]:
        tracker = SpeakerTracker(cfg)
        return [tracker.push(e).speaker for e in embeddings]

    truth = ["ABC"[w] for w in who]
    assert labels(SpeakerConfig(speakers=3, fill_below=0.9, **raw)) == truth
    assert labels(SpeakerConfig(speakers=3, fill_below=0.7, **raw)) == ["ABB"[w] for w in who]
    assert labels(SpeakerConfig(fill_below=0.9, **raw)) == ["ABB"[w] for w in who]  # count unknown: no fill
    # all three heard: the fourth look-alike joins the closest, it does not open a fourth speaker
    d = 0.8 * c + 0.6 * a
    tracker = SpeakerTracker(SpeakerConfig(speakers=3, fill_below=0.99, **raw))
    for e in embeddings:
        tracker.push(e)
    assert tracker.push(d / np.linalg.norm(d)).speaker in ("A", "C") and tracker.speakers == list("ABC")


def test_overlapping_speech_is_said_not_guessed():
    rng = np.random.default_rng(3)
    a, b = voices(2)
    tracker = SpeakerTracker(RAW)
    assert tracker.push(utterance_of(a, rng)).speaker == "A"
    assert tracker.push(utterance_of(b, rng)).speaker == "B"
    partials = np.stack([utterance_of(a, rng), utterance_of(b, rng)])
    mixed = partials.mean(axis=0)
    got = tracker.push(mixed, partials)
    assert got.speaker is None and got.overlap == ("A", "B")
    assert tracker._counts == [1, 1]  # nothing learnt from a mixture
    one = np.stack([utterance_of(a, rng), utterance_of(a, rng)])
    assert tracker.push(one.mean(axis=0), one).speaker == "A"


def test_bad_config_values_are_one_sentence():
    for kwargs in ({"speakers": 0}, {"max_speakers": 9}, {"new_below": 1.5}, {"memory": 0}, {"center_strength": 2}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            SpeakerConfig(**kwargs)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--speakers", "0"], "--speakers 0: give the number of people talking, 1 to 8"),
        (["--max-speakers", "12"], "--max-speakers 12"),
        (["--speakers", "3", "--max-speakers", "2"], "--speakers 3 is more than --max-speakers 2"),
        (["--speakers", "2", "--split-channels"], "--speakers is for mono audio"),
    ],
)
def test_cli_speaker_flags_fail_in_one_sentence(flags, says, capsys):
    assert main(["--replay", str(RECORDINGS / "demo-kitchen.flac"), "--no-ui", *flags]) == 2
    line = err_line(capsys)
    assert says in line and "Traceback" not in line


def test_cli_speaker_flags_are_checked_for_batches_too(tmp_path, capsys):
    args = ["--replay", str(RECORDINGS / "demo-kitchen.flac"), "--out-dir", str(tmp_path), "--speakers", "0"]
    assert main(args) == 2
    assert "--speakers 0: give the number of people talking" in err_line(capsys)


def test_cli_speaker_flags_make_a_config():
    ns = argparse.Namespace(speakers=2, max_speakers=None, split_channels=False)
    assert speaker_config(ns) == SpeakerConfig(speakers=2)
    assert speaker_config(argparse.Namespace(speakers=None, max_speakers=None)) is None


class LengthVoices:
    """A fake voice encoder: the utterance's length decides its voice (short = one person, long = another)."""

    dim = 256
    split_s = 2.6

    def __init__(self) -> None:
        self.centres = voices(2)

    def embed(self, audio):
        e = self.centres[int(len(audio) > self.split_s * 16000)]
        return e, e[None, :]


class RecordingFeatures(FakeFeatures):
    """FakeFeatures that also hands the per-speaker normalisation key through, as the real extractor does."""

    def utterance(self, audio, text, speaker=None, audio_part=None, encoded=None, norm_key=None):
        feats, ms = super().utterance(audio, text, speaker, audio_part, encoded, norm_key)
        return {**feats, "norm_key": norm_key}, ms


def test_tracked_speakers_reach_events_and_the_model_inputs():
    torch.manual_seed(0)
    model = models.build("text", input_dim=4, hidden=8)
    ck = models.Checkpoint(model.eval(), LABELS, FeaturePipeline())
    proc = UtteranceProcessor(ck, RecordingFeatures(), FakeTranscriber(), SpeakerStage(LengthVoices(), RAW))
    seen = []
    push = proc.classifier.push
    proc.classifier.push = lambda feats, **kw: (
        seen.append((feats["speaker"], feats["norm_key"]))
        or push({k: v for k, v in feats.items() if k != "norm_key"}, **kw)
    )
    out = []
    LivePipeline(FileSource(RECORDINGS / "demo-kitchen.flac", speed="max"), proc).run(
        out.append, threading.Event(), threading.Event()
    )
    events = [e for e in out if isinstance(e, UtteranceEvent)]
    long = [e.end_s - e.start_s > 2.6 for e in events]
    first = long[0]
    assert [e.speaker for e in events] == ["A" if x == first else "B" for x in long]
    assert seen == [("AB".index(e.speaker), e.speaker) for e in events]
    assert all("speaker_embed" in e.latency_ms and "speaker_assign" in e.latency_ms for e in events)
    proc.reset()
    assert proc.speakers.tracker.speakers == []


def test_split_channels_keep_channel_as_speaker():
    torch.manual_seed(0)
    ck = models.Checkpoint(models.build("text", input_dim=4, hidden=8).eval(), LABELS, FeaturePipeline())
    proc = UtteranceProcessor(ck, FakeFeatures(), FakeTranscriber(), SpeakerStage(LengthVoices(), RAW))
    out = []
    LivePipeline(FileSource(RECORDINGS / "demo-kitchen-stereo.flac", speed="max", split_channels=True), proc).run(
        out.append, threading.Event(), threading.Event()
    )
    events = [e for e in out if isinstance(e, UtteranceEvent)]
    assert events and all(e.speaker in ("A", "B") and "speaker_embed" not in e.latency_ms for e in events)
    assert proc.speakers.tracker.speakers == []  # the tracker never saw a channel's utterance


def test_per_speaker_summary():
    counts = SpeakerCounts()
    for spk, lab in [("A", "joy"), ("A", "joy"), ("A", "anger"), ("B", "neutral"), ("B", None), (None, "fear")]:
        counts.add(spk, lab)
    assert counts.shares()["A"] == {"joy": 2 / 3, "anger": 1 / 3}
    assert counts.lines() == [
        "all (no speaker): 1 utterances, fear 100%",
        "speaker A: 3 utterances, joy 67%, anger 33%",
        "speaker B: 1 utterances, neutral 100%",
    ]


def test_attribution_and_der_scoring():
    turns = [Turn(0.0, 2.0, "x"), Turn(3.0, 5.0, "y"), Turn(6.0, 8.0, "x"), Turn(9.0, 11.0, "y")]
    conv = Conversation("c", turns, [(t.start_s, t.end_s) for t in turns], [])
    perfect = score(conv, ["B", "A", "B", "A"])  # names do not matter, the mapping finds them
    assert perfect["correct"] == 4 and perfect["confusion"] == 0 and perfect["missed"] == 0
    lumped = score(conv, ["A", "A", "A", "A"])
    assert lumped["correct"] == 2 and lumped["confusion"] == pytest.approx(400, abs=2)  # half the speech
    unsure = score(conv, ["A", None, "A", "B"])
    assert unsure["abstained"] == 1 and unsure["correct"] == 3 and unsure["missed"] == pytest.approx(200, abs=2)


@needs_weights
def test_real_encoder_tells_two_people_apart():
    """Two RAVDESS actors, the same calm sentence: one person's two takes are closer than the other person's."""
    from streamer.audio import load_audio
    from streamer.speakers import VoiceEmbedder
    from training.speakers import _trim

    root = Path(__file__).parent.parent.parent / "shared" / "data" / "ravdess"
    paths = [root / "Actor_01" / "03-01-02-01-01-01-01.flac", root / "Actor_01" / "03-01-02-01-01-02-01.flac"]
    paths += [root / "Actor_04" / "03-01-02-01-01-01-04.flac"]
    if not all(p.is_file() for p in paths):
        pytest.skip("shared RAVDESS clips not here")
    emb = VoiceEmbedder()
    first, second, other = (emb.embed(_trim(load_audio(p)))[0] for p in paths)
    assert first.shape == (256,) and abs(float(np.linalg.norm(first)) - 1) < 1e-4
    assert float(first @ second) > float(first @ other) + 0.1
    with pytest.raises(ValueError, match="finite"):
        emb.embed(np.full(16000, np.nan, np.float32))
    silent, _ = emb.embed(np.zeros(16000, np.float32))  # silence: a defined vector, no crash
    assert np.isfinite(silent).all()


async def test_ui_colours_each_speaker_and_shows_their_emotion_shares():
    from rich.text import Text
    from textual.widgets import Static

    from streamer.ui import EmotionApp
    from streamer.widgets import Palette, UtteranceRow
    from tests.test_ui import FakePipeline, until, utt

    palette = Palette(LABELS)
    a, b = UtteranceRow(utt(0), palette), UtteranceRow(utt(1), palette)
    assert a._cells[1].style != b._cells[1].style and "cyan" in str(a._cells[1].style)
    both = UtteranceEvent(2, 4.0, 5.0, None, "two at once", "joy", 0.5, overlap=("A", "B"))
    assert UtteranceRow(both, palette)._cells[1].plain == "A+B?"
    app = EmotionApp(FakePipeline([utt(0, "joy"), utt(1, "anger"), utt(2, "joy")]), LABELS)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: app.utterance_count == 3)
        await pilot.pause(0.05)
        status = app.query_one("#status", Static).render()
        text = status.plain if isinstance(status, Text) else str(status)
        assert "speaker A: 2 utterances, joy 100%" in text and "speaker B: 1 utterances, anger 100%" in text


def test_a_failed_embedding_costs_the_speaker_not_the_emotion():
    class Broken:
        def embed(self, audio):
            raise RuntimeError("encoder exploded")

    torch.manual_seed(0)
    ck = models.Checkpoint(models.build("text", input_dim=4, hidden=8).eval(), LABELS, FeaturePipeline())
    proc = UtteranceProcessor(ck, FakeFeatures(), FakeTranscriber(), SpeakerStage(Broken()))
    out = []
    LivePipeline(FileSource(RECORDINGS / "demo-kitchen.flac", speed="max"), proc).run(
        out.append, threading.Event(), threading.Event()
    )
    events = [e for e in out if isinstance(e, UtteranceEvent)]
    assert events and all(e.speaker is None and e.label in LABELS and e.error is None for e in events)


def test_the_voice_is_embedded_in_the_audio_thread_while_whisper_transcribes():
    """With an audio pool (the default live pipeline) the speaker embedding runs there, beside the
    ASR pass instead of after it; without one it runs inline. Same voice, same speakers either way."""
    from concurrent.futures import ThreadPoolExecutor

    threads = []

    class ThreadVoices(LengthVoices):
        def embed(self, audio):
            threads.append(threading.current_thread().name)
            return super().embed(audio)

    torch.manual_seed(0)
    ck = models.Checkpoint(models.build("text", input_dim=4, hidden=8).eval(), LABELS, FeaturePipeline())
    proc = UtteranceProcessor(ck, FakeFeatures(), FakeTranscriber(), SpeakerStage(ThreadVoices(), RAW))
    audio = np.zeros(3 * 16000, np.float32)
    audio[::50] = 0.1
    from streamer.segmenter import Utterance

    utt = Utterance(0, len(audio), audio, -1)
    with ThreadPoolExecutor(1, thread_name_prefix="audio-side") as pool:
        ahead = proc.prepare(utt, pool)
    inline = proc.prepare(utt)
    assert threads[0].startswith("audio-side") and threads[1] == threading.current_thread().name
    np.testing.assert_array_equal(ahead.voice.embedding, inline.voice.embedding)
    assert ahead.latency["speaker_embed"] >= 0 and inline.latency["speaker_embed"] >= 0


@pytest.mark.parametrize("config", [RAW, SpeakerConfig(speakers=3), SpeakerConfig(max_speakers=2)])
def test_peek_answers_what_push_will_and_learns_nothing(config):
    """The speculative guess asks the tracker who is speaking before the decision assigns it."""
    embeddings, _ = session(40, k=3, seed=5)
    rng = np.random.default_rng(9)
    a, b = voices(3)[:2]
    partials = np.stack([utterance_of(a, rng), utterance_of(b, rng)])
    queue = [(e, None) for e in embeddings[:20]] + [
        (partials.mean(axis=0), partials),
        (np.zeros(256, np.float32), None),
    ]
    queue += [(e, e[None, :]) for e in embeddings[20:]]
    tracker = SpeakerTracker(config)
    for e, p in queue:
        state = (
            tracker._centroids.copy(),
            list(tracker._counts),
            None if tracker._mean is None else tracker._mean.copy(),
        )
        peeked = tracker.peek(e, p)
        np.testing.assert_array_equal(tracker._centroids, state[0])
        assert tracker._counts == state[1] and (tracker._mean is None) == (state[2] is None)
        if state[2] is not None:
            np.testing.assert_array_equal(tracker._mean, state[2])
        assert tracker.push(e, p) == peeked


class ContextFeatures(FakeFeatures):
    """FakeFeatures whose text vector depends on the line *and* the dialogue context it was read with."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str | None]] = []

    def utterance(self, audio, text, speaker=None, audio_part=None, encoded=None, norm_key=None, text_context=None):
        feats, ms = super().utterance(audio, text, speaker, audio_part, encoded, norm_key)
        return {**feats, "text": self.text_vector(text, text_context)}, ms

    def text_vector(self, text, context, timing=None):
        self.reads.append((text, context))
        return context_vector(text, context)


def context_vector(text: str, context: str | None) -> torch.Tensor:
    c = context or ""
    return torch.tensor([len(text), len(c), sum(map(ord, c)) % 97, c.count("A:") - c.count("B:")], dtype=torch.float32)


@pytest.mark.parametrize("speculate", [False, True])
def test_tracked_speakers_tag_the_dialogue_context_and_each_line_is_read_once(speculate):
    """With the text read after past turns, the guess tags them by the speaker the tracker expects
    (``SpeakerTracker.peek``), so the decision does not read the line a second time."""
    from models.pipeline import TextPipeline
    from streamer.pipeline import PipelineConfig
    from streamer.text_context import Turn as TextTurn
    from streamer.text_context import context_input

    torch.manual_seed(0)
    pipeline = FeaturePipeline(text=TextPipeline(pooling="utterance_last", context_turns=2))
    ck = models.Checkpoint(models.build("text", input_dim=4, hidden=8).eval(), LABELS, pipeline)
    voices_by_length = LengthVoices()
    voices_by_length.split_s = 2.82  # demo-kitchen's lines: 2.61-2.79 s one person, 2.85-3.6 s the other
    proc = UtteranceProcessor(ck, ContextFeatures(), FakeTranscriber(), SpeakerStage(voices_by_length, RAW))
    seen = []
    push = proc.classifier.push
    proc.classifier.push = lambda feats, **kw: seen.append(feats["text"].clone()) or push(feats, **kw)
    out = []
    config = PipelineConfig(speculate=speculate)
    LivePipeline(FileSource(RECORDINGS / "demo-kitchen.flac", speed="max"), proc, config=config).run(
        out.append, threading.Event(), threading.Event()
    )
    events = [e for e in out if isinstance(e, UtteranceEvent)]
    assert len(events) > 4 and {e.speaker for e in events} == {"A", "B"}
    past = [TextTurn(e.speaker, e.text) for e in events]
    for i, e in enumerate(events):
        assert torch.equal(seen[i], context_vector(e.text, context_input(past[:i], e.speaker, 2)))
    # each final line read once (a stale guess reads other audio, so another fake transcript)
    assert [sum(text == e.text for text, _ in proc.features.reads) for e in events] == [1] * len(events)
    if not speculate:
        assert len(proc.features.reads) == len(events)


def test_dialogue_set_reads_whole_dialogues_and_a_known_count_is_each_conversations_own(tmp_path, monkeypatch):
    """The ``dialogues`` set: MELD dialogues as the words-only data reads them (every line, one voice per
    speaker), one conversation each; a dialogue with one voice is no test of attribution and is skipped."""
    import soundfile as sf

    import training.data.mixed as mixed
    import training.speakers as speakers
    from training.data.records import DatasetSplit, Dialogue, Utterance

    def line(name: str, seconds: float) -> Path:
        path = tmp_path / f"{name}.wav"
        sf.write(path, np.concatenate([np.zeros(800), 0.1 * np.ones(int(seconds * 16000)), np.zeros(800)]), 16000)
        return path

    def dialogue(did: str, voices: str) -> Dialogue:
        return Dialogue(did, tuple(Utterance(did, i, f"spk-{v}", line(f"{did}-{i}", 0.5 + 0.1 * i), voice=v)
                                   for i, v in enumerate(voices)))

    split = DatasetSplit("tts-words", "validation", (dialogue("d1", "aa"), dialogue("d2", "abcab")), ())
    monkeypatch.setattr(mixed, "load_tts_words", lambda *a, **k: split)
    (name, audio, turns), = speakers.render(speakers.SETS["dialogues"], "validation", tmp_path, count=5)
    assert name == "validation-d2" and [t.speaker for t in turns] == list("abcab")
    # the leading and trailing silence of each rendering is trimmed: a turn is its sound
    assert [round(t.end_s - t.start_s, 2) for t in turns] == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert all(b.start_s - a.end_s >= 1.0 for a, b in zip(turns, turns[1:]))
    assert len(audio) >= turns[-1].end_s * 16000

    told = []
    monkeypatch.setattr(speakers, "assign", lambda conv, config, second_pass=None: told.append(config.speakers)
                        or [None] * len(conv.cuts))
    convs = [Conversation("c", [Turn(0, 1, s) for s in people], [(0, 1)], []) for people in ("ab", "abc")]
    speakers.evaluate({"dialogues": convs}, SpeakerConfig(), known_count=True)
    speakers.evaluate({"dialogues": convs}, SpeakerConfig())
    assert told == [2, 3, None, None]
