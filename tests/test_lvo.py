"""Leave-voices-out scoring: pooled metrics that a constant answer cannot game, coverage vs accuracy."""

from __future__ import annotations

import pytest

from training.e2e import MISSED, Segment, align
from training.lvo import LVO_SETS, by_gender, coverage_curve, evaluate_sets, pooled_scores, voice_gender


def test_a_constant_answer_does_not_look_good():
    truth = ["neutral"] * 6 + ["anger", "joy", "sadness", "fear"]
    s = pooled_scores(truth, ["neutral"] * 10)
    assert s["accuracy"] == 0.6
    assert s["unweighted_accuracy"] == pytest.approx(0.2)  # 1 of 5 true classes recalled
    assert s["macro_f1"] < 0.2 < s["weighted_f1"]
    assert pooled_scores([None, "joy"], [MISSED, MISSED])["missed"] == 1


def test_coverage_curve_trades_answers_for_accuracy():
    truth = ["joy", "joy", "anger", "anger"]
    pred = ["joy", "anger", "anger", "joy"]
    curve = coverage_curve(truth, pred, [0.9, 0.45, 0.8, 0.3])
    assert curve["0.4"] == {"coverage": 0.75, "accuracy": pytest.approx(2 / 3)}
    assert curve["0.5"] == {"coverage": 0.5, "accuracy": 1.0}
    assert curve["0.7"]["coverage"] == 0.5


def test_alignment_carries_the_prediction_confidence():
    truth = [Segment(0, 1, label="joy"), Segment(2, 3, label="anger")]
    a = align(truth, [Segment(0.1, 0.9, label="joy", confidence=0.7)])
    assert a["confidences"] == [0.7, 0.0] and a["labels_pred"] == ["joy", MISSED]


def test_unknown_set_is_one_sentence(tmp_path):
    assert "words-engines" in LVO_SETS
    with pytest.raises(ValueError, match="choose from"):
        evaluate_sets(tmp_path, None, ["voices-of-mars"])


def test_scores_per_gender_of_the_true_speaker_where_known():
    assert [voice_gender(s) for s in ("ravdess_01", "ravdess_10", "emodb_08", "emodb_15", "Phoebe", None)] == [
        "M", "F", "F", "M", None, None,
    ]
    truth = [Segment(0, 1, label="joy", speaker="ravdess_03"), Segment(2, 3, label="anger", speaker="ravdess_04"),
             Segment(4, 5, label="joy", speaker="Monica")]
    a = align(truth, [Segment(0, 1, label="joy"), Segment(2, 3, label="joy"), Segment(4, 5, label="joy")])
    assert a["speakers_true"] == ["ravdess_03", "ravdess_04", "Monica"]
    g = by_gender(a["labels_true"], a["labels_pred"], a["speakers_true"])
    assert sorted(g) == ["F", "M"]  # the synthetic reader's line counts in neither
    assert (g["M"]["n"], g["M"]["accuracy"], g["F"]["n"], g["F"]["accuracy"]) == (1, 1.0, 1, 0.0)


def test_each_channel_is_scored_alone_on_the_same_utterances(tmp_path, monkeypatch):
    """The words alone beside the fusion: what each channel said, pooled over a set's recordings."""
    truth = [Segment(0, 1, label="joy"), Segment(2, 3, label="anger")]
    heard = [Segment(0, 1, label="anger", channels=(("audio", "anger"), ("text", "joy")))]
    a = align(truth, heard)
    assert a["labels_channels"] == {"audio": ["anger", MISSED], "text": ["joy", MISSED]}

    import training.lvo as lvo

    recordings = [tmp_path / "a.flac", tmp_path / "b.flac"]
    monkeypatch.setattr(lvo, "render_set", lambda *a, **k: recordings)
    results = {
        # a model that names its channels only on the second recording: the first counts as missed there
        "a": align(truth, [Segment(0, 1, label="joy"), Segment(2, 3, label="anger")]),
        "b": align(truth, [Segment(0, 1, label="joy", channels=(("text", "joy"),)),
                           Segment(2, 3, label="joy", channels=(("text", "anger"),),
                                   probs={"fused": {"joy": 0.6, "anger": 0.4}, "text": {"joy": 0.3, "anger": 0.7}})]),
    }
    monkeypatch.setattr(lvo, "evaluate_recording", lambda rec, *a, **k: {**results[rec.stem], "wer": 0.0})
    scores = lvo.evaluate_sets(tmp_path, None, ["words-espeak"])["words-espeak"]
    assert scores["accuracy"] == 0.75
    text = scores["channels"]["text"]
    assert (text["n"], text["accuracy"], text["missed"]) == (4, 0.5, 2)
    rows = scores["utterances"]
    assert [(r["true"], r["pred"], r["text"]) for r in rows] == [
        ("joy", "joy", MISSED), ("anger", "anger", MISSED), ("joy", "joy", "joy"), ("anger", "joy", "anger")
    ]
    # the distributions ride along where the model gave them, for combination rules scored offline
    assert [r.get("probs") for r in rows] == [None, None, None, {"fused": {"joy": 0.6, "anger": 0.4},
                                                                 "text": {"joy": 0.3, "anger": 0.7}}]
    assert "text 0.667" in lvo.table({"words-espeak": scores})  # recall 1/2, precision 1 per class


def test_the_long_voice_set_holds_forty_turns_of_two_test_voices():
    from training.data import load_dataset
    from training.data.shared import DEFAULT_ROOT

    spec = LVO_SETS["voice-ravdess-long"]
    assert (spec.recordings(16), spec.recordings(1), LVO_SETS["paired"].recordings(16)) == (4, 1, 16)
    split = load_dataset(spec.dataset, "test", DEFAULT_ROOT, **{**spec.options, "check_audio": False})
    d = split.dialogues[0]
    assert len(d.utterances) == 40
    assert len({u.speaker for u in d.utterances}) == 2
    train = load_dataset("voice-chains", "train", DEFAULT_ROOT, check_audio=False)
    train_voices = {u.speaker for u in train.utterances()}
    assert not {u.speaker for u in d.utterances} & train_voices


def test_scoring_some_sets_again_keeps_the_others(tmp_path, monkeypatch):
    import json

    import training.lvo as lvo
    from training.cli import main

    calls = iter([{"paired": {"n": 1, "weighted_f1": 0.5}}, {"words-espeak": {"n": 2, "weighted_f1": 0.4}}])
    monkeypatch.setattr(lvo, "evaluate_sets", lambda *a, **k: next(calls))
    monkeypatch.setattr(lvo, "table", lambda results: "table")
    for s in ("paired", "words-espeak"):
        assert main(["lvo", "--out", str(tmp_path), "--sets", s]) == 0
    saved = json.loads((tmp_path / "results-bundled.json").read_text())
    assert sorted(saved) == ["paired", "words-espeak"]


def test_speaker_attribution_is_the_best_one_to_one_mapping_and_a_miss_counts_wrong():
    from training.e2e import score

    truth = [Segment(2 * i, 2 * i + 1, label="joy", speaker=s) for i, s in enumerate("ABABAC")]
    # the tracker splits A (its third turn opens z), and the last turn is not heard at all
    heard = [Segment(2 * i, 2 * i + 1, label="joy", speaker=s) for i, s in enumerate(["x", "y", "x", "y", "z"])]
    r = score(truth, heard)
    assert r["speakers_pred"] == ["x", "y", "x", "y", "z", None]
    # A -> x (2 of its 3 turns), B -> y (2); A's third turn went to z, C's turn is missed
    assert r["speaker_attribution"] == {"turns": 6, "correct": 4, "speakers_true": 3, "speakers_found": 3}
    # a tracker that gives everyone one label is right only for the largest speaker
    one = score(truth, [Segment(s.start_s, s.end_s, label="joy", speaker="x") for s in truth])
    assert one["speaker_attribution"]["correct"] == 3
    assert score([Segment(0, 1, label="joy")], [Segment(0, 1, label="joy")])["speaker_attribution"] is None


def test_the_set_pools_attribution_over_recordings_and_by_how_many_speak(tmp_path, monkeypatch):
    import training.lvo as lvo

    recordings = [tmp_path / "a.flac", tmp_path / "b.flac", tmp_path / "c.flac"]
    monkeypatch.setattr(lvo, "render_set", lambda *a, **k: recordings)
    two = [Segment(0, 1, label="joy", speaker="A"), Segment(2, 3, label="joy", speaker="B")]
    three = two + [Segment(4, 5, label="joy", speaker="C")]
    results = {
        "a": align(two, [Segment(0, 1, label="joy", speaker="x"), Segment(2, 3, label="joy", speaker="y")]),
        "b": align(two, [Segment(0, 1, label="joy", speaker="x"), Segment(2, 3, label="joy", speaker="x")]),
        "c": align(three, [Segment(0, 1, label="joy", speaker="x"), Segment(2, 3, label="joy", speaker="y"),
                           Segment(4, 5, label="joy", speaker="y")]),
    }
    from training.e2e import speaker_attribution

    for r in results.values():
        r["speaker_attribution"] = speaker_attribution(r["speakers_true"], r["speakers_pred"])
    monkeypatch.setattr(lvo, "evaluate_recording", lambda rec, *a, **k: {**results[rec.stem], "wer": 0.0})
    scores = lvo.evaluate_sets(tmp_path, None, ["words-engines"])["words-engines"]
    # each utterance keeps its recording and whom the tracker named, for per-recording analysis
    assert [(r["recording"], r["speaker"], r["heard_as"]) for r in scores["utterances"]][2:5] == [
        ("b", "A", "x"), ("b", "B", "x"), ("c", "A", "x")
    ]
    who = scores["speakers"]
    assert (who["turns"], who["attribution"]) == (7, pytest.approx(5 / 7))
    assert who["by_speakers"]["2"]["attribution"] == pytest.approx(3 / 4)
    assert who["by_speakers"]["3"] == {"recordings": 1, "turns": 3, "attribution": pytest.approx(2 / 3),
                                       "speakers_found_per_true": pytest.approx(2 / 3)}
