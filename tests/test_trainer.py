"""The training loop on synthetic features: it learns, stops early, drops modalities."""

import numpy as np
import pytest
import torch

import models
from models import ContextConfig, collate
from tests.conftest import killed_on_call
from training.trainer import FeatureDialogue, TrainConfig, class_weights, make_batch, modality_dropout, predict, train


def synthetic(n_dialogues, seed, audio_dim=6, text_dim=5):
    """Class c has mean +2 in audio column c and text column c: learnable from either modality."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(n_dialogues):
        n = int(rng.integers(2, 6))
        ys = rng.integers(0, 3, n)
        utts = []
        for y in ys:
            a, t = rng.normal(size=audio_dim), rng.normal(size=text_dim)
            a[y] += 2.0
            t[y] += 2.0
            utts.append({"audio": torch.tensor(a, dtype=torch.float32), "text": torch.tensor(t, dtype=torch.float32)})
        out.append(FeatureDialogue(f"d{d}", utts, [int(y) for y in ys]))
    return out


def test_training_learns_and_keeps_best_epoch():
    torch.manual_seed(0)
    m = models.build(
        "bclstm",
        context=ContextConfig("online", 4),
        audio_dim=6,
        text_dim=5,
        num_classes=3,
        hidden=16,
        fusion_hidden=16,
    )
    tr, va = synthetic(60, 0), synthetic(20, 1)
    logits0, y = predict(m, va)
    res = train(m, tr, va, TrainConfig(max_epochs=25, batch_size=8, lr=3e-3, patience=5))
    logits, y = predict(m, va)
    assert (logits.argmax(1) == y).mean() > 0.8
    assert (logits.argmax(1) == y).mean() > (logits0.argmax(1) == y).mean()
    best = min(h["val_loss"] for h in res.history)
    assert res.best_val_loss == pytest.approx(best)
    assert res.history[res.best_epoch]["val_loss"] == pytest.approx(best)


def test_early_stopping_patience():
    torch.manual_seed(0)
    m = models.build("text", input_dim=5, num_classes=3, hidden=8)
    # lr 0: the validation loss never improves after epoch 0
    res = train(m, synthetic(4, 0), synthetic(2, 1), TrainConfig(max_epochs=50, patience=3, lr=1e-12))
    assert res.best_epoch == 0 and len(res.history) == 4


def test_modality_dropout_never_hides_both():
    batch, _ = make_batch(synthetic(30, 0))
    out = modality_dropout(batch, 0.4, 0.4, torch.Generator().manual_seed(0))
    real = batch.mask
    assert not torch.any(~out.audio_present & ~out.text_present & real)
    assert torch.any(~out.audio_present & real) and torch.any(~out.text_present & real)
    hidden = ~out.audio_present & real
    assert torch.all(out.audio[hidden] == 0)
    same = modality_dropout(batch, 0.0, 0.0, torch.Generator())
    assert same is batch


def test_train_config_validation():
    with pytest.raises(ValueError, match="one modality must remain"):
        TrainConfig(audio_dropout=0.5, text_dropout=0.5)
    with pytest.raises(ValueError):
        TrainConfig(batch_size=0)
    m = models.build("text", input_dim=5, num_classes=3)
    with pytest.raises(ValueError, match="at least one"):
        train(m, [], synthetic(1, 0), TrainConfig())


def test_make_batch_labels_are_padded_with_ignore():
    data = synthetic(3, 2)
    batch, labels = make_batch(data)
    assert labels.shape == batch.mask.shape
    assert torch.all(labels[~batch.mask] == -100)
    assert collate([d.utterances for d in data]).mask.equal(batch.mask)


def test_class_weights_from_training_labels():
    data = [FeatureDialogue("a", [{}] * 4, [0, 0, 0, 1]), FeatureDialogue("b", [{}] * 2, [0, -100])]
    assert class_weights(data, 3, 0.0) is None
    w = class_weights(data, 3, 1.0)
    # 5 labels, 2 classes present: 5 / (2 * 4) and 5 / (2 * 1); the absent class takes the largest
    assert w.tolist() == pytest.approx([0.625, 2.5, 2.5])
    assert class_weights(data, 3, 0.5).tolist() == pytest.approx([0.625**0.5, 2.5**0.5, 2.5**0.5])
    with pytest.raises(ValueError, match="--class-weight-power"):
        TrainConfig(class_weight_power=1.5)


def imbalanced(n_dialogues, seed):
    """Nine in ten utterances are class 0; class 1 overlaps it (mean +1 in one audio column)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(n_dialogues):
        ys = (rng.random(8) < 0.1).astype(int)
        utts = []
        for y in ys:
            a = rng.normal(size=4)
            a[0] += 1.0 * y
            utts.append({"audio": torch.tensor(a, dtype=torch.float32)})
        out.append(FeatureDialogue(f"d{d}", utts, [int(y) for y in ys]))
    return out


def test_class_weights_stop_the_majority_prior_from_deciding():
    """Plain cross-entropy on 90/10 data answers the majority almost always; weighing the
    classes equally finds the minority class far more often (its recall is what rises)."""
    tr, va = imbalanced(80, 0), imbalanced(40, 1)
    recall = {}
    for power in (0.0, 1.0):
        torch.manual_seed(0)
        m = models.build("audio", input_dim=4, num_classes=2, hidden=8)
        train(m, tr, va, TrainConfig(max_epochs=30, batch_size=8, lr=1e-2, patience=30, class_weight_power=power))
        logits, y = predict(m, va)
        recall[power] = float((logits.argmax(1)[y == 1] == 1).mean())
    assert recall[0.0] < 0.2 and recall[1.0] > 0.5


def _bclstm():
    torch.manual_seed(0)
    return models.build(
        "bclstm", context=ContextConfig("online", 4), audio_dim=6, text_dim=5, num_classes=3, hidden=8, fusion_hidden=8
    )


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Killed after epoch 2 of 5 and resumed, the run takes exactly the uninterrupted run's steps
    (weights, Adam's moments, every random draw: modality dropout and batch order included)."""
    import training.trainer as trainer
    from training.trainer import Resume

    tr, va = synthetic(24, 0), synthetic(8, 1)
    cfg = TrainConfig(max_epochs=5, batch_size=4, lr=3e-3, patience=5, audio_dropout=0.2, text_dropout=0.2)
    whole = _bclstm()
    expected = train(whole, tr, va, cfg)

    state = Resume(tmp_path / "resume.pt", "cfg-a")
    killed_on_call(trainer, "evaluate_loss", 3, monkeypatch)  # in epoch three
    with pytest.raises(KeyboardInterrupt):
        train(_bclstm(), tr, va, cfg, resume=state)
    monkeypatch.undo()
    assert torch.load(state.path, weights_only=True)["epoch"] == 1

    resumed = _bclstm()  # a fresh process: new initial weights, replaced by the saved ones
    got = train(resumed, tr, va, cfg, resume=Resume(state.path, "cfg-a", load=True))
    assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in expected.history])
    assert got.best_epoch == expected.best_epoch and got.seconds_before > 0
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b), name

    # a finished state trains no further; another configuration's state is refused in one sentence
    again = _bclstm()
    assert len(train(again, tr, va, cfg, resume=Resume(state.path, "cfg-a", load=True)).history) == 5
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(ValueError, match="other settings.*delete it"):
        train(_bclstm(), tr, va, cfg, resume=Resume(state.path, "cfg-b", load=True))


def test_a_run_is_known_by_what_it_computes_not_by_its_progress_bars():
    import dataclasses

    from training.experiment import RunConfig, fingerprint
    from training.extract import ExtractConfig

    cfg = RunConfig(name="x", extract=ExtractConfig(progress=True, workers=1))
    quiet = dataclasses.replace(cfg, extract=ExtractConfig(progress=False, workers=2))
    assert fingerprint(cfg) == fingerprint(quiet)
    assert fingerprint(cfg) != fingerprint(dataclasses.replace(cfg, train=TrainConfig(lr=2e-4)))


def test_a_damaged_training_state_is_refused_in_one_sentence(tmp_path):
    from training.trainer import Resume

    (tmp_path / "resume.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable training state.*delete it to start over"):
        train(_bclstm(), synthetic(4, 0), synthetic(2, 1), TrainConfig(max_epochs=2),
              resume=Resume(tmp_path / "resume.pt", "cfg", load=True))  # fmt: skip
