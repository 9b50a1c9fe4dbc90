"""Lines spoken by the synthetic voices of Debian's speech engines, cached on disk.

Words-only conversations (the emotion is in the words, the voice is flat) need many
voices that read many different lines: without them the audio branch, trained on
acted speech with two sentences (RAVDESS) or ten (EmoDB), reads every change of
wording, length and rhythm as an emotion. Three engines are used, each through its
command-line tool: espeak-ng (formant synthesis, many variants), flite (CMU's
clustergen/diphone voices, closer to natural speech) and festival (diphone). Which
voices train and which only evaluate is decided by :data:`VOICE_SPLITS`: the held-out
engines (flite, festival) and espeak-ng variants are never trained on, so a words-only
evaluation on them measures voices the model has never heard.

Rendered audio is cached as 16 kHz FLAC under ``cache_dir`` by a hash of (engine,
voice, settings, text, engine version), so a dataset renders once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RATE_HZ = 16000
DEFAULT_TTS_CACHE = Path(".cache/tts")
ENGINES = ("espeak-ng", "flite", "festival")


@dataclass(frozen=True)
class Voice:
    """One synthetic voice: ``engine``, its voice name, and a speaking rate/pitch where the engine takes them."""

    engine: str
    name: str
    rate_wpm: int = 165
    pitch: int = 50

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown TTS engine {self.engine!r}: use one of {ENGINES}")

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}:{self.rate_wpm}:{self.pitch}"


def _espeak(variants: list[str], base: str) -> list[Voice]:
    return [Voice("espeak-ng", f"{base}+{v}", 150 + 9 * (i % 5), 35 + 7 * (i % 6)) for i, v in enumerate(variants)]


#: Voices by role. ``train`` and ``validation`` are espeak-ng only; ``test`` holds other espeak-ng
#: variants and accents plus every flite and festival voice (engines never trained on).
VOICE_SPLITS: dict[str, list[Voice]] = {
    "train": _espeak(["m1", "m2", "m4", "m5", "f1", "f3", "f5", "klatt", "klatt3", "croak"], "en-us")
    + _espeak(["m1", "m6", "f2", "f4", "klatt2", "whisper"], "en-gb"),
    "validation": _espeak(["m3", "f2", "klatt4"], "en-us") + _espeak(["m7"], "en-gb-x-rp"),
    "test": _espeak(["m2", "f1", "f4"], "en-gb-scotland")
    + _espeak(["m3", "f3"], "en-029")
    + [Voice("flite", v) for v in ("slt", "rms", "awb", "kal")]
    + [Voice("festival", "kal_diphone")],
}


def engine_available(engine: str) -> bool:
    return shutil.which({"festival": "text2wave"}.get(engine, engine)) is not None


def _command(voice: Voice, text: str, wav: Path) -> list[str]:
    if voice.engine == "espeak-ng":
        return [
            "espeak-ng",
            "-v",
            voice.name,
            "-s",
            str(voice.rate_wpm),
            "-p",
            str(voice.pitch),
            "-w",
            str(wav),
            "--stdin",
        ]
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "-t", text, "-o", str(wav)]
    return ["text2wave", "-eval", f"(voice_{voice.name})", "-o", str(wav)]


def speak(voice: Voice, text: str) -> np.ndarray:
    """Render ``text`` -> float32 mono 16 kHz, the engine's own leading/trailing silence trimmed."""
    import soundfile as sf
    from scipy.signal import resample_poly

    if not engine_available(voice.engine):
        raise RuntimeError(f"{voice.engine} is not installed: apt-get install {voice.engine}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "line.wav"
        cmd = _command(voice, text, wav)
        stdin = text if voice.engine in ("festival", "espeak-ng") else None  # a line may start with "-"
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"{voice.engine} failed on {text[:40]!r}: {done.stderr.strip()[:200]}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != RATE_HZ:
        audio = resample_poly(audio, RATE_HZ, sr).astype(np.float32)
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return np.ascontiguousarray(audio[voiced[0] : voiced[-1] + 1] if len(voiced) else audio, dtype=np.float32)


def rendered(voice: Voice, text: str, cache_dir: Path = DEFAULT_TTS_CACHE) -> Path:
    """Path of a cached 16 kHz FLAC of ``voice`` reading ``text`` (rendered on first use)."""
    import soundfile as sf

    key = hashlib.sha1(f"{voice.id}\n{text}".encode()).hexdigest()
    path = Path(cache_dir) / voice.engine / key[:2] / f"{key}.flac"
    if not path.is_file():
        audio = speak(voice, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.flac")
        sf.write(tmp, audio, RATE_HZ, subtype="PCM_16")
        tmp.replace(path)
    return path
