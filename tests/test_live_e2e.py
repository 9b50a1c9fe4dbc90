"""The whole real pipeline (bundled Whisper tiny.en, openSMILE, MiniLM, a freshly
initialised HBAF whose audio pipeline is fitted on real clips) via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models import ContextConfig, FeaturePipeline, TextPipeline
from streamer.cli import main
from training.e2e import read_truth, word_error_rate

ROOT = Path(__file__).parent.parent
SHARED = ROOT.parent / "shared" / "data"
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from streamer.audio import load_audio
    from streamer.features import OpenSmileExtractor, fit_audio_pipeline
    from streamer.text_encoder import TextEncoder, bundled_text_encoder_path

    clips = sorted((SHARED / "ravdess" / "Actor_02").glob("*.flac"))[:16]
    if not clips:
        pytest.skip("shared data not available")
    smile = OpenSmileExtractor()
    raw = np.stack([smile(load_audio(c)) for c in clips])
    audio = fit_audio_pipeline(raw, np.arange(len(clips)) % 4, k=32)
    enc = TextEncoder()
    pipe = FeaturePipeline(audio=audio, text=TextPipeline(encoder=str(bundled_text_encoder_path()), dim=enc.dim))
    torch.manual_seed(0)
    model = models.build(
        "hbaf",
        context=ContextConfig("online", 8),
        audio_dim=32,
        text_dim=enc.dim,
        d_model=64,
        lstm_hidden=32,
        transformer_heads=4,
        transformer_ff=128,
        gru_hidden=64,
        ffn_dim=128,
    )
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    return models.save(path, model, LABELS, pipe)


def test_replay_demo_through_the_real_pipeline(checkpoint, tmp_path, capsys):
    rec = ROOT / "recordings" / "demo-office.flac"
    out = tmp_path / "events.jsonl"
    code = main(
        [
            "--replay",
            str(rec),
            "--speed",
            "max",
            "--no-ui",
            "--model",
            str(checkpoint),
            "--jsonl",
            str(out),
            "--export",
            "srt",
            "--export-path",
            str(tmp_path / "t.srt"),
            "--record",
            str(tmp_path / "r.flac"),
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    truth = read_truth(rec.with_suffix(".jsonl"))
    assert len(events) == len(truth)
    for e, t in zip(events, truth):
        assert abs(e["start_s"] - t.start_s) < 0.35 and abs(e["end_s"] - t.end_s) < 0.35
        assert e["label"] in LABELS and e["error"] is None
        # the bundled model's audio features come from the ASR's encoder pass: no separate audio stage
        assert {"asr", "text", "model", "total"} <= e["latency_ms"].keys() and "whisper_features" not in e["latency_ms"]
        assert set(e["channels"]) == {"audio", "text"} and e["channels"]["text"]["label"] in LABELS
        for channel in e["channels"].values():  # each channel's answer is the top of its own distribution
            assert max(channel["probs"], key=channel["probs"].get) == channel["label"]
            assert abs(sum(channel["probs"].values()) - 1) < 0.01
    wer = word_error_rate(" ".join(t.text for t in truth), " ".join(e["text"] for e in events))
    assert wer < 0.35, f"transcripts too far from the script (WER {wer:.2f})"
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(truth)
    assert (tmp_path / "t.srt").read_text().count("-->") == len(truth)
    from streamer.audio import load_audio

    assert abs(len(load_audio(tmp_path / "r.flac")) - len(load_audio(rec))) < 1600


def test_checkpoint_whose_pipeline_does_not_match_is_refused(checkpoint, tmp_path, capsys):
    ck = models.load(checkpoint)
    bad = FeaturePipeline(audio=ck.pipeline.audio, text=TextPipeline(encoder=ck.pipeline.text.encoder, dim=768))
    models.save(tmp_path / "bad.pt", ck.model, ck.labels, bad)
    code = main(
        ["--replay", str(ROOT / "recordings" / "demo-office.flac"), "--no-ui", "--model", str(tmp_path / "bad.pt")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ser-live: error:") and "768" in err and len(err.splitlines()) == 1


def test_silence_only_says_so(checkpoint, tmp_path, capsys):
    import soundfile as sf

    sf.write(tmp_path / "quiet.wav", np.zeros(16000 * 4, np.float32), 16000)
    code = main(["--replay", str(tmp_path / "quiet.wav"), "--speed", "max", "--no-ui", "--model", str(checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and err == [
        "ser-live: no speech found in the input; check the input level or lower --vad-aggressiveness"
    ]


@pytest.mark.parametrize("rate, channels", [(8000, 1), (48000, 2)])
def test_other_rates_and_stereo_are_resampled(checkpoint, tmp_path, capsys, rate, channels):
    import soundfile as sf
    from scipy.signal import resample_poly

    from streamer.audio import load_audio

    audio = load_audio(ROOT / "recordings" / "demo-office.flac")
    x = resample_poly(audio, rate, 16000).astype(np.float32)
    if channels == 2:
        x = np.stack([x, x * 0.9], axis=1)
    path = tmp_path / f"in-{rate}.wav"
    sf.write(path, x, rate)
    out = tmp_path / "e.jsonl"
    assert (
        main(["--replay", str(path), "--speed", "max", "--no-ui", "--model", str(checkpoint), "--jsonl", str(out)]) == 0
    )
    events = [json.loads(line) for line in out.read_text().splitlines()]
    truth = read_truth(ROOT / "recordings" / "demo-office.jsonl")
    assert len(events) == len(truth)
    assert all(abs(e["start_s"] - t.start_s) < 0.4 for e, t in zip(events, truth))
