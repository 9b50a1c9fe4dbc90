"""The Python API (issue 13): push interface on any input format, README example, API == CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.events import UtteranceEvent
from streamer.stream import EmotionStream

ROOT = Path(__file__).resolve().parents[1]
KITCHEN = ROOT / "recordings" / "demo-kitchen.flac"


class FakeProcessor:
    """Stands in for UtteranceProcessor: one event per utterance, from its bounds and audio."""

    def __init__(self) -> None:
        self.count = 0
        self.resets = 0

    def reset(self) -> None:
        self.count = 0
        self.resets += 1

    def __call__(self, utt) -> UtteranceEvent:
        self.count += 1
        rms = float(np.sqrt(np.mean(np.square(utt.audio, dtype=np.float64))))
        return UtteranceEvent(self.count - 1, round(utt.start_s, 3), round(utt.end_s, 3), utt.speaker, "", "x", rms)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(KITCHEN, end_s=12.0)  # three utterances of the demo, float32 16 kHz


def run(stream: EmotionStream, audio: np.ndarray, rate: int, sizes: list[int]) -> list[UtteranceEvent]:
    """Push ``audio`` in pieces cycling through ``sizes`` (samples), then flush."""
    events, start, k = [], 0, 0
    while start < len(audio):
        n = sizes[k % len(sizes)]
        events += stream.push(audio[start : start + n], rate)
        start, k = start + n, k + 1
    return events + stream.flush()


def bounds(events: list[UtteranceEvent]) -> list[tuple[float, float]]:
    return [(e.start_s, e.end_s) for e in events]


def test_push_gives_the_same_utterances_whatever_the_chunks_and_the_format(speech):
    whole = run(EmotionStream(FakeProcessor()), speech, 16000, [len(speech)])
    assert len(whole) >= 3
    chunked = run(EmotionStream(FakeProcessor()), speech, 16000, [1, 333, 4800, 17])
    assert chunked == whole  # same bounds and the very same audio (its rms)
    pcm = np.round(speech * 32767).astype(np.int16)
    from_int16 = run(EmotionStream(FakeProcessor()), pcm, 16000, [320])
    assert bounds(from_int16) == bounds(whole)
    assert [e.confidence for e in from_int16] == pytest.approx([e.confidence for e in whole], rel=1e-3)
    # 48 kHz stereo int16, 20 ms packets (WebRTC): downmixed, resampled, same utterances.
    hi = load_audio(KITCHEN, sample_rate_hz=48000, end_s=12.0)
    stereo = np.round(np.stack([hi, hi], axis=1) * 32767).astype(np.int16)
    telephony = run(EmotionStream(FakeProcessor()), stereo, 48000, [960])
    assert len(telephony) == len(whole)
    for (s1, e1), (s2, e2) in zip(bounds(telephony), bounds(whole)):
        assert abs(s1 - s2) <= 0.03 and abs(e1 - e2) <= 0.03  # one VAD frame


def test_split_channels_gives_one_speaker_per_channel(speech):
    quiet = np.zeros_like(speech)
    stereo = np.stack([speech, quiet], axis=1)  # only the left party talks
    events = run(EmotionStream(FakeProcessor(), split_channels=True), stereo, 16000, [1600])
    assert events and {e.speaker for e in events} == {"A"}
    swapped = run(EmotionStream(FakeProcessor(), split_channels=True), stereo[:, ::-1], 16000, [1600])
    assert {e.speaker for e in swapped} == {"B"} and bounds(swapped) == bounds(events)


def test_flush_continues_the_clock_and_reset_starts_a_new_conversation(speech):
    proc = FakeProcessor()
    stream = EmotionStream(proc)
    first = run(stream, speech, 16000, [8000])
    again = run(stream, speech, 16000, [8000])  # after flush: the same timeline goes on
    assert again[0].start_s >= len(speech) / 16000 and again[0].index == len(first)
    stream.reset()
    assert stream.time_s == 0.0 and proc.count == 0
    assert run(stream, speech, 16000, [8000]) == first


@pytest.mark.parametrize(
    ("samples", "rate", "words"),
    [
        (np.zeros((2, 3200), np.float32), 16000, "pass samples.T if yours are channels-first"),
        (np.zeros(100, np.uint8), 16000, "got dtype uint8"),
        (np.zeros((2, 2, 2), np.float32), 16000, "1-D (mono) or 2-D"),
        (np.zeros(100, np.float32), 0, "sample_rate must be a positive whole number"),
        (np.zeros(100, np.float32), 44.1, "got 44.1"),
    ],
)
def test_bad_input_is_one_sentence(samples, rate, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        EmotionStream(FakeProcessor()).push(samples, rate)


def test_a_conversation_keeps_its_rate_and_channels():
    stream = EmotionStream(FakeProcessor(), split_channels=True)
    stream.push(np.zeros((480, 2), np.float32), 48000)
    with pytest.raises(ValueError, match="sample_rate changed from 48000 to 16000 Hz"):
        stream.push(np.zeros((160, 2), np.float32), 16000)
    with pytest.raises(ValueError, match="channel count changed from 2 to 1"):
        stream.push(np.zeros(480, np.float32), 48000)
    stream.reset()
    stream.push(np.zeros(160, np.float32), 16000)  # a new conversation may differ


def test_nan_samples_are_silence(speech):
    broken = speech.copy()
    broken[:4000] = np.nan  # the first quarter second, before any speech
    assert bounds(run(EmotionStream(FakeProcessor()), broken, 16000, [1600])) == bounds(
        run(EmotionStream(FakeProcessor()), speech, 16000, [1600])
    )


def test_the_package_exports_the_api_without_loading_torch():
    code = "import streamer, sys; print(sorted(streamer.__all__)); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names, torch_loaded = out.splitlines()
    assert "EmotionTracker" in names and "SegmenterConfig" in names and torch_loaded == "False"
    import streamer

    for name in streamer.__all__:
        assert getattr(streamer, name) is not None


def test_tracker_options_are_checked_before_models_load():
    from streamer import EmotionTracker

    with pytest.raises(ValueError, match="compute_type 'float99' is not a CTranslate2 compute type"):
        EmotionTracker(compute_type="float99")
    with pytest.raises(ValueError, match="segmenter must be a SegmenterConfig"):
        EmotionTracker(segmenter={"end_silence_ms": 300})
    with pytest.raises(ValueError, match="text_runtime must be one of auto, onnx, torch, got 'tensorrt'"):
        EmotionTracker(text_runtime="tensorrt")
    with pytest.raises(ValueError, match="uncertain_below must be a confidence from 0 to below 1"):
        EmotionTracker(uncertain_below=-0.1)
    with pytest.raises(ValueError, match="asr_threads must be 0 .CTranslate2's default. or a number of threads"):
        EmotionTracker(asr_threads=1.5)


# -- real models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracker():
    from streamer import EmotionTracker
    from streamer.options import default_asr_threads

    threads = torch.get_num_threads()
    tracker = EmotionTracker()
    # Whisper's threads are torch's too (one OpenMP runtime): the tracker says so explicitly
    assert torch.get_num_threads() == default_asr_threads()
    yield tracker
    torch.set_num_threads(threads)  # the rest of the suite keeps its own


def comparable(event: UtteranceEvent) -> dict:
    d = event.to_dict()
    d.pop("latency_ms")  # wall-clock times differ from run to run
    return d


@pytest.mark.slow
def test_api_and_cli_give_identical_events(tracker, tmp_path):
    from streamer.cli import main
    from streamer.export import read_jsonl

    jsonl = tmp_path / "cli.jsonl"
    assert main(["--replay", str(KITCHEN), "--speed", "max", "--no-ui", "--jsonl", str(jsonl)]) == 0
    cli = read_jsonl(jsonl)
    api = list(tracker.track(KITCHEN))
    assert len(api) >= 5 and all(e.error is None for e in api)
    assert [comparable(e) for e in api] == [comparable(e) for e in cli]
    # The same audio as an array, and pushed in 20 ms packets: the same events again.
    audio = load_audio(KITCHEN)
    assert [comparable(e) for e in tracker.track(audio, 16000)] == [comparable(e) for e in api]
    tracker.reset()
    pushed = [e for i in range(0, len(audio), 320) for e in tracker.push(audio[i : i + 320], 16000)]
    assert [comparable(e) for e in pushed + tracker.flush()] == [comparable(e) for e in api]


@pytest.mark.slow
def test_api_and_cli_give_identical_events_one_speaker_per_channel(tracker, tmp_path):
    from streamer.cli import main
    from streamer.export import read_jsonl

    stereo = ROOT / "recordings" / "demo-office-stereo.flac"
    jsonl = tmp_path / "cli.jsonl"
    args = ["--replay", str(stereo), "--split-channels", "--speed", "max", "--no-ui", "--jsonl", str(jsonl)]
    assert main(args) == 0
    api = list(tracker.track(stereo, split_channels=True))
    assert {e.speaker for e in api} == {"A", "B"}
    assert [comparable(e) for e in api] == [comparable(e) for e in read_jsonl(jsonl)]


@pytest.mark.slow
def test_uncertain_below_gives_the_same_events_from_the_cli_and_the_api(tracker, tmp_path, monkeypatch):
    from streamer.cli import main
    from streamer.export import read_jsonl

    jsonl = tmp_path / "cli.jsonl"
    args = ["--replay", str(KITCHEN), "--speed", "max", "--no-ui", "--jsonl", str(jsonl), "--uncertain-below", "0.6"]
    assert main(args) == 0
    monkeypatch.setattr(tracker, "uncertain_below", 0.6)  # what EmotionTracker(uncertain_below=0.6) keeps
    api = list(tracker.track(KITCHEN))
    assert [comparable(e) for e in api] == [comparable(e) for e in read_jsonl(jsonl)]
    unsure = [e for e in api if e.label == "uncertain"]
    assert unsure and all(e.confidence < 0.6 and e.guess == max(e.probs, key=e.probs.get) for e in unsure)
    assert all(e.confidence >= 0.6 and e.guess is None for e in api if e.label != "uncertain")


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_as_written():
    code = readme_example()
    assert "EmotionTracker" in code and "push(" in code
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) >= 6, done.stdout  # the demo's utterances, then the pushed ones
    assert any("Did you remember" in line for line in lines)


def test_the_command_line_hands_its_model_options_to_the_tracker(monkeypatch, tmp_path):
    """``--asr-threads`` and ``--uncertain-below`` reach EmotionTracker, and ``asr_threads`` reaches Whisper."""
    import streamer.api
    import streamer.asr
    from streamer.cli import _tracker, build_parser
    from streamer.options import default_asr_threads

    class StopError(Exception):
        pass

    seen: dict = {}

    def whisper(*args, **kwargs):
        seen.update(kwargs)
        raise StopError

    monkeypatch.setattr(streamer.asr, "Transcriber", whisper)
    with pytest.raises(StopError):
        streamer.api.EmotionTracker(asr_threads=1)
    assert seen["cpu_threads"] == 1
    with pytest.raises(StopError):
        streamer.api.EmotionTracker()
    assert seen["cpu_threads"] == default_asr_threads() >= 1

    told: dict = {}
    monkeypatch.setattr(streamer.api, "EmotionTracker", lambda *a, **k: told.update(k))
    _tracker(build_parser().parse_args(["--asr-threads", "3", "--uncertain-below", "0.4"]), None)
    assert (told["asr_threads"], told["uncertain_below"]) == (3, 0.4)
