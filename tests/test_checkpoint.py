"""Loading anything that is not a good checkpoint fails with one clear sentence."""

import pickle

import numpy as np
import pytest
import torch

import models
from models import CheckpointError, FeaturePipeline
from models.pipeline import AudioPipeline, TextPipeline

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def small(tmp_path, **kw):
    m = models.build("text", input_dim=8, hidden=4)
    return m, models.save(tmp_path / "m.pt", m, LABELS, FeaturePipeline(), **kw)


def one_sentence(exc):
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        models.load(tmp_path / "nope.pt")
    assert "no checkpoint at" in one_sentence(e)


def test_garbage_and_truncated(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError) as e:
        models.load(tmp_path / "g.pt")
    assert "not a readable ser-live checkpoint" in one_sentence(e)
    _, path = small(tmp_path)
    data = path.read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        models.load(tmp_path / "t.pt")
    one_sentence(e)


def test_foreign_torch_file_and_pickle(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no .ser-live/checkpoint. marker"):
        models.load(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(CheckpointError) as e:
        models.load(tmp_path / "evil.pt")
    one_sentence(e)


def test_dimension_mismatch(tmp_path):
    m, path = small(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["input_dim"] = 9
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        models.load(tmp_path / "bad.pt")
    assert "weights do not match" in one_sentence(e)
    payload["config"]["input_dim"] = 8
    payload["labels"] = LABELS[:3]
    torch.save(payload, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match="3 labels"):
        models.load(tmp_path / "bad2.pt")
    payload["labels"] = LABELS
    payload["model"] = "nonexistent"
    torch.save(payload, tmp_path / "bad3.pt")
    with pytest.raises(CheckpointError, match="invalid model description"):
        models.load(tmp_path / "bad3.pt")


def test_pipeline_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    audio = AudioPipeline(
        mean=rng.normal(size=20).astype(np.float32), scale=np.ones(20, np.float32) * 2, selected=np.array([3, 1, 7])
    )
    pipe = FeaturePipeline(audio=audio, text=TextPipeline(encoder="/some/path", dim=8))
    m = models.build("text", input_dim=8, hidden=4)
    ck = models.load(models.save(tmp_path / "m.pt", m, LABELS, pipe, meta={"git": "abc"}))
    assert ck.pipeline.text == pipe.text
    np.testing.assert_array_equal(ck.pipeline.audio.selected, [3, 1, 7])
    raw = rng.normal(size=(2, 20)).astype(np.float32)
    np.testing.assert_allclose(ck.pipeline.audio.transform(raw), ((raw - audio.mean) / 2)[:, [3, 1, 7]], rtol=1e-6)
    with pytest.raises(ValueError, match="expected 20"):
        ck.pipeline.audio.transform(raw[:, :5])


def test_incomplete_checkpoints(tmp_path):
    _, path = small(tmp_path)
    payload = torch.load(path, weights_only=True)
    for key, message in (("state_dict", "no weights"), ("labels", "no label list")):
        broken = {k: v for k, v in payload.items() if k != key}
        torch.save(broken, tmp_path / f"no-{key}.pt")
        with pytest.raises(CheckpointError, match=message) as e:
            models.load(tmp_path / f"no-{key}.pt")
        one_sentence(e)
