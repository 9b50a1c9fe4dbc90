"""The checkpoint shipped in the package: loads, matches the bundled extractors, and
tracks the demo conversations end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

import models
from streamer.cli import BUNDLED_MODEL
from training.e2e import evaluate_recording

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def test_bundled_checkpoint_is_small_and_self_describing():
    assert BUNDLED_MODEL.is_file()
    assert BUNDLED_MODEL.stat().st_size <= 25 * 2**20
    ck = models.load(BUNDLED_MODEL, device="cpu")
    assert ck.model.name == "hbaf" and ck.model.context.mode == "online"
    assert ck.labels == ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
    assert ck.meta["dataset"] == "mixed" and ck.meta["validation_weighted_f1"] > 0.55
    assert ck.temperature > 0 and ck.pipeline.audio is None and ck.pipeline.audio_kind == "whisper"
    assert ck.pipeline.whisper.encoder == "tiny.en" and ck.pipeline.whisper.min_window_s == 15.0
    assert ck.pipeline.speaker_norm is not None and ck.pipeline.speaker_norm.dim == ck.model.config.audio_dim == 768
    assert set(ck.meta["channel_temperatures"]) == {"audio", "text"}


def test_bundled_pipeline_matches_the_bundled_extractors():
    from streamer import mpnet
    from streamer.features import FeatureExtractor

    ck = models.load(BUNDLED_MODEL, device="cpu")
    fx = FeatureExtractor(ck.pipeline, device="cpu")  # raises if the encoder widths differ
    assert ck.pipeline.text.encoder == mpnet.HUB_NAME  # resolves to the pip-installed parts, offline
    assert ck.pipeline.text.dim == 768
    # the fine-tuned words: a LoRA delta over the installed base, reading the line after two past turns
    assert ck.pipeline.text.adapter is not None and ck.pipeline.text.context_turns == 2
    assert fx.opensmile is None and fx.whisper_dim() == ck.pipeline.whisper.dim
    assert fx.text_encoder.dim == ck.pipeline.text.dim == ck.model.config.text_dim


def test_demos_replay_with_the_expected_segments_and_labels():
    results = [
        evaluate_recording(ROOT / "recordings" / f"{name}.flac", ROOT / "recordings" / f"{name}.jsonl")
        for name in ("demo-kitchen", "demo-office")
    ]
    for r in results:
        assert r["predicted"] == r["truth"] and r["missed"] == r["split"] == r["merged"] == 0
        assert r["wer"] < 0.3
    right = sum(t == p for r in results for t, p in zip(r["labels_true"], r["labels_pred"]))
    # Measured: 11 of 17 (docs/model-card.md). Chance with 7 classes is ~2.4 of 17; 6 leaves
    # room for thread-count jitter in the last digits while still failing a broken model.
    assert right >= 6


def test_latency_work_changes_no_utterance_and_no_label():
    """Speculation and the openSMILE/Whisper overlap only move work earlier or sideways: the
    real bundled models give the same utterances, transcripts and labels as the plain
    sequential pipeline (issue 6)."""
    import threading

    from streamer.audio import FileSource
    from streamer.cli import build_parser, build_pipeline
    from streamer.events import UtteranceEvent
    from streamer.pipeline import LivePipeline, PipelineConfig

    rec = ROOT / "recordings" / "demo-office.flac"
    built, _ = build_pipeline(build_parser().parse_args(["--replay", str(rec), "--no-ui"]))

    def events(speculate: bool, overlap: bool, block_ms: int = 100) -> list:
        built.processor.reset()
        config = PipelineConfig(speculate=speculate, overlap=overlap)
        pipe = LivePipeline(
            FileSource(rec, block_ms=block_ms, speed="max"), built.processor, built.segmenter_config, config
        )
        got: list = []
        pipe.run(got.append, threading.Event(), threading.Event())
        utts = [e for e in got if isinstance(e, UtteranceEvent)]
        assert all(e.error is None for e in utts)
        return [(e.start_s, e.end_s, e.text, e.label, round(e.confidence, 3)) for e in utts]

    sequential = events(False, False)
    assert len(sequential) == 8
    assert events(True, True) == sequential
    assert events(False, True, block_ms=30) == sequential
