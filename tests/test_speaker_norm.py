"""Causal per-speaker normalisation: causality, streaming equals batch, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models.checkpoint import CheckpointError
from models.normalize import SpeakerNormalizer, fit_prior
from models.pipeline import FeaturePipeline, SpeakerNormPipeline, WhisperPipeline
from models.streaming import NORM_KEY, StreamingClassifier
from tests.conftest import LABELS, make_dialogues, tiny
from training.data.records import MELD_LABELS, DatasetSplit, Dialogue, Utterance
from training.experiment import norm_keys, to_dialogues
from training.extract import SplitFeatures


def prior(dim=10, weight=3.0):
    rng = np.random.default_rng(0)
    return SpeakerNormPipeline(
        rng.normal(size=dim).astype(np.float32), rng.uniform(0.5, 2, dim).astype(np.float32), weight
    )


def test_first_utterance_leans_on_the_prior_and_later_ones_on_the_speaker():
    cfg = prior(weight=4.0)
    norm = SpeakerNormalizer(cfg)
    x = np.full(10, 5.0, np.float32)
    z0 = norm.push("A", x)
    # one utterance of the speaker against four of prior: the mean is pulled 1/5 of the way to x
    mean = (x + 4 * cfg.prior_mean) / 5
    var = 4 * cfg.prior_var / 5
    np.testing.assert_allclose(z0, (x - mean) / np.sqrt(var), rtol=1e-5)
    for _ in range(500):
        z = norm.push("A", x + np.random.default_rng(1).normal(size=10).astype(np.float32))
    assert np.abs(z).max() < 5  # a constant offset of the voice is gone once the speaker is known
    # another speaker starts from the prior again
    np.testing.assert_allclose(norm.push("B", x), z0, rtol=1e-5)
    norm.reset()
    np.testing.assert_allclose(norm.push("A", x), z0, rtol=1e-5)


def test_normalisation_is_causal():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(12, 10)).astype(np.float32)
    keys = ["A", "B", None] * 4
    a, b = SpeakerNormalizer(prior()), SpeakerNormalizer(prior())
    changed = xs.copy()
    changed[7:] += 100.0  # change utterance t+1 = 7 onwards
    out_a = [a.push(k, x) for k, x in zip(keys, xs)]
    out_b = [b.push(k, x) for k, x in zip(keys, changed)]
    for t in range(7):
        np.testing.assert_array_equal(out_a[t], out_b[t])
    assert not np.allclose(out_a[7], out_b[7])


def test_peek_does_not_count_and_wrong_width_is_refused():
    norm = SpeakerNormalizer(prior())
    x = np.ones(10, np.float32)
    np.testing.assert_array_equal(norm.peek("A", x), norm.peek("A", x))
    np.testing.assert_array_equal(norm.peek("A", x), norm.push("A", x))
    with pytest.raises(ValueError, match="10-d"):
        norm.push("A", np.ones(3, np.float32))


def test_memory_is_bounded_by_speakers():
    norm = SpeakerNormalizer(prior(), max_speakers=4)
    for k in range(100):
        norm.push(f"spk{k}", np.ones(10, np.float32))
    assert len(norm._stats) == 4


def test_prior_fit_and_validation():
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(500, 4))
    p = fit_prior(x, 2.0)
    np.testing.assert_allclose(p.prior_mean, 2.0, atol=0.4)
    np.testing.assert_allclose(p.prior_var, 9.0, rtol=0.2)
    with pytest.raises(ValueError, match="positive"):
        SpeakerNormPipeline(np.zeros(2, np.float32), np.array([1.0, 0.0], np.float32))
    with pytest.raises(ValueError, match="two"):
        fit_prior(np.ones((1, 4)))


def _split_and_feats(dialogues, dim=10):
    """A DatasetSplit and SplitFeatures holding ``dialogues``' audio vectors as Whisper features."""
    dlgs, rows = [], []
    for i, d in enumerate(dialogues):
        utts = []
        for t, u in enumerate(d):
            utts.append(Utterance(f"d{i}", t, "AB"[u["speaker"]], text="x", label=MELD_LABELS[t % 7]))
            rows.append(u["audio"].numpy())
        dlgs.append(Dialogue(f"d{i}", tuple(utts)))
    n = len(rows)
    feats = SplitFeatures(
        keys=[str(k) for k in range(n)],
        audio=None,
        audio_ok=np.ones(n, bool),
        text=np.stack([u["text"].numpy() for d in dialogues for u in d]),
        texts=["x"] * n,
        whisper=np.stack(rows),
    )
    return DatasetSplit("test", "train", tuple(dlgs), MELD_LABELS), feats


@pytest.mark.parametrize("mode", ["speaker", "session"])
def test_streaming_equals_batch_with_normalisation(mode):
    m = tiny("hbaf", "online", window=3)
    dialogues = make_dialogues((7, 4), seed=5)
    split, feats = _split_and_feats(dialogues)
    pipeline = FeaturePipeline(text=models.TextPipeline(dim=8), whisper=WhisperPipeline(dim=10), speaker_norm=prior())
    batch_dialogues = to_dialogues(split, feats, pipeline, list(MELD_LABELS), norm_mode=mode)
    for d_raw, d_feat, d in zip(dialogues, batch_dialogues, split.dialogues):
        expected = torch.softmax(m(models.batch.collate([d_feat.utterances])).logits[0], -1)
        stream = StreamingClassifier(m, speaker_norm=pipeline.speaker_norm)
        keys = norm_keys(d.id, [u.speaker for u in d.utterances], mode)
        got = torch.stack([stream.push({**u, NORM_KEY: k}) for u, k in zip(d_raw, keys)])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_mixed_mode_uses_both_keyings_reproducibly():
    picks = {tuple(norm_keys(f"dlg{i}", ["A", "B"], "mixed")) for i in range(40)}
    assert picks == {("A", "B"), (None, None)}
    assert norm_keys("dlg3", ["A", "B"], "mixed") == norm_keys("dlg3", ["A", "B"], "mixed")


def test_a_failed_push_does_not_count_in_the_statistics():
    m = tiny("hbaf", "online", window=3)
    d = make_dialogues((3,), seed=1)[0]
    a = StreamingClassifier(m, speaker_norm=prior())
    b = StreamingClassifier(m, speaker_norm=prior())
    a.push(d[0])
    with pytest.raises(ValueError):
        a.push({"audio": d[1]["audio"], "speaker": 0})  # no text: the model refuses it
    b.push(d[0])
    torch.testing.assert_close(a.push(d[2]), b.push(d[2]))


def test_checkpoint_round_trip_with_whisper_and_normalisation(tmp_path):
    m = tiny("hbaf")
    pipeline = FeaturePipeline(
        text=models.TextPipeline(dim=8), whisper=WhisperPipeline(min_window_s=12.0, dim=10), speaker_norm=prior()
    )
    path = models.save(tmp_path / "m.pt", m, LABELS, pipeline)
    ck = models.load(path, device="cpu")
    assert ck.pipeline.whisper == pipeline.whisper and ck.pipeline.audio_kind == "whisper"
    np.testing.assert_array_equal(ck.pipeline.speaker_norm.prior_var, pipeline.speaker_norm.prior_var)
    assert ck.pipeline.speaker_norm.prior_weight == 3.0


def test_version_1_checkpoints_still_load_and_unknown_versions_are_named(tmp_path):
    m = tiny("hbaf")
    path = models.save(tmp_path / "m.pt", m, LABELS, FeaturePipeline(text=models.TextPipeline(dim=8)))
    payload = torch.load(path, weights_only=True)
    payload["version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    ck = models.load(tmp_path / "v1.pt", device="cpu")
    assert ck.pipeline.whisper is None and ck.pipeline.speaker_norm is None
    payload["version"] = 7
    torch.save(payload, tmp_path / "v7.pt")
    with pytest.raises(CheckpointError, match="format version 7"):
        models.load(tmp_path / "v7.pt")


def test_per_channel_answers_leave_the_stream_unchanged():
    m = tiny("hbaf", "online", window=3)
    d = make_dialogues((5,), seed=4)[0]
    plain, explained = StreamingClassifier(m), StreamingClassifier(m, channel_temperatures={"audio": 2.0})
    for u in d:
        p = plain.push(u)
        torch.testing.assert_close(explained.push(u, per_channel=True), p)
        ch = explained.last_channels
        assert set(ch) == {"audio", "text"}
        for probs in ch.values():
            torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
        assert not torch.allclose(ch["audio"], ch["text"])
    # the audio channel's temperature flattens its answer
    hot = StreamingClassifier(m, channel_temperatures={"audio": 50.0})
    hot.push(d[0], per_channel=True)
    assert float(hot.last_channels["audio"].max()) < 1.0 / 7 + 0.05
    text_only = StreamingClassifier(tiny("text"))
    text_only.push({"text": d[0]["text"]}, per_channel=True)
    assert text_only.last_channels == {}  # one channel: nothing to tell apart


@pytest.mark.parametrize("name", ["hbaf", "bcaf"])
def test_channel_answers_of_the_batched_pass_equal_each_window_run_alone(name):
    """The fused answer and both channels' come from one forward pass over three windows: each
    equals that window run on its own (nothing crosses between the windows of the batch)."""
    from models.batch import collate

    m = tiny(name, "online", window=3)
    d = make_dialogues((4,), seed=7)[0]
    stream = StreamingClassifier(m, 1.5, channel_temperatures={"audio": 2.0, "text": 0.7})
    seen = []
    for u in d:
        fused = stream.push(u, per_channel=True)
        seen.append(u)
        window = [{**x, "audio_present": True, "text_present": True} for x in seen[-3:]]

        def alone(w, t):
            return torch.softmax(m.forward_context(collate([w]).masked()).logits[0, -1] / t, -1)

        with torch.inference_mode():
            torch.testing.assert_close(fused, alone(window, 1.5), atol=1e-5, rtol=1e-5)
            for keep, hide, t in (("audio", "text", 2.0), ("text", "audio", 0.7)):
                only = {**window[-1], hide: torch.zeros_like(window[-1][hide]), f"{hide}_present": False}
                want = alone([*window[:-1], only], t)
                torch.testing.assert_close(stream.last_channels[keep], want, atol=1e-5, rtol=1e-5)
