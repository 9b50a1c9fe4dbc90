"""IEMOCAP on a small synthetic copy of the official layout built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.data import DataError, load_dataset
from training.data.iemocap import IemocapOptions, load_iemocap, speaker_of

# (start_s, end_s, last id part, code, transcript); out of time order on purpose.
ENTRIES = [
    (4.0, 5.0, "F002", "ang", "Stop it."),
    (0.5, 1.5, "F000", "neu", "Excuse me."),
    (1.8, 2.6, "M000", "hap", "Hi there!"),
    (2.7, 3.9, "M001", "xxx", "Hmm."),
    (5.2, 6.0, "M002", "exc", "Yes!"),
    (6.1, 7.0, "F003", "sur", "Really?"),
]


def dialog_names(session: int) -> list[str]:
    return [f"Ses0{session}F_impro01", f"Ses0{session}M_script01_1"]


def build_iemocap(root: Path, sessions=(1, 2, 3, 4, 5)) -> Path:
    """Session*/dialog/{EmoEvaluation,transcriptions} and Session*/sentences/wav with 0.1 s tones."""
    tone = (0.1 * np.sin(np.arange(1600) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    for n in sessions:
        session = root / f"Session{n}"
        for sub in ("dialog/EmoEvaluation/Categorical", "dialog/transcriptions"):
            (session / sub).mkdir(parents=True)
        for dialog in dialog_names(n):
            evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            transcript = []
            wav_dir = session / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True)
            for start, end, part, code, text in ENTRIES:
                utt = f"{dialog}_{part}"
                evaluation += [
                    f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
                    "C-E2:\tx;\t()",
                    "",
                ]
                transcript.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
                sf.write(wav_dir / f"{utt}.wav", tone, 16000)
            (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(evaluation) + "\n")
            (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(sorted(transcript)) + "\n")
    return root


@pytest.fixture
def iemocap(tmp_path) -> Path:
    return build_iemocap(tmp_path / "IEMOCAP_full_release")


def test_test_session(iemocap):
    data = load_dataset("iemocap", "test", root=iemocap)
    assert data.labels == ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    assert [d.id for d in data.dialogues] == dialog_names(5)
    impro = data.dialogues[0]
    assert [u.source for u in impro.utterances] == [
        f"iemocap/Ses05F_impro01_{p}" for p in ("F000", "M000", "F002", "M002")
    ]  # by start time, xxx and sur left out
    assert [u.turn for u in impro.utterances] == [0, 1, 2, 3]
    assert [u.label for u in impro.utterances] == ["neutral", "happy", "angry", "excited"]
    assert [u.speaker for u in impro.utterances] == ["Ses05.F", "Ses05.M", "Ses05.F", "Ses05.M"]
    assert [u.text for u in impro.utterances] == ["Excuse me.", "Hi there!", "Stop it.", "Yes!"]
    assert impro.utterances[0].audio_path == iemocap / "Session5/sentences/wav/Ses05F_impro01/Ses05F_impro01_F000.wav"
    report = data.report
    assert (report.rows, report.kept, report.problems) == (12, 8, [])
    assert report.excluded_by_design == {"label xxx (no majority)": 2, "label sur (surprise)": 2}
    assert "excluded by design: 2 label xxx" in report.summary()


def test_speaker_from_the_utterance_id():
    assert speaker_of("Ses01F_impro01_F000") == "Ses01.F"
    assert speaker_of("Ses01F_impro01_M013") == "Ses01.M"
    assert speaker_of("Ses03M_script01_1_F012") == "Ses03.F"


def test_train_validation_split_is_disjoint_and_seeded(iemocap):
    train = load_iemocap("train", iemocap)
    validation = load_iemocap("validation", iemocap)
    train_ids, val_ids = {d.id for d in train.dialogues}, {d.id for d in validation.dialogues}
    assert not train_ids & val_ids
    assert train_ids | val_ids == {d for n in (1, 2, 3, 4) for d in dialog_names(n)}
    assert len(val_ids) == 1  # 10% of 8 dialogues, at least one
    assert val_ids == {d.id for d in load_iemocap("validation", iemocap).dialogues}
    picks = {
        frozenset(d.id for d in load_iemocap("validation", iemocap, IemocapOptions(seed=s, audio=False)).dialogues)
        for s in range(8)
    }
    assert len(picks) > 1


def test_leave_one_session_out(iemocap):
    test = load_iemocap("test", iemocap, IemocapOptions(test_session=2))
    assert {d.id for d in test.dialogues} == set(dialog_names(2))
    train = load_iemocap("train", iemocap, IemocapOptions(test_session=2, validation_fraction=0.0))
    assert {d.id[:5] for d in train.dialogues} == {"Ses01", "Ses03", "Ses04", "Ses05"}
    with pytest.raises(ValueError, match="test_session"):
        IemocapOptions(test_session=6)


def test_missing_and_unreadable_wavs(iemocap):
    wav_dir = iemocap / "Session5/sentences/wav/Ses05F_impro01"
    (wav_dir / "Ses05F_impro01_F000.wav").unlink()
    (wav_dir / "Ses05F_impro01_M000.wav").write_bytes(b"RIFF broken")
    (wav_dir / "Ses05F_impro01_M001.wav").unlink()  # an xxx utterance: never looked at
    data = load_iemocap("test", iemocap, IemocapOptions(max_missing_fraction=0.5))
    assert data.num_utterances == 6
    assert data.report.counts() == {"missing_audio": 1, "unreadable_audio": 1}
    with pytest.raises(DataError, match=r"2 of 12 utterances .*sentences/wav.*audio=False"):
        load_iemocap("test", iemocap)
    text_only = load_iemocap("test", iemocap, IemocapOptions(audio=False))
    assert text_only.num_utterances == 8 and not text_only.report.problems
    kept = load_iemocap("test", iemocap, IemocapOptions(keep_text_only=True, max_missing_fraction=0.5))
    assert sum(u.audio_path is None for u in kept.utterances()) == 2 and kept.num_utterances == 8


def test_unknown_code_and_missing_transcript(iemocap):
    evaluation = iemocap / "Session5/dialog/EmoEvaluation/Ses05F_impro01.txt"
    evaluation.write_text(evaluation.read_text().replace("\tang\t", "\tabc\t"))
    (iemocap / "Session5/dialog/transcriptions/Ses05M_script01_1.txt").unlink()
    data = load_iemocap("test", iemocap, IemocapOptions(max_missing_fraction=0.2))
    assert data.report.counts() == {"unknown_label": 1, "empty_text": 4}
    script = data.dialogues[1]
    assert all(u.text is None and u.audio_path is not None for u in script.utterances)  # Whisper fills
    assert {p.action for p in data.report.problems if p.kind == "empty_text"} == {"kept"}
    assert any("no transcript file" in note for note in data.report.notes)
    with pytest.raises(DataError, match="5 of 12 utterances"):
        load_iemocap("test", iemocap, IemocapOptions(audio=False))  # no text and no audio: excluded


def test_missing_test_session(tmp_path):
    root = build_iemocap(tmp_path, sessions=(1, 2))
    with pytest.raises(DataError, match="Session5/dialog not found under .*Session1..Session5"):
        load_iemocap("train", root)
    data = load_iemocap("test", root, IemocapOptions(test_session=2))
    assert data.num_utterances == 8 and any("absent" in n for n in data.report.notes)


def test_text_only_models_load_iemocap_without_its_audio(iemocap):
    """A model that hears nothing asks for audio=False on any dataset that can go text-only,
    so a missing wav no longer costs its utterance (issue 3: text-only use must work)."""
    from training.experiment import dataset_options

    (iemocap / "Session5/sentences/wav/Ses05F_impro01/Ses05F_impro01_F000.wav").unlink()
    assert dataset_options("iemocap", {"test_session": 5}, ("text",)) == {"test_session": 5, "audio": False}
    assert dataset_options("meld", {}, ("text", "speaker")) == {"audio": False}
    assert dataset_options("iemocap", {}, ("audio", "text")) == {}
    assert dataset_options("paired", {"seed": 1}, ("text",)) == {"seed": 1}  # no text-only mode to ask for
    text_only = load_dataset("iemocap", "test", iemocap, **dataset_options("iemocap", {}, ("text",)))
    with_audio = load_dataset("iemocap", "test", iemocap, max_missing_fraction=0.5)
    assert sum(1 for _ in text_only.utterances()) == sum(1 for _ in with_audio.utterances()) + 1
    assert not text_only.report.counts()
