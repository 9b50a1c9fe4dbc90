"""Users' manifests (CSV and JSONL): the format of docs/manifest.md and every bad-input case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data import MELD_LABELS, DataError, dataset_splits, load_dataset
from training.data.manifest import ManifestOptions, load_manifest

COLUMNS = ["dialogue_id", "turn", "speaker", "audio", "start_s", "end_s", "text", "label", "split"]
# The example of docs/manifest.md.
ROWS = [
    ["call01", 0, "agent", "audio/call01.wav", "0.00", "2.35", "Hello, how can I help?", "neutral", "train"],
    ["call01", 1, "caller", "audio/call01.wav", "2.80", "6.10", "", "anger", "train"],
    ["call01", 2, "agent", "audio/call01.wav", "6.50", "9.00", "I\u2019m sorry to hear that.", "sadness", "train"],
    ["call02", 0, "caller", "audio/call02/000.wav", "", "", "", "joy", "test"],
    ["call02", 1, "agent", "audio/call02/001.wav", "", "", "That's great news!", "joy", "test"],
    ["call02", 2, "caller", "", "", "", "Thanks, bye.", "", "test"],
]


def write_wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


def write_csv(path: Path, rows, columns=COLUMNS) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture
def calls(tmp_path) -> Path:
    """my_calls/ of the docs example: one long recording and one file per utterance."""
    root = tmp_path / "my_calls"
    write_wav(root / "audio" / "call01.wav", 10.0)
    write_wav(root / "audio" / "call02" / "000.wav", 1.0)
    write_wav(root / "audio" / "call02" / "001.wav", 1.0)
    return write_csv(root / "manifest.csv", ROWS)


def test_csv_example(calls):
    assert dataset_splits("manifest", calls) == ("test", "train")
    train = load_dataset("manifest", "train", root=calls)
    assert train.labels == MELD_LABELS  # every label is one of MELD's: MELD's order
    (call,) = train.dialogues
    first, second, third = call.utterances
    assert first.audio_path == calls.parent / "audio" / "call01.wav"
    assert (first.start_s, first.end_s, first.speaker, first.label) == (0.0, 2.35, "agent", "neutral")
    assert second.text is None  # Whisper fills it
    assert third.text == "I'm sorry to hear that."
    assert not train.report.problems and train.report.rows == 3
    test = load_manifest("test", calls)
    unlabelled = test.dialogues[0].utterances[2]
    assert unlabelled.audio_path is None and unlabelled.text == "Thanks, bye." and unlabelled.label is None
    assert (unlabelled.start_s, test.dialogues[0].utterances[0].end_s) == (None, None)


def test_jsonl_folder_of_splits(tmp_path):
    write_wav(tmp_path / "a.wav", 3.0)
    rows = [
        {"dialogue_id": "d1", "turn": 1, "speaker": "B", "audio": str(tmp_path / "a.wav"), "label": "tense"},
        {"dialogue_id": "d1", "turn": 0, "speaker": "A", "audio": "a.wav", "start_s": 0, "end_s": 1.5, "text": None},
        {"dialogue_id": "d2", "turn": 0, "speaker": "A", "text": "hi", "label": "calm"},
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    write_csv(tmp_path / "test.csv", [["x", 0, "A", "", "", "", "hello", "calm", ""]])
    assert dataset_splits("manifest", tmp_path) == ("test", "train")
    train = load_dataset("manifest", "train", root=tmp_path)
    assert train.labels == ("calm", "tense")  # inferred from every split, sorted
    assert [d.id for d in train.dialogues] == ["d1", "d2"]
    assert [u.turn for u in train.dialogues[0].utterances] == [0, 1]  # sorted by turn
    assert train.dialogues[0].utterances[0].audio_path == tmp_path / "a.wav"
    assert load_dataset("manifest", "test", root=tmp_path).labels == ("calm", "tense")
    with pytest.raises(DataError, match="has no split 'validation': choose one of test, train"):
        load_dataset("manifest", "validation", root=tmp_path)


def test_file_without_split_column_is_split_all(tmp_path):
    path = write_csv(
        tmp_path / "m.csv", [["d", 0, "A", "hi", "joy"]], ["dialogue_id", "turn", "speaker", "text", "label"]
    )
    assert dataset_splits("manifest", path) == ("all",)
    assert load_manifest("all", path).num_utterances == 1
    with pytest.raises(DataError, match="no split 'train': choose one of all"):
        load_manifest("train", path)


def test_given_labels_make_others_unknown(calls):
    data = load_manifest("train", calls, ManifestOptions(labels=("neutral", "anger"), max_missing_fraction=0.5))
    assert data.labels == ("neutral", "anger")
    (problem,) = data.report.problems
    assert (problem.kind, problem.where) == ("unknown_label", "manifest.csv:4")
    assert "'sadness' is not one of neutral, anger" in problem.detail
    with pytest.raises(DataError, match=r"manifest train: 1 of 3 rows .*unknown_label.*manifest.csv:4"):
        load_manifest("train", calls, ManifestOptions(labels=("neutral", "anger")))


BAD_ROWS = [
    (["call01", "x", "agent", "", "", "", "hi", "", "train"], "bad_value", "must be numbers"),
    (["call01", -1, "agent", "", "", "", "hi", "", "train"], "bad_value", "turn must be an integer >= 0"),
    (["call01", 1.5, "agent", "", "", "", "hi", "", "train"], "bad_value", "not an integer"),
    (["call01", 7, "", "", "", "", "hi", "", "train"], "bad_value", "must not be empty"),
    (["call01", 7, "A", "audio/call01.wav", "3", "2", "", "", "train"], "bad_value", "not 0 <= start_s < end_s"),
    (["call01", 7, "A", "audio/call01.wav", "nan", "", "", "", "train"], "bad_value", "not a finite number"),
    (["call01", 7, "A", "audio/call01.wav", "9", "12", "", "", "train"], "bad_value", "lasts 10.00 s"),
    (["call01", 0, "agent", "", "", "", "hi again", "", "train"], "duplicate", "turn 0 appears twice"),
    (["call01", 7, "A", "audio/nope.wav", "", "", "", "", "train"], "missing_audio", "nope.wav"),
    (["call01", 7, "A", "audio/broken.wav", "", "", "", "", "train"], "unreadable_audio", "cannot read"),
    (["call01", 7, "A", "", "", "", "", "", "train"], "empty_text", "neither audio nor text"),
    (["call01", 7, "A", "", "", "", "hi", "calm", "train"], "unknown_label", "'calm'"),
]


@pytest.mark.parametrize(("row", "kind", "detail"), BAD_ROWS)
def test_each_bad_row_is_reported_and_counted(calls, row, kind, detail):
    (calls.parent / "audio" / "broken.wav").write_bytes(b"RIFF....WAVE broken")
    write_csv(calls, [*ROWS, row])
    options = ManifestOptions(labels=MELD_LABELS, max_missing_fraction=0.5)
    data = load_manifest("train", calls, options)
    assert data.num_utterances == 3
    (problem,) = data.report.problems
    assert problem.kind == kind and problem.where == "manifest.csv:8" and detail in problem.detail
    with pytest.raises(DataError, match=f"1 of 4 rows .*{kind}"):
        load_manifest("train", calls, ManifestOptions(labels=MELD_LABELS))


def test_keep_text_only_and_lazy_audio_check(calls):
    write_csv(calls, [*ROWS, ["call01", 7, "A", "audio/nope.wav", "", "", "still here", "joy", "train"]])
    data = load_manifest("train", calls, ManifestOptions(keep_text_only=True, max_missing_fraction=0.5))
    assert data.num_utterances == 4 and data.dialogues[0].utterances[-1].audio_path is None
    assert data.report.problems[0].action == "text-only"
    (calls.parent / "audio" / "call02" / "000.wav").write_bytes(b"garbage")
    assert load_manifest("test", calls, ManifestOptions(check_audio=False)).num_utterances == 3


def test_bad_json_lines(tmp_path):
    lines = ['{"dialogue_id": "d", "turn": 0, "speaker": "A", "text": "ok"}', "{not json", "[1, 2]"]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines))
    data = load_manifest("all", path, ManifestOptions(max_missing_fraction=1.0))
    assert data.num_utterances == 1
    assert [(p.kind, p.where) for p in data.report.problems] == [("bad_value", "m.jsonl:2"), ("bad_value", "m.jsonl:3")]
    assert data.labels == ()  # no labels at all: unlabelled data


def test_missing_columns_and_paths(tmp_path):
    path = write_csv(tmp_path / "m.csv", [["d", "A", "hi"]], ["dialogue_id", "speaker", "text"])
    with pytest.raises(DataError, match=r"lacks column\(s\) turn; see docs/manifest.md"):
        load_manifest("all", path)
    path = write_csv(tmp_path / "m.csv", [["d", 0, "A", "joy"]], ["dialogue_id", "turn", "speaker", "label"])
    with pytest.raises(DataError, match=r"lacks column\(s\) audio or text"):
        load_manifest("all", path)
    with pytest.raises(DataError, match="does not exist"):
        load_manifest("all", tmp_path / "nope.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="must be a .csv or .jsonl file"):
        load_manifest("all", tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no <split>.csv"):
        load_manifest("train", empty)
    with pytest.raises(ValueError, match="distinct"):
        ManifestOptions(labels=("a", "a"))
    assert ManifestOptions(labels="calm,tense").labels == ("calm", "tense")
