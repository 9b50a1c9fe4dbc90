"""faster-whisper wrapper on the bundled tiny.en and real speech (repo fixtures, shared RAVDESS, espeak-ng)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from streamer.asr import ASRError, Transcriber, bundled_whisper_path, resolve_whisper_device
from tests.conftest import FIXTURES, RAVDESS
from tests.conftest import read_16k as read


@pytest.fixture(scope="module")
def whisper():
    return Transcriber(device="cpu")


def test_bundled_model_is_tiny_en(whisper):
    assert (bundled_whisper_path() / "model.bin").is_file()
    assert whisper.device == "cpu" and whisper.compute_type == "int8"
    assert not whisper.model.model.is_multilingual


def test_transcribes_repo_fixture(whisper):
    text = whisper.transcribe(read(FIXTURES / "speech_a.flac")).lower()
    assert "weather" in text and "harbo" in text and text == text.strip()


@pytest.mark.skipif(not RAVDESS.is_dir(), reason="shared data not available")
@pytest.mark.parametrize("name", ["03-01-01-01-01-01-01.flac", "03-01-05-02-02-01-01.flac"])
def test_transcribes_ravdess(whisper, name):
    # sentence 01 "Kids are talking by the door", 02 "Dogs are sitting by the door" (neutral, then angry)
    text = whisper.transcribe(read(RAVDESS / "Actor_01" / name)).lower()
    assert "door" in text and ("kids" in text) == name.endswith("01-01-01.flac")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_transcribes_espeak_sentence(whisper):
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", "Please open the window before the meeting starts."],
        capture_output=True,
        check=True,
    ).stdout
    import io

    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = resample_poly(audio, 16000, rate).astype(np.float32)
    text = whisper.transcribe(audio).lower()
    assert "window" in text and "meeting" in text


def test_decode_writes_the_words_without_timestamp_tokens(whisper, monkeypatch):
    """The in-window decode is prompted with <|notimestamps|> (fewer tokens, same words), the
    prompt training's cached transcripts are keyed by (streamer.asr.DECODE_PROMPT)."""
    real, calls = whisper.model.model, []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def generate(self, states, prompts, **kwargs):
            out = real.generate(states, prompts, **kwargs)
            calls.append((prompts, out))
            return out

    monkeypatch.setattr(whisper.model, "model", Spy())
    text = whisper.transcribe(read(FIXTURES / "speech_a.flac"))
    [(prompts, out)] = calls
    tok = whisper._tokenizer
    assert prompts[0][-1] == tok.no_timestamps
    assert not any(t >= tok.timestamp_begin for t in out[0].sequences_ids[0])
    assert "weather" in text.lower()


def test_word_timings(whisper):
    audio = read(FIXTURES / "speech_a.flac")
    text, words = whisper.transcribe_words(audio)
    assert "weather" in text.lower() and len(words) >= 8
    assert "weather" in [w.word.lower().strip(".,") for w in words]
    starts = [w.start_s for w in words]
    assert starts == sorted(starts) and all(0 <= w.start_s <= w.end_s <= len(audio) / 16000 + 0.1 for w in words)
    assert all(0 <= w.probability <= 1 for w in words)


def test_silence_and_empty_give_empty_text(whisper):
    assert whisper.transcribe(np.zeros(0, np.float32)) == ""
    assert whisper.transcribe(np.zeros(16000, np.float32)) == ""
    noise = (np.random.default_rng(0).standard_normal(48000) * 0.01).astype(np.float32)
    assert whisper.transcribe(noise) == ""  # Whisper writes " . . . ." for it: no words


def test_bad_audio_is_a_clear_error(whisper):
    with pytest.raises(ASRError, match="mono float"):
        whisper.transcribe(np.zeros((2, 16000), np.float32))
    with pytest.raises(ASRError, match="mono float"):
        whisper.transcribe(np.zeros(16000, np.int16))


def test_missing_models_are_one_sentence_errors(tmp_path):
    with pytest.raises(ASRError, match="does not exist"):
        Transcriber(str(tmp_path / "no-such-model"))
    with pytest.raises(ASRError, match="no model.bin"):
        Transcriber(str(tmp_path))
    with pytest.raises(ASRError, match="never downloads") as info:
        Transcriber("large-v9")  # not in the local HF cache
    assert "\n" not in str(info.value)


def test_devices_and_settings():
    assert resolve_whisper_device("cpu") == ("cpu", 0)
    assert resolve_whisper_device("auto")[0] in ("cpu", "cuda")
    for bad in ("tpu", "cpu:1", "cuda:x"):
        with pytest.raises(ASRError, match="unknown ASR device"):
            resolve_whisper_device(bad)
    if resolve_whisper_device("auto")[0] == "cpu":
        with pytest.raises(ASRError, match="no GPU|sees 0 GPU"):
            resolve_whisper_device("cuda")
    with pytest.raises(ASRError, match="beam_size"):
        Transcriber(beam_size=0)
    with pytest.raises(ASRError, match="English-only"):
        Transcriber(language="de", device="cpu")
    with pytest.raises(ASRError) as info:  # was "could not be loaded from local files"
        Transcriber(device="cpu", compute_type="float16")
    assert "'float16' does not run on this cpu" in str(info.value) and "--compute-type auto" in str(info.value)
    assert "int8" in str(info.value) and "local files" not in str(info.value)


def test_building_whisper_leaves_torchs_threads_as_they_were():
    """CTranslate2 sets the building thread's OpenMP count, which torch shares: a training run that
    built Whisper halfway trained on another count than the same run with a warm cache."""
    import torch

    for torch_threads, whisper_threads in ((1, 0), (2, 1)):
        torch.set_num_threads(torch_threads)
        Transcriber(device="cpu", cpu_threads=whisper_threads)
        assert torch.get_num_threads() == torch_threads


class _NoCublasWhisper:
    """faster-whisper's model as on a GPU machine without the CUDA libraries CTranslate2 needs:
    it loads (on the CPU here), and its first computation on "cuda" fails as CTranslate2 does."""

    made: list[str] = []
    real = __import__("faster_whisper").WhisperModel

    def __init__(self, source, device="cpu", **kw):
        type(self).made.append(device)
        self._model = self.real(source, device="cpu", **{**kw, "compute_type": "int8"})
        self._gpu = device == "cuda"

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode(self, features):
        if self._gpu:
            raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
        return self._model.encode(features)


def test_a_gpu_without_its_cuda_libraries_falls_back_to_the_cpu_or_says_so(monkeypatch, caplog):
    import ctranslate2
    import faster_whisper

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    cpu_types = ctranslate2.get_supported_compute_types("cpu")
    gpu_types = {"float16", "int8_float16", "int8", "float32"}  # what CTranslate2 reported on the H200
    monkeypatch.setattr(
        ctranslate2, "get_supported_compute_types", lambda device, index=0: gpu_types if device == "cuda" else cpu_types
    )
    monkeypatch.setattr(faster_whisper, "WhisperModel", _NoCublasWhisper)
    _NoCublasWhisper.made.clear()
    with caplog.at_level("WARNING", logger="streamer.asr"):
        asr = Transcriber(device="auto")
    assert _NoCublasWhisper.made == ["cuda", "cpu"]  # tried on the GPU, reloaded on the CPU once
    assert asr.device == "cpu" and asr.compute_type == "int8"
    assert "libcublas.so.12" in caplog.text and "transcribes on the CPU" in caplog.text
    assert "weather" in asr.transcribe(read(FIXTURES / "speech_a.flac")).lower()
    with pytest.raises(ASRError) as info:
        Transcriber(device="cuda")
    message = str(info.value)
    assert "libcublas.so.12" in message and "--compute-device cpu" in message and "\n" not in message
