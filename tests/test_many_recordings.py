"""Many recordings at once (issue 13): one model load, one output set per file, a summary, failures isolated."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.batch import BatchOutputs, collect_inputs, output_names, run_batch
from streamer.cli import main
from streamer.events import UtteranceEvent
from streamer.export import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["anger", "joy", "neutral"]


def ev(i: int, speaker: str | None, label: str | None, conf: float = 0.5) -> UtteranceEvent:
    return UtteranceEvent(i, 2.0 * i, 2.0 * i + 1, speaker, f"words {i}", label, conf, {}, {}, None if label else "x")


class FakeTracker:
    """What run_batch uses of EmotionTracker; a file's content says what happens to it."""

    labels = LABELS
    description = {"model": "fake"}

    def track(self, path: Path):
        kind = path.read_bytes()[:4]
        if kind == b"BUG!":
            raise KeyError("an unexpected bug")  # not a ValueError: the batch still goes on
        if kind == b"BAD!":
            raise ValueError(f"cannot decode the audio of {path}; the file looks corrupt")

        def events():
            yield ev(0, "A", "joy", 0.9)
            yield ev(1, "B", "anger", 0.6)
            if kind == b"HALF":
                raise ValueError("decoding failed midway")
            yield ev(2, "A", "neutral", 0.3)
            yield ev(3, "A", None)

        return events()


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Three 'recordings' (the duration probe is skipped: FakeTracker's files are not audio)."""
    import streamer.audio

    class Probe:
        def __init__(self, path, speed):
            self.duration_s = 8.0

    monkeypatch.setattr(streamer.audio, "FileSource", Probe)
    folder = tmp_path / "in"
    folder.mkdir()
    for name, content in [("a.wav", b"GOOD"), ("b.mp3", b"BAD!"), ("c.flac", b"HALF"), ("d.ogg", b"BUG!")]:
        (folder / name).write_bytes(content)
    (folder / "notes.txt").write_text("not a recording")
    return folder


def test_a_failing_file_is_one_line_and_the_others_go_on(files, tmp_path):
    lines: list[tuple[str, bool]] = []
    outputs = BatchOutputs(tmp_path / "out", export_format="csv")
    inputs = collect_inputs([files])
    assert [p.name for p in inputs] == ["a.wav", "b.mp3", "c.flac", "d.ogg"]  # notes.txt ignored
    outputs.check(output_names(inputs))
    results = run_batch(FakeTracker(), inputs, outputs, lambda line, err: lines.append((line, err)))
    assert [r.error is None for r in results] == [True, False, False, False]
    assert [err for _, err in lines] == [False, True, True, True] and all("\n" not in line for line, _ in lines)
    assert "d.ogg: 'an unexpected bug'" in lines[3][0]
    assert "b.mp3: cannot decode" in lines[1][0] and "the other files go on" in lines[1][0]
    assert "2 utterances before it kept" in lines[2][0]
    out = tmp_path / "out"
    assert len(read_jsonl(out / "a.jsonl")) == 4 and len(read_jsonl(out / "c.jsonl")) == 2  # kept
    assert not (out / "b.jsonl").exists() and (out / "a.html").exists() and (out / "c.csv").exists()
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    a = {r["speaker"]: r for r in rows if r["file"].endswith("a.wav")}
    assert a["A"]["utterances"] == "3" and a["A"]["failed_utterances"] == "1"
    assert float(a["A"]["share_joy"]) == 0.5 and float(a["A"]["share_neutral"]) == 0.5
    assert float(a["A"]["mean_confidence"]) == pytest.approx(0.6) and a["B"]["share_anger"] == "1.0000"
    (b,) = [r for r in rows if r["file"].endswith("b.mp3")]
    assert b["utterances"] == "0" and "corrupt" in b["error"]
    assert all("midway" in r["error"] for r in rows if r["file"].endswith("c.flac"))


def test_outputs_are_never_replaced_without_overwrite(files, tmp_path):
    inputs = collect_inputs([files])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.jsonl").write_text("an earlier run\n")
    with pytest.raises(ValueError, match="already holds a.jsonl; pass --overwrite"):
        BatchOutputs(tmp_path / "out").check(output_names(inputs))
    outputs = BatchOutputs(tmp_path / "out", overwrite=True)
    outputs.check(output_names(inputs))
    run_batch(FakeTracker(), inputs, outputs, lambda *a: None)
    assert len(read_jsonl(tmp_path / "out" / "a.jsonl")) == 4  # replaced, not appended to


def test_names_stay_distinct(tmp_path):
    paths = [tmp_path / "x" / "talk.wav", tmp_path / "y" / "talk.wav", tmp_path / "talk.mp3", tmp_path / "summary.wav"]
    names = output_names(paths)
    assert len(set(names.values())) == 4 and names[paths[0]] == "talk" and "summary" not in names.values()


def test_a_stop_ends_the_batch_with_the_summary_of_the_files_done(files, tmp_path):
    stop = threading.Event()
    outputs = BatchOutputs(tmp_path / "out")
    outputs.check(output_names(collect_inputs([files])))

    def say(line, err):
        stop.set()  # the signal arrives during the first file

    results = run_batch(FakeTracker(), collect_inputs([files]), outputs, say, stop)
    assert len(results) == 1 and (tmp_path / "out" / "summary.csv").read_text().count("a.wav") == 2


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--replay", "{rec}", "{rec2}"], "several --replay recordings need --out-dir"),
        (["--replay", "{rec}", "--out-dir", "{out}", "--jsonl", "{out}/e.jsonl"], "--jsonl names one file"),
        (["--replay", "{tmp}/none.wav", "--out-dir", "{out}"], "no such recording"),
        (["--replay", "{empty}", "--out-dir", "{out}"], "is a folder without audio or video files"),
        (["--out-dir", "{out}"], "--out-dir is for --replay recordings"),
    ],
)
def test_batch_options_are_one_sentence_before_any_model_loads(tmp_path, capsys, extra, words):
    (tmp_path / "empty").mkdir()
    values = {"rec": ROOT / "recordings" / "demo-kitchen.flac", "rec2": ROOT / "recordings" / "demo-office.flac"}
    values |= {"out": tmp_path / "out", "tmp": tmp_path, "empty": tmp_path / "empty"}
    argv = [a.format(**values) for a in extra] + ["--model", str(tmp_path / "no-model.pt")]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("ser-live: error:") and words in err[0], err


@pytest.mark.slow
def test_a_folder_of_demos_and_a_corrupt_file_with_one_model_load(tmp_path, monkeypatch, capsys):
    import streamer.cli

    loads = []
    real = streamer.cli._tracker
    monkeypatch.setattr(streamer.cli, "_tracker", lambda *a: loads.append(1) or real(*a))
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes((ROOT / "recordings" / "demo-story.flac").read_bytes()[:5000])
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    out = tmp_path / "out"
    argv = ["--replay", str(ROOT / "recordings"), str(corrupt), str(tmp_path / "silence.wav"), "--out-dir", str(out)]
    assert main([*argv, "--speed", "max"]) == 1  # one failed
    captured = capsys.readouterr()
    demos = sorted((ROOT / "recordings").glob("*.flac"))
    assert len(loads) == 1 and len(demos) == 6
    errors = [line for line in captured.err.splitlines() if line.startswith("ser-live: error:")]
    assert len(errors) == 1 and "corrupt.flac" in errors[0]
    assert len([line for line in captured.out.splitlines() if line.startswith("[")]) == len(demos) + 1
    for demo in demos:
        events = read_jsonl(out / f"{demo.stem}.jsonl")
        assert len(events) >= 5 and all(e.error is None for e in events), demo
        assert (out / f"{demo.stem}.html").stat().st_size > 5000
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {Path(r["file"]).name for r in rows} == {d.name for d in demos} | {"corrupt.flac", "silence.wav"}
    for r in rows:
        if r["utterances"] not in ("", "0"):
            assert sum(float(v) for k, v in r.items() if k.startswith("share_")) == pytest.approx(1.0, abs=1e-3)
