"""Issue #12: hostile or damaged inputs (checkpoints, text encoders, --set values, manifests) are one
sentence, and nothing a model or a file says can drive the terminal."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

import models
from models import FeaturePipeline
from models.checkpoint import CheckpointError
from streamer.events import UtteranceEvent
from streamer.export import cue_text, event_to_json, format_line, read_jsonl, write_csv, write_srt, write_vtt
from tests.conftest import TINY
from training.cli import main as training_main
from training.data import load_dataset
from training.data.report import DataError

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny HBAF checkpoint and a way to rewrite one field of it."""
    torch.manual_seed(0)
    path = models.save(tmp_path / "good.pt", models.build("hbaf", **TINY["hbaf"]), LABELS, FeaturePipeline())

    def tampered(**changes):
        payload = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if key in payload:
                payload[key] = value
            else:
                payload["config"][key] = value
        out = tmp_path / "tampered.pt"
        torch.save(payload, out)
        return out

    return tampered


def one_sentence(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text and len(text) < 400, text
    return text


# -- 4. labels and transcripts cannot drive the terminal ------------------------------------------


@pytest.mark.parametrize("label", ["\x1b[2Jjoy", "\x1b]0;owned\x07", "joy\u202e", "", " joy", "x" * 41])
def test_labels_are_validated_at_load(checkpoint, label):
    with pytest.raises(CheckpointError, match="labels must be 1 to 40 printable characters") as err:
        models.load(checkpoint(labels=[label, *LABELS[1:]]), device="cpu")
    one_sentence(err.value)


def test_duplicate_labels_are_refused(checkpoint):
    with pytest.raises(CheckpointError, match="twice"):
        models.load(checkpoint(labels=["joy", *LABELS[1:-1], "joy"]), device="cpu")


HOSTILE = "hi \x1b[2J\x1b]0;title\x07 \x9b31m there\u202e"


def hostile_event(error=None):
    return UtteranceEvent(
        0, 0.0, 1.0, "A", HOSTILE, None if error else "joy\x1b[5m", 0.9, {"joy\x1b[5m": 0.9}, {}, error
    )


def test_control_characters_are_escaped_in_every_text_output(tmp_path):
    controls = ("\x1b", "\x07", "\x9b", "\u202e")
    events = [hostile_event(), UtteranceEvent(1, 1.0, 2.0, "B", "ok", None, 0.0, {}, {}, "boom \x1b[31m")]
    texts = [format_line(e) for e in events] + [cue_text(e) for e in events]
    for writer, name in ((write_csv, "t.csv"), (write_srt, "t.srt"), (write_vtt, "t.vtt")):
        texts.append(writer(events, tmp_path / name).read_text(encoding="utf-8"))
    lines = [event_to_json(e) for e in events]
    texts += lines
    for text in texts:
        assert not any(c in text for c in controls), repr(text)
    assert "\\x1b[2J" in format_line(events[0])  # visible, not dropped
    (tmp_path / "e.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_jsonl(tmp_path / "e.jsonl")[0].text == HOSTILE  # the JSONL record keeps the exact text


def test_the_ui_row_shows_control_characters_escaped():
    from streamer.widgets import Palette, UtteranceRow

    for event in (hostile_event(), hostile_event(error="bad \x1b[31m")):
        row = UtteranceRow(event, Palette(["joy\x1b[5m"]), details=True)
        out = io.StringIO()
        Console(file=out, width=200, color_system=None, force_terminal=False).print(row.render())
        assert not any(c in out.getvalue() for c in ("\x1b", "\x07", "\x9b", "\u202e")), repr(out.getvalue())


# -- 5. damaged checkpoints, text encoders, options: one sentence ---------------------------------


@pytest.mark.parametrize(
    "change, words",
    [
        ({"transformer_heads": 0}, "transformer_heads must be positive"),
        ({"transformer_ff": 2_000_000_000}, "do not match the model's config"),
        ({"d_model": "abc"}, "invalid model description"),
        ({"state_dict": [1, 2]}, "no weights"),
    ],
)
def test_a_tampered_config_is_one_sentence(checkpoint, change, words):
    with pytest.raises(CheckpointError, match=words) as err:
        models.load(checkpoint(**change), device="cpu")
    one_sentence(err.value)


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -1.0, 0.0, "hot", None, True])
def test_a_temperature_that_is_not_a_positive_number_is_refused(checkpoint, temperature):
    with pytest.raises(CheckpointError, match="temperature") as err:
        models.load(checkpoint(temperature=temperature), device="cpu")
    one_sentence(err.value)


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_text_encoder_folder_with_a_pickled_payload_is_refused_in_one_sentence(tmp_path):
    from streamer.frames import FeatureError
    from streamer.text_encoder import TextEncoder, bundled_text_encoder_path

    folder = tmp_path / "encoder"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(bundled_text_encoder_path() / name, folder / name)
    marker = tmp_path / "PWNED"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": _Payload(str(marker))}, f)
    with pytest.raises(FeatureError, match="not plain tensors") as err:
        TextEncoder(folder, device="cpu")
    assert "weights_only=False" not in one_sentence(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "setting, words",
    [
        ("d_model=abc", "--set d_model='abc': d_model takes an integer"),
        ("dropout=high", "dropout takes a number"),
        ("transformer_heads=0", "transformer_heads must be positive"),
        ("no_such=1", "has no setting 'no_such'"),
    ],
)
def test_bad_set_values_are_one_sentence(tmp_path, capsys, setting, words):
    code = training_main(["train", "--model", "hbaf", "--set", setting, "--runs-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err


def write_manifest(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["dialogue_id", "turn", "speaker", "text", "label"])
        out.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_binary_manifest_is_one_sentence_naming_the_file(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=f"manifest {path} is not a UTF-8") as err:
        load_dataset("manifest", "all", root=path)
    one_sentence(err.value)


# -- 7. training messages name the flags ------------------------------------------------------------


def test_training_messages_name_the_flags_typed(tmp_path, capsys):
    assert training_main(["extract", "--dataset", "manifest", "--quiet"]) == 2
    assert "needs --data-root pointing at" in capsys.readouterr().err
    assert training_main(["extract", "--dataset", "manifest", "--data-root", str(tmp_path / "x.csv"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pass --data-root a .csv/.jsonl manifest" in err and "root=" not in err
    missing = tmp_path / "none.pt"
    assert training_main(["evaluate", str(missing), "--dataset", "manifest", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint at {missing}; check the CHECKPOINT path given to evaluate" in err and "--model" not in err


# -- 8. a typo label is not a new class -------------------------------------------------------------


def test_a_label_outside_the_declared_set_is_reported_and_refused(tmp_path, capsys):
    rows = [["d", 0, "A", "hi", "joy"], ["d", 1, "B", "no", "anger"], ["d", 2, "A", "argh", "furious!!"]]
    path = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(DataError, match=r"outside MELD's seven: 'furious!!' \(1 rows, e.g. m.csv:4\)") as err:
        load_dataset("manifest", "all", root=path)
    assert "--labels" in one_sentence(err.value)
    # declared: the set is the user's, in the user's order
    data = load_dataset("manifest", "all", root=path, labels=("joy", "anger", "furious!!"))
    assert data.labels == ("joy", "anger", "furious!!") and len(data.dialogues[0].utterances) == 3
    # --labels on the command line reaches the loader
    from training.cli import _dataset_options, build_parser

    args = build_parser().parse_args(["extract", "--dataset", "manifest", "--labels", "joy, anger,furious!!"])
    assert _dataset_options(args) == {"labels": ("joy", "anger", "furious!!")}


def test_labels_that_are_not_plain_names_are_refused_unless_declared(tmp_path):
    path = write_manifest(tmp_path / "m.csv", [["d", 0, "A", "hi", "calm"], ["d", 1, "B", "no", "tense ?!"]])
    with pytest.raises(DataError, match="not plain names: 'tense \\?!'"):
        load_dataset("manifest", "all", root=path)
    write_manifest(path, [["d", 0, "A", "hi", "calm"], ["d", 1, "B", "no", "very tense"]])
    assert load_dataset("manifest", "all", root=path).labels == ("calm", "very tense")
    with pytest.raises(ValueError, match="printable"):
        load_dataset("manifest", "all", root=path, labels=("calm", "tense\x1b[2J"))


def test_a_jsonl_manifest_label_check_names_the_line(tmp_path):
    lines = [{"dialogue_id": "d", "turn": 0, "speaker": "A", "text": "x", "label": "joy"}] * 1
    lines.append({"dialogue_id": "d", "turn": 1, "speaker": "B", "text": "y", "label": "Joy"})
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(DataError, match=r"'Joy' \(1 rows, e.g. m.jsonl:2\)"):
        load_dataset("manifest", "all", root=path)
