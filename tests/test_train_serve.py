"""Train as you serve: training features equal the live tracker's for the same audio, the
Whisper encode policy, and one encoder pass shared by ASR and the audio features."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import models
from models.pipeline import AudioPipeline, FeaturePipeline, WhisperPipeline
from streamer.asr import FULL_WINDOW, EncodePolicy
from streamer.live_cut import live_cut, pad_like_live_cut
from streamer.segmenter import Segmenter, SegmenterConfig
from tests.conftest import LABELS, RAVDESS, read_16k, tiny

CLIP = RAVDESS / "Actor_01" / "03-01-05-02-01-01-01.flac"  # angry, strong intensity: ~1 s of silence around


def test_window_policy():
    p = EncodePolicy(min_window_s=15.0, pad_s=1.0)
    assert p.window_frames(16000 * 3) == 1500  # short: the floor
    assert p.window_frames(16000 * 20) == 2100  # long: utterance + 1 s
    assert p.window_frames(16000 * 40) == 3000  # never over Whisper's 30 s
    assert FULL_WINDOW.window_frames(16000) == 3000
    assert EncodePolicy(10.0, 0.0).window_frames(16000 * 10 + 1) % 2 == 0
    with pytest.raises(ValueError, match="min_window_s"):
        EncodePolicy(min_window_s=0.1)


def test_live_cut_is_what_the_segmenter_gives_live():
    clip = read_16k(CLIP)
    cut = live_cut(clip)
    assert len(cut) < len(clip) - 8000  # RAVDESS silences are gone
    seg = Segmenter(SegmenterConfig())
    padded = pad_like_live_cut(clip)
    utts = []
    for start in range(0, len(padded), 1600):  # 100 ms blocks, as a replay delivers them
        utts += seg.push(padded[start : start + 1600])
    utts += seg.flush()
    assert len(utts) == 1
    np.testing.assert_array_equal(utts[0].audio, cut)


def test_silence_only_clip_is_kept_whole():
    quiet = np.zeros(16000, np.float32)
    np.testing.assert_array_equal(live_cut(quiet), quiet)


class _Blocks:
    """A source of 100 ms blocks of one signal (what FileSource yields for a replay)."""

    channels = 1
    description = "test blocks"

    def __init__(self, audio):
        self.audio = audio

    def __iter__(self):
        for start in range(0, len(self.audio), 1600):
            yield self.audio[start : start + 1600]


@pytest.mark.slow
def test_training_features_equal_live_features_and_the_encoder_runs_once(tmp_path):
    from streamer.asr import Transcriber
    from streamer.features import FeatureExtractor
    from streamer.pipeline import LivePipeline, PipelineConfig, UtteranceProcessor
    from training.extract import _opensmile_job, load_utterance_audio, whisper_model

    # training side: the clip as the extraction computes it
    raw_train, err = _opensmile_job((str(CLIP), None, None, "ComParE_2016", True, None))
    assert err == ""
    policy = EncodePolicy()
    whisper_train = (
        whisper_model("tiny.en", policy.min_window_s, policy.pad_s)
        .encode(load_utterance_audio(CLIP, None, None, True))
        .pooled()
    )

    # live side: the same clip replayed through the real pipeline, features captured
    n_raw = len(raw_train)
    pipeline = FeaturePipeline(
        audio=AudioPipeline(mean=np.zeros(n_raw, np.float32), scale=np.ones(n_raw, np.float32)),
        whisper=WhisperPipeline(min_window_s=policy.min_window_s, pad_s=policy.pad_s),
    )
    asr = Transcriber("tiny.en", device="cpu", policy=policy)
    features = FeatureExtractor(pipeline, device="cpu", whisper_encoder=asr)
    assert features.shares_encoder and features.whisper is asr
    encodes = []
    real_encode = asr.encode
    asr.encode = lambda audio: encodes.append(len(audio)) or real_encode(audio)
    captured = []
    real_utterance = features.utterance

    def capture(*args, **kw):
        out = real_utterance(*args, **kw)
        captured.append(out[0])
        return out

    features.utterance = capture
    m = tiny("audio", input_dim=n_raw + 768)
    ck = models.Checkpoint(m, LABELS, pipeline)
    for speculate in (False, True):
        captured.clear()
        encodes.clear()
        live = LivePipeline(
            _Blocks(pad_like_live_cut(read_16k(CLIP))),
            UtteranceProcessor(ck, features, asr),
            config=PipelineConfig(speculate=speculate, overlap=speculate),
        )
        live.run(lambda e: None, threading.Event(), threading.Event())
        assert len(captured) == 1 and len(encodes) == 1  # one utterance, one encoder pass for ASR + features
        vec = captured[0]["audio"].numpy()
        np.testing.assert_allclose(vec[:n_raw], raw_train, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(vec[n_raw:], whisper_train, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_another_asr_model_gets_its_own_feature_encoder():
    from streamer.asr import Transcriber
    from streamer.features import FeatureExtractor

    asr = Transcriber("tiny.en", device="cpu", policy=FULL_WINDOW)  # same model, other window
    features = FeatureExtractor(FeaturePipeline(whisper=WhisperPipeline()), device="cpu", whisper_encoder=asr)
    assert not features.shares_encoder and features.whisper is not asr
    audio = live_cut(read_16k(CLIP))
    feats, ms = features.utterance(audio, "", encoded=asr.encode(audio))
    assert "whisper_features" in ms  # computed by its own encoder, under the checkpoint's policy
    np.testing.assert_allclose(feats["audio"].numpy(), features.whisper.encode(audio).pooled(), rtol=1e-6)


@pytest.mark.slow
def test_shared_encoder_transcribes_like_faster_whisper():
    from streamer.asr import Transcriber

    asr = Transcriber("tiny.en", device="cpu", policy=FULL_WINDOW)
    audio = live_cut(read_16k(CLIP))
    ours = asr.transcribe(audio, asr.encode(audio)).lower().strip(" .!")
    theirs = " ".join(s.text.strip() for s in asr._segments(audio, False)).lower().strip(" .!")
    assert ours == theirs == "kids are talking by the door"
    assert asr.transcribe(np.zeros(16000, np.float32)) == ""
    assert torch.is_tensor(torch.from_numpy(asr.encode(audio).pooled()))
