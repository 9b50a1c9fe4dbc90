import numpy as np
import pytest

from training.metrics import classification_metrics, expected_calibration_error, fit_temperature, plot_confusion

LABELS = ["a", "b", "c"]


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    logits = np.eye(3)[pred] * 5
    m = classification_metrics(y, logits, LABELS)
    # per class F1: a: p=1/2 r=1/2 -> .5 ; b: p=1/2 r=1 -> 2/3 ; c: p=1 r=2/3 -> .8
    f1 = {"a": 0.5, "b": 2 / 3, "c": 0.8}
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)
    assert m["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["unweighted_accuracy"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["per_class"]["b"]["support"] == 1


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bin (0.8, 0.867]: conf .9, acc .5 ; bin (0.533, 0.6]: conf .6, acc 1.0
    assert expected_calibration_error(probs, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_temperature_scaling_reduces_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(size=(2000, 3))
    logits[np.arange(2000), y] += 1.0
    logits *= 6  # overconfident
    t = fit_temperature(logits, y)
    assert t > 2
    before = classification_metrics(y, logits, LABELS)["ece"]
    after = classification_metrics(y, logits, LABELS, temperature=t)["ece"]
    assert after < before / 2


def test_confusion_png(tmp_path):
    path = plot_confusion([[3, 1, 0], [0, 2, 0], [1, 0, 4]], LABELS, tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
