"""The replay's second pass over speakers: whole-session clustering, wired into the outputs only."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models import FeaturePipeline
from streamer.audio import FileSource
from streamer.cli import build_parser, main, run_headless
from streamer.events import StatusEvent, UtteranceEvent
from streamer.export import event_from_dict, event_to_json
from streamer.pipeline import LivePipeline, UtteranceProcessor
from streamer.recluster import recluster, relabel, second_pass
from streamer.speakers import SpeakerConfig, SpeakerStage, SpeakerTracker
from tests.conftest import err_line
from tests.test_pipeline import LABELS, FakeFeatures, FakeTranscriber
from tests.test_speakers import RAW, LengthVoices, session, utterance_of, voices

RECORDINGS = Path(__file__).parent.parent / "recordings"
SYNTH = SpeakerConfig(projection=None, center_strength=1.0)  # synthetic directions: no fitted back end


def test_whole_session_clusters_follow_the_truth_in_order_of_first_appearance():
    vecs, who = session(60, k=3, seed=4)
    labels = recluster(vecs, SYNTH, merge_above=0.3)
    first = list(dict.fromkeys(who))
    assert labels == ["ABC"[first.index(w)] for w in who]


def test_it_mends_what_the_online_tracker_got_wrong_early():
    """Two similar people (cosine 0.95): online, the first turns are judged before the session's
    mean voice is known and both are taken for one; with the whole session they stand apart."""
    rng = np.random.default_rng(0)
    a, b = voices(2)
    b = (0.95 * a + np.sqrt(1 - 0.95**2) * b).astype(np.float32)
    who = [0, 1, 0, 1] + [int(rng.integers(2)) for _ in range(40)]
    vecs = [utterance_of((a, b)[w], rng, noise=0.02) for w in who]
    config = SpeakerConfig(projection=None, center_strength=1.0, new_below=0.0)
    tracker = SpeakerTracker(config)
    online = [tracker.push(v).speaker for v in vecs]
    truth = ["AB"[w] for w in who]
    assert online[:4] == ["A"] * 4  # the live labels cannot be revised
    assert recluster(vecs, config, merge_above=0.0) == truth


def test_known_count_bound_and_missing_vectors():
    vecs, who = session(40, k=4, seed=2)
    assert len(set(recluster(vecs, SpeakerConfig(projection=None, speakers=2)))) == 2
    assert len(set(recluster(vecs, SpeakerConfig(projection=None, max_speakers=3), merge_above=0.9))) == 3
    with_gaps = [None, *vecs[:5], np.zeros(256, np.float32)]
    labels = recluster(with_gaps, SYNTH)
    assert labels[0] is None and labels[-1] is None and labels[1] == "A"
    assert recluster([], SYNTH) == [] and recluster([vecs[0]], SYNTH) == ["A"]
    with pytest.raises(ValueError, match="merge_above must be a cosine similarity"):
        recluster(vecs, SYNTH, merge_above=1.5)


def test_relabelled_events_keep_the_live_label_and_the_live_json_is_unchanged():
    vecs, who = session(6, k=2, seed=3)
    live = [UtteranceEvent(i, i, i + 0.5, "A", "hi", "joy", 0.9, {"joy": 0.9}, voice=v) for i, v in enumerate(vecs)]
    record = json.loads(event_to_json(live[0]))
    assert "voice" not in record and "speaker_live" not in record
    again = relabel(live, vecs, SYNTH)
    assert [e.speaker for e in again] == recluster(vecs, SYNTH) and all(e.speaker_live == "A" for e in again)
    back = event_from_dict(json.loads(event_to_json(again[-1])))
    assert back.speaker_live == "A" and back.speaker == again[-1].speaker


class AlternatingVoices(LengthVoices):
    """Two people, one after the other as the encoder is called."""

    calls = 0

    def embed(self, audio):
        self.calls += 1
        e = self.centres[self.calls % 2]
        return e, e[None, :]


def test_tracked_events_carry_their_voice_vector():
    torch.manual_seed(0)
    ck = models.Checkpoint(models.build("text", input_dim=4, hidden=8).eval(), LABELS, FeaturePipeline())
    proc = UtteranceProcessor(ck, FakeFeatures(), FakeTranscriber(), SpeakerStage(AlternatingVoices(), RAW))
    out = []
    LivePipeline(FileSource(RECORDINGS / "demo-kitchen.flac", speed="max"), proc).run(
        out.append, threading.Event(), threading.Event()
    )
    events = [e for e in out if isinstance(e, UtteranceEvent)]
    assert events and all(e.voice is not None and e.voice.shape == (256,) for e in events)
    relabelled, note = second_pass(events, RAW)
    assert [e.speaker for e in relabelled] == [e.speaker for e in events] and {e.speaker for e in events} == {"A", "B"}
    assert "2 found, 0 of" in note  # the live labels were right: nothing to mend


class Voiced:
    """A replay whose live labels are all A although two voices alternate."""

    def __init__(self) -> None:
        vecs, self.who = session(8, k=2, seed=5)
        self.events = [
            UtteranceEvent(i, 2.0 * i, 2.0 * i + 1.5, "A", f"line {i}", "joy", 0.9, {"joy": 0.9}, voice=v)
            for i, v in enumerate(vecs)
        ]

    def describe(self):
        return {"model": "fake"}

    def run(self, emit, stop, paused):
        for e in self.events:
            emit(e)
        emit(StatusEvent("input ended", finished=True))


def test_second_pass_rewrites_the_export_and_summary_not_the_jsonl(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("streamer.cli.speaker_config", lambda args: SYNTH)
    jsonl, out = tmp_path / "events.jsonl", tmp_path / "timeline.csv"
    argv = ["--replay", str(RECORDINGS / "demo-kitchen.flac"), "--no-ui", "--second-pass", "--jsonl", str(jsonl)]
    pipeline = Voiced()
    assert run_headless(pipeline, build_parser().parse_args(argv + ["--export", "csv", "--export-path", str(out)])) == 0
    assert {json.loads(line)["speaker"] for line in jsonl.read_text().splitlines()} == {"A"}
    rows = list(csv.DictReader(out.open()))
    first = list(dict.fromkeys(pipeline.who))
    assert [r["speaker"] for r in rows] == ["AB"[first.index(w)] for w in pipeline.who]
    err = capsys.readouterr().err
    assert "re-clustered over the whole replay (--second-pass): 2 found" in err and "speaker B:" in err


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--second-pass"], "--second-pass re-clusters a finished --replay"),
        (
            ["--replay", str(RECORDINGS / "demo-kitchen.flac"), "--second-pass", "--split-channels"],
            "--second-pass is for mono",
        ),
    ],
)
def test_second_pass_flag_mistakes_are_one_sentence(flags, says, capsys):
    assert main(["--no-ui", *flags]) == 2
    line = err_line(capsys)
    assert says in line and "Traceback" not in line


def test_second_pass_with_split_channels_is_refused_for_batches_too(tmp_path, capsys):
    args = ["--replay", str(RECORDINGS / "demo-kitchen.flac"), "--out-dir", str(tmp_path), "--second-pass"]
    assert main([*args, "--split-channels"]) == 2
    line = err_line(capsys)
    assert "--second-pass is for mono audio" in line and "Traceback" not in line
