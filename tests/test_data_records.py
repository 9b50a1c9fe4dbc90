"""Records, reports, text normalisation, audio probing and the dataset registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data import (
    DATASETS,
    MELD_LABELS,
    DataError,
    DatasetSplit,
    Dialogue,
    LoadReport,
    Utterance,
    dataset_names,
    dataset_splits,
    load_dataset,
    normalise_text,
    probe_audio,
)
from training.data.records import check_audio

CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld" / "clips" / "dia0_utt0.flac"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("You must\u2019ve had", "You must've had"),
        ("\u201cHi\u201d  there\u2026", '"Hi" there...'),
        ("uh\u2014Wait!", "uh-Wait!"),
        ("donâ€™t", "don't"),  # UTF-8 read as cp1252
        ("donâ€™t \u2019mixed\u2019", "don't 'mixed'"),  # mixed: the table repairs it
        ("don\x92t", "don't"),  # a cp1252 byte read as latin-1
        ("  a\tb \u00a0 c\n", "a b c"),
        ("caf\u00e9", "caf\u00e9"),
        ("Richard\u2019s Date", "Richard's Date"),
    ],
)
def test_normalise_text(raw, clean):
    assert normalise_text(raw) == clean


def test_utterance_needs_audio_or_text_and_a_valid_segment():
    with pytest.raises(ValueError, match="neither audio nor text"):
        Utterance("d", 0, "A")
    with pytest.raises(ValueError, match="ends"):
        Utterance("d", 0, "A", Path("x.wav"), 2.0, 1.0)
    assert Utterance("d", 3, "A", text="hi").key == "d#3"


def test_dialogue_turns_must_increase_and_speakers_are_ordered():
    a, b = Utterance("d", 0, "A", text="x"), Utterance("d", 2, "B", text="y")
    assert Dialogue("d", (a, b, Utterance("d", 5, "A", text="z"))).speakers == ("A", "B")
    with pytest.raises(ValueError, match="strictly increasing"):
        Dialogue("d", (b, a))
    with pytest.raises(ValueError, match="no utterances"):
        Dialogue("d", ())


def test_split_counts_labels_and_rejects_unknown_label():
    utts = (Utterance("d", 0, "A", text="x", label="joy"), Utterance("d", 1, "B", text="y", label=None))
    split = DatasetSplit("toy", "train", (Dialogue("d", utts),), MELD_LABELS)
    assert split.num_utterances == 2 and split.report.kept == 2
    assert split.label_counts()["joy"] == 1 and sum(split.label_counts().values()) == 1
    assert split.label_index("neutral") == 4
    with pytest.raises(ValueError, match="not one of"):
        split.label_index("calm")


def test_report_summary_dict_and_threshold():
    report = LoadReport("toy", "train", source="here", rows=10)
    report.add("missing_audio", "a", "no file at a.wav")
    report.add("missing_audio", "a", "second problem, same utterance")
    report.add("empty_text", "b", "no transcript", "kept")
    report.exclude_by_design("label xxx", 3)
    report.count("clip substituted", 2)
    assert report.affected() == 1
    text = report.summary()
    assert "missing_audio: 2 (2 excluded)" in text and "excluded by design: 3 label xxx" in text
    assert "clip substituted: 2" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["problem_counts"] == {"missing_audio": 2, "empty_text": 1} and len(data["problems"]) == 3
    report.check_fraction(1, 10, "utterances", "fix it", 0.1)  # exactly at the limit: fine
    with pytest.raises(DataError, match=r"toy train: 2 of 10 utterances \(20.0%.*missing_audio.*; fix it$"):
        report.check_fraction(2, 10, "utterances", "fix it", 0.1)
    with pytest.raises(ValueError, match="problem kind"):
        report.add("typo", "a", "b")


def test_probe_audio_on_real_fake_and_empty_files(tmp_path):
    garbage = tmp_path / "bad.flac"
    garbage.write_bytes(b"not audio at all" * 10)
    with pytest.raises(ValueError, match="cannot read audio header"):
        probe_audio(garbage)
    bad_mp4 = tmp_path / "bad.mp4"
    bad_mp4.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot open media file"):
        probe_audio(bad_mp4)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        probe_audio(empty)
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(8000, dtype=np.float32), 16000)
    assert probe_audio(good) == pytest.approx(0.5)

    report = LoadReport("toy", "train")
    assert check_audio(good, report, "g", probe=True, end_s=0.5)
    assert not check_audio(good, report, "late", probe=True, end_s=1.0)
    assert not check_audio(garbage, report, "x", probe=True)
    assert check_audio(garbage, report, "x-lazy", probe=False)  # lazy: only existence
    assert not check_audio(tmp_path / "nope.wav", report, "y", probe=False)
    assert [p.kind for p in report.problems] == ["bad_value", "unreadable_audio", "missing_audio"]


@pytest.mark.skipif(not CLIP.is_file(), reason="shared data not present")
def test_probe_audio_real_clip():
    assert probe_audio(CLIP) == pytest.approx(2.27, abs=0.01)


def test_registry_names_and_errors(tmp_path):
    assert dataset_names() == ("meld", "iemocap", "manifest", "paired", "voice-chains", "tts-words", "mixed")
    assert set(DATASETS) == set(dataset_names())
    assert dataset_splits("iemocap") == ("train", "validation", "test")
    assert dataset_splits("meld") == ("train", "dev", "test")
    with pytest.raises(DataError, match="unknown dataset 'mled': choose one of meld, iemocap, manifest"):
        load_dataset("mled", "train")
    with pytest.raises(DataError, match="no split 'validation': choose one of train, dev, test"):
        load_dataset("meld", "validation")
    with pytest.raises(DataError, match="no option.* audo: choose from audio, check_audio"):
        load_dataset("meld", "dev", root=tmp_path, audo=False)
    with pytest.raises(DataError, match="needs root= pointing at the IEMOCAP_full_release"):
        load_dataset("iemocap", "train")
    with pytest.raises(DataError, match="needs root="):
        dataset_splits("manifest")
    with pytest.raises(DataError, match="dev_sent_emo.csv does not exist"):
        load_dataset("meld", "dev", root=tmp_path, audio=False)
    with pytest.raises(ValueError, match="max_missing_fraction"):
        load_dataset("meld", "dev", root=tmp_path, max_missing_fraction=2.0)
