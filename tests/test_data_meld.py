"""MELD: the real shared transcripts (text-only) and a small official layout built in tmp_path."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from training.data import DataError, load_dataset
from training.data.meld import MeldOptions, load_meld

MELD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld"
needs_shared = pytest.mark.skipif(not (MELD / "train_sent_emo.csv").is_file(), reason="shared data not present")

COLUMNS = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]
# (dialogue, utterance, speaker, emotion, text); out of order on purpose.
ROWS = [
    (0, 0, "Chandler", "neutral", "also I was the point person on my company\u2019s transition."),
    (0, 1, "The Interviewer", "neutral", "You must\u2019ve had  your hands full."),
    (0, 2, "Chandler", "joy", "   "),
    (100, 5, "Rachel", "surprise", "\u201cWhat?\u201d"),
    (100, 1, "Ross", "anger", "donâ€™t do that"),
    (101, 0, "Joey", "sadness", "Hey\u2026"),
]


def write_csv(path: Path, rows=ROWS, columns=COLUMNS) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, (dia, utt, speaker, emotion, text) in enumerate(rows):
            values = {
                "Sr No.": i + 1,
                "Utterance": text,
                "Speaker": speaker,
                "Emotion": emotion,
                "Sentiment": "neutral",
                "Dialogue_ID": dia,
                "Utterance_ID": utt,
                "Season": 1,
                "Episode": 1,
                "StartTime": "00:00:01,000",
                "EndTime": "00:00:02,000",
            }
            writer.writerow([values[c] for c in columns])


def write_mp4(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """A real AAC-in-MP4 clip, like the official release's."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture
def release(tmp_path) -> Path:
    """The official layout with the four real clips under train_splits/ (one as .mp4)."""
    if not (MELD / "clips").is_dir():
        pytest.skip("shared MELD clips not present")
    write_csv(tmp_path / "train_sent_emo.csv")
    clips = tmp_path / "train_splits"
    clips.mkdir()
    real = {p.stem: p for p in (MELD / "clips").glob("*.flac")}
    shutil.copy(real["dia0_utt0"], clips / "dia0_utt0.flac")
    samples, rate = sf.read(real["dia100_utt1"], dtype="float32")
    write_mp4(clips / "dia0_utt1.mp4", samples, rate)
    shutil.copy(real["dia100_utt5"], clips / "dia0_utt2.flac")
    shutil.copy(real["dia100_utt1"], clips / "dia100_utt1.flac")
    (clips / "dia100_utt1.mp4").write_bytes(b"garbage video")  # the .flac is preferred, never opened
    shutil.copy(real["dia100_utt5"], clips / "dia100_utt5.flac")
    shutil.copy(real["dia101_utt0"], clips / "dia101_utt0.flac")
    return tmp_path


@needs_shared
@pytest.mark.parametrize(("split", "utterances", "dialogues"), [("train", 9989, 1038), ("dev", 1109, 114)])
def test_real_transcripts_text_only(split, utterances, dialogues):
    data = load_dataset("meld", split, root=MELD, audio=False)
    assert (data.num_utterances, len(data)) == (utterances, dialogues)
    assert data.report.rows == utterances and not data.report.problems
    assert data.labels == ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
    assert sum(data.label_counts().values()) == utterances
    texts = [u.text for u in data.utterances()]
    assert all(t and "\u2019" not in t and "\u201c" not in t and "  " not in t and t == t.strip() for t in texts)
    assert all(u.audio_path is None for u in data.utterances())
    for dialogue in data.dialogues:
        assert [u.turn for u in dialogue.utterances] == sorted(u.turn for u in dialogue.utterances)


@needs_shared
def test_real_transcript_content():
    data = load_meld("train", MELD, MeldOptions(audio=False))
    first = data.dialogues[0].utterances[1]
    assert (first.dialogue_id, first.turn, first.speaker, first.label) == ("dia0", 1, "The Interviewer", "neutral")
    assert first.text == "You must've had your hands full."
    assert first.source == "meld/train/dia0_utt1"
    assert "Richard's Date" in {u.speaker for u in data.utterances()}


def test_release_layout(release):
    data = load_meld("train", release)
    assert data.report.rows == 6 and data.num_utterances == 6
    assert [d.id for d in data.dialogues] == ["dia0", "dia100", "dia101"]
    dia0, dia100, _ = data.dialogues
    assert [u.audio_path.name for u in dia0.utterances] == ["dia0_utt0.flac", "dia0_utt1.mp4", "dia0_utt2.flac"]
    assert [u.turn for u in dia100.utterances] == [1, 5]  # the CSV's ids, gaps kept, sorted
    assert dia100.utterances[0].audio_path.suffix == ".flac"
    assert dia0.utterances[0].text == "also I was the point person on my company's transition."
    assert dia0.utterances[1].text == "You must've had your hands full."
    assert dia100.utterances[0].text == "don't do that"
    assert dia100.utterances[1].text == '"What?"'
    # Blank text with audio: kept for Whisper to transcribe, and reported.
    assert dia0.utterances[2].text is None
    assert [(p.kind, p.where, p.action) for p in data.report.problems] == [
        ("empty_text", "meld/train/dia0_utt2", "kept")
    ]
    assert dia0.speakers == ("Chandler", "The Interviewer")


def test_text_only_needs_no_clips_and_excludes_empty_text(tmp_path):
    write_csv(tmp_path / "dev_sent_emo.csv")
    data = load_meld("dev", tmp_path, MeldOptions(audio=False, max_missing_fraction=0.2))
    assert data.num_utterances == 5
    assert data.report.counts() == {"empty_text": 1}
    assert data.report.problems[0].action == "excluded"


def test_missing_clip_is_reported_or_fatal(release):
    (release / "train_splits" / "dia101_utt0.flac").unlink()
    data = load_meld("train", release, MeldOptions(max_missing_fraction=0.5))
    assert data.num_utterances == 5 and "dia101" not in [d.id for d in data.dialogues]
    missing = [p for p in data.report.problems if p.kind == "missing_audio"]
    assert [p.where for p in missing] == ["meld/train/dia101_utt0"] and "dia101_utt0.mp4" in missing[0].detail
    assert "missing_audio: 1 (1 excluded)" in data.report.summary()
    with pytest.raises(DataError, match=r"1 of 6 utterances .*missing_audio.*look in .*train_splits.*audio=False"):
        load_meld("train", release)
    kept = load_meld("train", release, MeldOptions(keep_text_only=True, max_missing_fraction=0.5))
    text_only = [u for u in kept.utterances() if u.audio_path is None]
    assert [u.source for u in text_only] == ["meld/train/dia101_utt0"] and text_only[0].text == "Hey..."
    assert kept.report.problems[-1].action == "text-only"


def test_no_clip_folder_fails_with_a_hint(release):
    shutil.rmtree(release / "train_splits")
    with pytest.raises(DataError, match="6 of 6 utterances"):
        load_meld("train", release)


def test_unreadable_clip_reported_at_load_or_later(release):
    (release / "train_splits" / "dia101_utt0.flac").write_bytes(b"\x00not flac" * 20)
    data = load_meld("train", release, MeldOptions(max_missing_fraction=0.5))
    assert data.report.counts()["unreadable_audio"] == 1 and data.num_utterances == 5
    lazy = load_meld("train", release, MeldOptions(check_audio=False))
    assert lazy.num_utterances == 6 and "unreadable_audio" not in lazy.report.counts()
    broken = next(u for u in lazy.utterances() if u.dialogue_id == "dia101")
    lazy.report_unreadable(broken, "decoder failed")
    assert (lazy.report.problems[-1].where, lazy.report.problems[-1].action) == ("meld/train/dia101_utt0", "text-only")
    assert "unreadable_audio: 1" in lazy.report.summary()


def test_unknown_label_and_duplicate_rows(release):
    rows = [*ROWS, (101, 0, "Joey", "sadness", "again"), (0, 3, "Chandler", "boredom", "meh")]
    write_csv(release / "train_sent_emo.csv", rows)
    shutil.copy(release / "train_splits" / "dia0_utt0.flac", release / "train_splits" / "dia0_utt3.flac")
    data = load_meld("train", release, MeldOptions(max_missing_fraction=0.5))
    assert data.num_utterances == 6
    counts = data.report.counts()
    assert counts["unknown_label"] == 1 and counts["duplicate"] == 1
    unknown = next(p for p in data.report.problems if p.kind == "unknown_label")
    assert unknown.where == "meld/train/dia0_utt3" and "'boredom'" in unknown.detail
    with pytest.raises(DataError, match="2 of 8 utterances"):
        load_meld("train", release)


def test_missing_columns(tmp_path):
    write_csv(tmp_path / "test_sent_emo.csv", columns=[c for c in COLUMNS if c != "Emotion"])
    with pytest.raises(DataError, match=r"lacks the MELD column\(s\) Emotion; it needs"):
        load_meld("test", tmp_path, MeldOptions(audio=False))
    write_csv(tmp_path / "test_sent_emo.csv", columns=[c for c in COLUMNS if c not in ("Season", "Episode")])
    data = load_meld("test", tmp_path, MeldOptions(audio=False, max_missing_fraction=0.2))
    assert data.report.counts() == {"missing_column": 2, "empty_text": 1}
    assert data.num_utterances == 5  # optional columns only: still loads


def test_test_split_reads_its_own_folder(release):
    shutil.copy(release / "train_sent_emo.csv", release / "test_sent_emo.csv")
    shutil.copytree(release / "train_splits", release / "output_repeated_splits_test")
    data = load_dataset("meld", "test", root=release)
    assert data.num_utterances == 6
    assert {u.audio_path.parent.name for u in data.utterances()} == {"output_repeated_splits_test"}
