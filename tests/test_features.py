"""Feature extractors on the real bundled MiniLM and real speech (repo fixtures, shared RAVDESS)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from models import ContextConfig, FeaturePipeline, FramePipeline, StreamingClassifier, TextPipeline, build, collate
from models.pipeline import AudioPipeline
from streamer.features import FeatureExtractor, OpenSmileExtractor, fit_audio_pipeline, raw_audio_features
from streamer.frames import FeatureError, LogMelExtractor, _deltas, _mel_filters
from streamer.text_encoder import BUNDLED_TEXT_ENCODER, TextEncoder, bundled_text_encoder_path, normalize_text
from tests.conftest import FIXTURES, RAVDESS
from tests.conftest import read_16k as read


@pytest.fixture(scope="module")
def smile():
    return OpenSmileExtractor()


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(device="cpu")


@pytest.fixture(scope="module")
def speech():
    return read(FIXTURES / "speech_b.flac")


# --------------------------------------------------------------------------- text normalisation


def test_normalize_text_fixes_meld_typography():
    assert normalize_text("don’t “Aww Pheebs” me") == 'don\'t "Aww Pheebs" me'
    assert normalize_text("So… So…here’s\u00a0a key") == "So... So...here's a key"
    assert normalize_text("have to—you-you\u200b go\t\n now  ") == "have to-you-you go now"
    assert normalize_text("\x92Kay, Nestlé") == "'Kay, Nestlé"
    assert normalize_text("   ") == ""


# --------------------------------------------------------------------------- openSMILE


def test_opensmile_gives_6373_finite_functionals(smile, speech):
    out = smile(speech)
    assert smile.dim == 6373 and out.shape == (6373,) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() > 0


@pytest.mark.skipif(not RAVDESS.is_dir(), reason="shared data not available")
def test_opensmile_on_ravdess_separates_clips(smile):
    a = smile(read(RAVDESS / "Actor_01" / "03-01-01-01-01-01-01.flac"))
    b = smile(read(RAVDESS / "Actor_01" / "03-01-05-02-01-01-01.flac"))  # angry, strong
    assert np.isfinite(a).all() and np.isfinite(b).all() and not np.allclose(a, b)


@pytest.mark.parametrize("n", [0, 1, 160, 1500])
def test_opensmile_pads_short_audio_instead_of_nan(smile, n):
    out = smile(0.05 * np.random.default_rng(n).standard_normal(n).astype(np.float32))
    assert out.shape == (6373,) and np.isfinite(out).all()


def test_opensmile_replaces_non_finite_output_and_logs(smile, speech, monkeypatch, caplog):
    values = np.ones((1, smile.dim), np.float32)
    values[0, [3, 10]] = [np.nan, np.inf]
    monkeypatch.setattr(smile._smile, "process_signal", lambda x, sr: pd.DataFrame(values))
    with caplog.at_level(logging.WARNING, logger="streamer.features"):
        out = smile(speech)
    assert out[3] == 0 and out[10] == 0 and out[0] == 1 and "non-finite" in caplog.text


def test_opensmile_rejects_bad_settings_without_crashing():
    with pytest.raises(FeatureError, match="unknown openSMILE feature set"):
        OpenSmileExtractor("ComParE_2099")
    with pytest.raises(FeatureError, match="Functionals"):
        OpenSmileExtractor(feature_level="Nope")  # would segfault inside opensmile


@pytest.mark.parametrize(
    "audio", [np.zeros((2, 800), np.float32), np.zeros(800, np.int16), np.array([0.0, np.nan] * 400)]
)
def test_bad_audio_is_a_clear_error(smile, audio):
    with pytest.raises(FeatureError, match="audio"):
        smile(audio)


def test_raw_audio_features_stacks_rows(smile, speech):
    raw = raw_audio_features([speech, speech[:8000]], smile)
    assert raw.shape == (2, 6373) and np.allclose(raw[0], smile(speech))


# --------------------------------------------------------------------------- SVM selection


def synthetic(n=400, f=300, informative=(7, 42, 150, 299), seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    # wildly different column scales, like openSMILE's; one constant column
    scale = rng.lognormal(0, 4, f)
    raw = (rng.standard_normal((n, f)) + rng.normal(0, 100, f)) * scale
    for j, col in enumerate(informative):
        raw[:, col] += (labels == j % 3) * 1.5 * raw[:, col].std()
    raw[:, 5] = 3.0
    return raw, labels  # float64: float32 would quantise the tiny-scale columns below 1e-3


def test_fit_audio_pipeline_recovers_informative_features():
    raw, labels = synthetic()
    p = fit_audio_pipeline(raw, labels, k=8, seed=0)
    assert set(p.selected) >= {7, 42, 150, 299} and p.dim == 8 and 5 not in p.selected
    assert p.scale[5] == 1.0 and np.all(np.diff(p.selected) > 0)
    z = p.transform(raw)
    assert z.shape == (400, 8) and z.dtype == np.float32
    assert np.allclose(z.mean(0), 0, atol=1e-3) and np.allclose(z.std(0), 1, atol=1e-3)
    again = fit_audio_pipeline(raw, labels, k=8, seed=0)
    assert np.array_equal(again.selected, p.selected) and np.array_equal(again.mean, p.mean)


def test_fit_audio_pipeline_round_trips_through_the_checkpoint_dict():
    raw, labels = synthetic(n=120, f=40, informative=(1, 2))
    p = fit_audio_pipeline(raw, labels, k=100)  # k larger than the features: keep all
    assert p.dim == 40
    back = FeaturePipeline.from_dict(FeaturePipeline(audio=p).to_dict()).audio
    assert np.array_equal(back.transform(raw), p.transform(raw))


@pytest.mark.parametrize(
    "raw,labels,match",
    [
        (np.zeros((4, 3)), np.zeros(4), "two classes"),
        (np.full((4, 3), np.nan), np.array([0, 1, 0, 1]), "NaN"),
        (np.zeros((4, 3)), np.array([0, 1]), "labels"),
    ],
)
def test_fit_audio_pipeline_bad_input(raw, labels, match):
    with pytest.raises(FeatureError, match=match):
        fit_audio_pipeline(raw, labels)


# --------------------------------------------------------------------------- text encoder


def test_bundled_encoder_is_minilm(encoder):
    assert (bundled_text_encoder_path() / "model.safetensors").is_file()
    assert encoder.dim == 384 and encoder.name == BUNDLED_TEXT_ENCODER
    assert encoder.pipeline == TextPipeline()  # what a checkpoint records by default


def test_encode_is_masked_mean_of_last_four_layers(encoder):
    text = "Kids are talking by the door."
    batch = encoder.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch, output_hidden_states=True).hidden_states
    assert len(hidden) == 7  # embeddings + 6 layers
    manual = torch.stack(hidden[-4:]).mean(0)[0].mean(0).numpy()
    # batched with a longer text, so padding and the attention mask are exercised
    out = encoder.encode([text, "a much longer sentence that forces padding of the first one, surely"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], manual, atol=1e-5)


def test_encode_keeps_input_order_across_sorted_batches(encoder):
    texts = ["a long sentence about nothing in particular at all", "hi", "", "medium length text"]
    together = encoder.encode(texts, batch_size=2)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_empty_text_and_normalisation(encoder):
    empty = encoder.encode([""])[0]
    assert np.isfinite(empty).all() and np.linalg.norm(empty) > 0
    np.testing.assert_allclose(encoder.encode(["don’t"]), encoder.encode(["don't"]), atol=1e-6)
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(FeatureError, match="list of strings"):
        encoder.encode("just a string")


def test_encode_tokens_shapes_and_mean(encoder):
    texts = ["Dogs are sitting by the door.", ""]
    tokens = encoder.encode_tokens(texts)
    lengths = [len(encoder.tokenizer(normalize_text(t))["input_ids"]) for t in texts]
    assert [t.shape for t in tokens] == [(lengths[0], 384), (2, 384)]  # "" is [CLS] [SEP]
    np.testing.assert_allclose(np.stack([t.mean(0) for t in tokens]), encoder.encode(texts), atol=1e-5)
    long = encoder.encode_tokens(["word " * 500])[0]
    assert long.shape == (128, 384)  # max_tokens truncation


def test_missing_encoder_is_a_one_sentence_error(tmp_path):
    for name in (str(tmp_path / "no-such-encoder"), "no-such-org/no-such-encoder"):
        with pytest.raises(FeatureError, match="not found locally.*never downloads") as info:
            TextEncoder(name)
        assert "\n" not in str(info.value)


def test_encoder_hub_name_and_path_resolve_to_the_bundle():
    bundle = str(bundled_text_encoder_path())
    assert TextEncoder._resolve(BUNDLED_TEXT_ENCODER) == bundle
    assert TextEncoder._resolve(bundle) == bundle


# --------------------------------------------------------------------------- log-mel


def test_logmel_shapes_and_normalisation(speech):
    ext = LogMelExtractor()
    out = ext(speech)
    frames = 1 + (len(speech) - 400) // 160
    assert out.shape == (frames, 120) and out.dtype == np.float32 and ext.dim == 120
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-3)
    # per-utterance normalisation and the peak-relative floor remove the gain
    np.testing.assert_allclose(ext(0.1 * speech), out, atol=1e-3)
    assert np.abs(ext(np.zeros(8000, np.float32))).max() < 1e-5  # digital silence: ~zeros, no NaN
    assert LogMelExtractor(n_mels=64, deltas=False)(speech).shape == (frames, 64)
    assert ext(np.zeros(100, np.float32)).shape == (1, 120)
    capped = LogMelExtractor.from_pipeline(FramePipeline(max_frames=50))
    np.testing.assert_array_equal(capped(speech).shape, (50, 120))


def test_logmel_blocks():
    filters = _mel_filters(40, 512, 16000)
    assert filters.shape == (40, 257) and (filters.sum(1) > 0).all()  # no empty band
    centres = filters.argmax(1)
    assert np.all(np.diff(centres) >= 0)
    ramp = np.arange(10, dtype=np.float64)[:, None] * 3.0
    np.testing.assert_allclose(_deltas(ramp)[2:-2], 3.0)
    with pytest.raises(FeatureError):
        LogMelExtractor(hop_ms=0)


# --------------------------------------------------------------------------- per utterance


def fake_audio_pipeline(k=512) -> AudioPipeline:
    return AudioPipeline(
        mean=np.zeros(6373, np.float32), scale=np.ones(6373, np.float32), selected=np.arange(0, 6373, 12)[:k]
    )


def test_feature_extractor_emits_exactly_what_the_pipeline_asks(encoder, speech):
    full = FeaturePipeline(audio=fake_audio_pipeline(), text=TextPipeline(), frames=FramePipeline(), tokens=True)
    feats, ms = FeatureExtractor(full, text_encoder=encoder).utterance(speech, "I really cannot believe it.", 1)
    assert set(feats) == {"audio", "text", "frames", "tokens", "speaker"}
    assert feats["audio"].shape == (512,) and feats["text"].shape == (384,) and feats["frames"].shape[1] == 120
    assert feats["tokens"].shape[1] == 384 and feats["speaker"] == 1
    assert all(v.dtype == torch.float32 for k, v in feats.items() if k != "speaker")
    np.testing.assert_allclose(feats["text"].numpy(), encoder.encode(["I really cannot believe it."])[0], atol=1e-5)
    assert set(ms) == {"opensmile", "text", "frames"} and all(v >= 0 for v in ms.values())

    text_only = FeatureExtractor(FeaturePipeline(text=TextPipeline()), text_encoder=encoder)
    feats, ms = text_only.utterance(speech, "")
    assert set(feats) == {"text"} and set(ms) == {"text"} and text_only.opensmile is None

    mcfn = FeatureExtractor(FeaturePipeline(frames=FramePipeline(n_mels=20, deltas=False), tokens=True), encoder)
    feats, _ = mcfn.utterance(speech, "hello")
    assert set(feats) == {"frames", "tokens"} and feats["frames"].shape[1] == 20


def test_audio_part_computed_ahead_gives_the_same_features(encoder, speech):
    """The live pipeline runs audio_part while Whisper transcribes; the result must not change."""
    ext = FeatureExtractor(
        FeaturePipeline(audio=fake_audio_pipeline(), text=TextPipeline(), frames=FramePipeline()), encoder
    )
    ahead = ext.audio_part(speech)
    assert set(ahead[0]) == {"audio", "frames"} and set(ahead[1]) == {"opensmile", "frames"}
    together, _ = ext.utterance(speech, "so what now", 0)
    split, ms = ext.utterance(speech, "so what now", 0, audio_part=ahead)
    assert set(split) == set(together) and set(ms) == {"opensmile", "frames", "text"}
    for key in ("audio", "frames", "text"):
        torch.testing.assert_close(split[key], together[key], rtol=0, atol=0)
    assert "text" not in ahead[0]  # the precomputed part is not modified


def test_features_feed_a_streaming_model(encoder, speech):
    pipe = FeaturePipeline(audio=fake_audio_pipeline(16), text=TextPipeline())
    extractor = FeatureExtractor(pipe, text_encoder=encoder)
    utts = [extractor.utterance(speech[: n * 8000], text, i % 2)[0] for i, (n, text) in enumerate([(4, "hi"), (2, "")])]
    assert collate([utts]).audio.shape == (1, 2, 16)
    torch.manual_seed(0)
    model = build("bclstm", context=ContextConfig("online", 4), audio_dim=16, text_dim=384, num_classes=3)
    stream = StreamingClassifier(model)
    probs = [stream.push(u) for u in utts]
    assert all(p.shape == (3,) and torch.isfinite(p).all() for p in probs)


def test_mismatched_pipelines_are_refused(encoder):
    with pytest.raises(FeatureError, match="768") as info:
        FeatureExtractor(FeaturePipeline(text=TextPipeline(dim=768)), text_encoder=encoder)
    assert "\n" not in str(info.value)
    short = AudioPipeline(mean=np.zeros(88, np.float32), scale=np.ones(88, np.float32))
    with pytest.raises(FeatureError, match="88 features"):
        FeatureExtractor(FeaturePipeline(audio=short))
    with pytest.raises(FeatureError, match="16 kHz"):
        FeatureExtractor(FeaturePipeline(audio=AudioPipeline(sample_rate_hz=8000)))


def test_commonsense_must_be_provided_when_the_pipeline_uses_it(encoder, speech):
    ext = FeatureExtractor(FeaturePipeline(text=TextPipeline(), commonsense=True), text_encoder=encoder)
    with pytest.raises(FeatureError, match="commonsense"):
        ext.utterance(speech, "hi")
    feats, _ = ext.utterance(speech, "hi", commonsense=np.ones((3, 8)))
    assert feats["commonsense"].shape == (3, 8) and feats["commonsense"].dtype == torch.float32
