import pytest

from training.e2e import MISSED, Segment, align, score, truth_path, word_error_rate

T = [Segment(0, 2, "hello there", "joy"), Segment(3, 5, "how are you", "neutral"), Segment(6, 8, "bad", "anger")]


def test_perfect_alignment():
    r = score(
        T,
        [
            Segment(0.1, 2.1, "hello there", "joy"),
            Segment(3, 5, "how are you", "neutral"),
            Segment(6, 8, "bad", "anger"),
        ],
    )
    assert (r["missed"], r["split"], r["merged"], r["false_alarms"]) == (0, 0, 0, 0)
    assert r["weighted_f1"] == 1.0 and r["wer"] == 0.0


def test_missed_split_merged_false_alarm():
    pred = [
        Segment(0, 0.9, "hello", "joy"),
        Segment(1.1, 2, "there", "joy"),  # split truth 0
        Segment(3.5, 7.5, "how are you bad", "neutral"),  # merges truths 1 and 2
        Segment(9, 10, "noise", "fear"),  # false alarm
    ]
    r = align(T, pred)
    assert (r["split"], r["merged"], r["false_alarms"]) == (1, 1, 1)
    # the merge belongs to the truth it overlaps most (1.5 s each: the first wins) and labels both
    assert r["missed"] == 0 and r["labels_pred"] == ["joy", "neutral", "neutral"]
    nothing = align(T, [Segment(0, 2, "hello there", "joy")])
    assert nothing["missed"] == 2 and nothing["labels_pred"] == ["joy", MISSED, MISSED]


def test_wer_by_hand():
    assert word_error_rate("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert word_error_rate("Hello, World!", "hello world") == 0.0
    assert word_error_rate("a b c", "x b c d") == pytest.approx(2 / 3)


def test_truth_path_finds_the_script_beside_a_recording_or_its_mono_twin(tmp_path):
    (tmp_path / "talk.jsonl").write_text("")
    assert truth_path(tmp_path / "talk.flac") == tmp_path / "talk.jsonl"
    assert truth_path(tmp_path / "talk-stereo.flac") == tmp_path / "talk.jsonl"
    (tmp_path / "talk-stereo.jsonl").write_text("")
    assert truth_path(tmp_path / "talk-stereo.flac") == tmp_path / "talk-stereo.jsonl"
    assert truth_path(tmp_path / "other.flac") is None


def test_e2e_without_ground_truth_is_one_line(tmp_path, capsys):
    from training.cli import main

    assert main(["e2e", str(tmp_path / "call-stereo.flac")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: no ground truth for {tmp_path / 'call-stereo.flac'}: expected {tmp_path / 'call.jsonl'}"
