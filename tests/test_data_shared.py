"""``paired`` and ``voice-chains`` on the real shared data: labels, voices, splits, seeds."""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from training.data import MELD_LABELS, DataError, load_dataset
from training.data.meld import MeldOptions, load_meld
from training.data.shared import (
    CORPORA,
    PairedOptions,
    VoiceChainOptions,
    load_paired,
    load_voice_chains,
    read_clips,
    voice_splits,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "acted_speech.csv").is_file(), reason="shared data not present")
SPLITS = ("train", "validation", "test")


def clip_index() -> dict[Path, dict[str, str]]:
    with (SHARED / "acted_speech.csv").open(encoding="utf-8", newline="") as f:
        return {Path(os.path.abspath(SHARED / r["path"])): r for r in csv.DictReader(f)}


def test_voice_splits_are_disjoint_balanced_and_seeded():
    clips = read_clips(SHARED, CORPORA)
    splits = voice_splits(clips, seed=0)
    assert set(splits.values()) == set(SPLITS)
    assert splits == voice_splits(clips, seed=0) and splits != voice_splits(clips, seed=1)
    per = defaultdict(Counter)
    for voice, split in splits.items():
        per[voice.split("_")[0]][split] += 1
    assert per["ravdess"] == {"train": 12, "validation": 4, "test": 4}
    assert per["emodb"] == {"train": 6, "validation": 2, "test": 2}
    ravdess_test = [v for v, s in splits.items() if s == "test" and v.startswith("ravdess")]
    assert sorted(int(v[-2:]) % 2 for v in ravdess_test) == [0, 0, 1, 1]  # two women, two men


def test_paired_labels_text_and_voices():
    data = load_paired("test", SHARED, PairedOptions(max_dialogues=40))
    meld = {d.id: d for d in load_meld("dev", SHARED / "meld", MeldOptions(audio=False)).dialogues}
    index = clip_index()
    assert data.labels == MELD_LABELS and len(data) == 40
    substituted = sum(n for event, n in data.report.events.items() if event.startswith("clip from"))
    assert substituted == sum(u.source.endswith("(voice substituted)") for u in data.utterances())
    for dialogue in data.dialogues:
        source = {u.turn: u for u in meld[dialogue.id].utterances}
        voices = defaultdict(set)
        for utt in dialogue.utterances:
            row = index[utt.audio_path]
            assert row["label7"] == utt.label == source[utt.turn].label  # same label on both channels
            assert (utt.text, utt.speaker) == (source[utt.turn].text, source[utt.turn].speaker)  # MELD's text
            assert row["speaker"] == utt.voice and utt.source.startswith(f"meld/dev/{dialogue.id}_utt")
            if not utt.source.endswith("(voice substituted)"):
                voices[utt.speaker].add(utt.voice)
        # One voice per MELD speaker (substitutions aside), a different one for each speaker.
        assert all(len(v) == 1 for v in voices.values())
        assert len(set.union(*voices.values())) == len(voices)
    by_design = sum(n for r, n in data.report.excluded_by_design.items() if r.startswith("utterances"))
    assert data.report.rows == data.num_utterances + by_design


def test_paired_splits_are_disjoint_and_deterministic():
    fast = PairedOptions(max_dialogues=60, check_audio=False)
    loaded = {s: load_paired(s, SHARED, fast) for s in SPLITS}
    voices = {s: d.voices() for s, d in loaded.items()}
    assert not voices["train"] & voices["validation"]
    assert not voices["train"] & voices["test"] and not voices["validation"] & voices["test"]
    assert not {d.id for d in loaded["train"].dialogues} & {d.id for d in loaded["validation"].dialogues}
    assert {u.source.split("/")[1] for u in loaded["test"].utterances()} == {"dev"}
    assert {u.source.split("/")[1] for u in loaded["validation"].utterances()} == {"train"}
    again = load_paired("validation", SHARED, fast)
    assert again.dialogues == loaded["validation"].dialogues
    other = load_paired("validation", SHARED, PairedOptions(max_dialogues=60, check_audio=False, seed=1))
    assert other.dialogues != loaded["validation"].dialogues
    # max_dialogues keeps a prefix: each dialogue has its own seeded draw.
    fewer = load_paired("validation", SHARED, PairedOptions(max_dialogues=10, check_audio=False))
    assert fewer.dialogues == loaded["validation"].dialogues[:10]


def test_paired_full_train_split_and_registry():
    data = load_dataset("paired", "train", root=SHARED, check_audio=False)
    validation = load_dataset("paired", "validation", root=SHARED, check_audio=False)
    assert len(data) + len(validation) == 1038  # MELD train dialogues, 10% held out
    assert len(validation) == 104 and data.num_utterances + validation.num_utterances == 9989
    assert {u.voice.split("_")[0] for u in data.utterances()} == set(CORPORA)
    assert sum(data.label_counts().values()) == data.num_utterances


def test_paired_with_corpora_lacking_labels_excludes_by_design():
    data = load_paired("test", SHARED, PairedOptions(corpora=("urdu",), max_dialogues=20))
    assert set(data.label_counts()) == set(MELD_LABELS)
    assert data.label_counts()["fear"] == data.label_counts()["surprise"] == 0
    reasons = " ".join(data.report.excluded_by_design)
    assert "labelled surprise" in reasons and not data.report.problems
    assert {u.voice.split("_")[0] for u in data.utterances()} == {"urdu"}


def test_paired_substitutions_and_voice_reuse_are_counted():
    data = load_paired("test", SHARED, PairedOptions(corpora="emodb", max_dialogues=30, check_audio=False))
    assert {u.voice for u in data.utterances()} == {"emodb_03", "emodb_08"}  # EmoDB's two test voices
    events = data.report.events
    assert any(e.startswith("voice reused") for e in events)  # dialogues with more than two speakers
    assert any(e.startswith("clip from another emodb voice") for e in events)  # emodb_08 has no disgust
    assert data.label_counts()["surprise"] == 0  # EmoDB has no surprise
    by_design = data.report.excluded_by_design
    assert by_design["utterances labelled surprise (no clip of it in the split's corpora)"] > 0


def test_voice_chains():
    options = VoiceChainOptions(num_dialogues=30, min_turns=3, max_turns=6)
    loaded = {s: load_dataset("voice-chains", s, root=SHARED, **vars(options)) for s in SPLITS}
    index = clip_index()
    for data in loaded.values():
        assert len(data) == 30 and data.labels == MELD_LABELS
        for dialogue in data.dialogues:
            assert 3 <= len(dialogue) <= 6 and 1 <= len(dialogue.speakers) <= 2
            for utt in dialogue.utterances:
                row = index[utt.audio_path]
                assert (row["corpus"], row["label7"], row["speaker"]) == ("ravdess", utt.label, utt.speaker)
                sentence = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
                assert utt.text == sentence[utt.audio_path.stem.split("-")[4]]
    assert not loaded["train"].voices() & loaded["test"].voices()
    assert not loaded["validation"].voices() & (loaded["train"].voices() | loaded["test"].voices())
    assert any(len(d.speakers) == 2 for d in loaded["train"].dialogues)
    assert load_voice_chains("test", SHARED, options).dialogues == loaded["test"].dialogues
    changed = load_voice_chains("test", SHARED, VoiceChainOptions(num_dialogues=30, min_turns=3, max_turns=6, seed=5))
    assert changed.dialogues != loaded["test"].dialogues
    solo = load_voice_chains("train", SHARED, VoiceChainOptions(num_dialogues=10, two_speaker_fraction=0.0))
    assert all(len(d.speakers) == 1 for d in solo.dialogues)
    auto = load_voice_chains("train", SHARED)  # about one use per clip: 12 actors x 60 clips / 8 turns
    assert len(auto) == 90
    with pytest.raises(ValueError, match="min_turns"):
        VoiceChainOptions(min_turns=5, max_turns=2)
    with pytest.raises(ValueError, match="corpora"):
        VoiceChainOptions(corpora=("timit",))
    assert VoiceChainOptions(corpora="ravdess, emodb").corpora == ("ravdess", "emodb")  # as the CLI passes it


def test_persistent_labels_make_runs():
    sticky = load_voice_chains("train", SHARED, VoiceChainOptions(label_persistence=1.0, two_speaker_fraction=0.0))
    assert all(len({u.label for u in d.utterances}) == 1 for d in sticky.dialogues)


@pytest.fixture
def broken_root(tmp_path) -> Path:
    """A shared-data folder whose index lists clips that are missing or unreadable."""
    (tmp_path / "meld").symlink_to(SHARED / "meld")
    (tmp_path / "ravdess").symlink_to(SHARED / "ravdess")
    with (SHARED / "acted_speech.csv").open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["corpus"] == "ravdess"]
    (tmp_path / "bad").mkdir()
    for i, row in enumerate(rows):
        if row["speaker"] in ("ravdess_01", "ravdess_02") and i % 6 == 0:
            row["path"] = f"bad/{i}.flac"
            if i % 12 == 0:
                (tmp_path / row["path"]).write_bytes(b"not flac")
    with (tmp_path / "acted_speech.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


def test_missing_and_unreadable_clips(broken_root):
    splits = voice_splits(read_clips(broken_root, ("ravdess",)), seed=0)
    split = splits["ravdess_01"]
    options = VoiceChainOptions(num_dialogues=5, max_missing_fraction=0.5)
    data = load_voice_chains(split, broken_root, options)
    counts = data.report.counts()
    assert counts["missing_audio"] > 0 and counts["unreadable_audio"] > 0
    assert all("bad" not in u.audio_path.parts for u in data.utterances())
    with pytest.raises(DataError, match=rf"voice-chains {split}: \d+ of \d+ clips .*missing_audio.*acted_speech.csv"):
        load_voice_chains(split, broken_root, VoiceChainOptions(num_dialogues=5))
    with pytest.raises(DataError, match="acted_speech.csv does not exist"):
        load_voice_chains("train", broken_root / "nowhere")
