import pytest

from training.e2e import MISSED, Segment, align, score, word_error_rate

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
