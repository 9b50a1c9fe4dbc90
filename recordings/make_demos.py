"""Regenerate the demo conversations in recordings/ (needs Debian's espeak-ng).

    python recordings/make_demos.py [NAME ...]   # default: every demo

Each demo is a two-speaker conversation: every line is spoken by espeak-ng with
the speaker's voice (variant, pitch) and a prosody that goes with the line's
emotion (rate, pitch, pitch range, loudness), separated by pauses. Writes
``<name>.flac`` (mono mix), ``<name>-stereo.flac`` (speaker A left, B right,
for --split-channels) and ``<name>.jsonl`` (ground truth: start/end seconds,
speaker, text, label). Deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

RATE_HZ = 16000
HERE = Path(__file__).parent

VOICES = {"A": {"voice": "en-us+m3", "pitch": 40}, "B": {"voice": "en-gb+f2", "pitch": 60}}
#: rate (words/min), pitch offset, amplitude per emotion: crude acted prosody
PROSODY = {
    "neutral": (165, 0, 100),
    "joy": (185, 12, 120),
    "anger": (195, 5, 170),
    "sadness": (125, -12, 70),
    "surprise": (175, 20, 140),
    "fear": (190, 15, 90),
    "disgust": (140, -5, 120),
}

DEMOS = {
    "demo-kitchen": [
        ("A", "neutral", "Did you remember to buy milk on the way home?"),
        ("B", "neutral", "Yes, it is in the fridge next to the juice."),
        ("A", "joy", "Oh wonderful, thank you so much, you are the best!"),
        ("B", "surprise", "Wait, what happened to the cake I made yesterday?"),
        ("A", "fear", "I am scared to tell you, please do not be mad."),
        ("B", "anger", "You ate the whole thing? That was for my sister's party!"),
        ("A", "sadness", "I am so sorry, I feel terrible about it."),
        ("B", "neutral", "Fine. We can bake another one tonight."),
        ("A", "joy", "Great, I will help you, it will be even better!"),
    ],
    "demo-office": [
        ("A", "neutral", "The meeting starts at ten in the small room."),
        ("B", "disgust", "Ugh, that room smells like old coffee and socks."),
        ("A", "joy", "Good news though, our project was approved!"),
        ("B", "surprise", "Really? I never expected them to say yes!"),
        ("A", "neutral", "They want the first report by Friday."),
        ("B", "anger", "Friday? That is completely unreasonable, we told them a month!"),
        ("A", "sadness", "I know, I wish I had pushed back harder."),
        ("B", "neutral", "Let us write down what we can finish by then."),
    ],
    # Long turns (7-13 s each) for the latency benchmark's "> 6 s" bucket (issue 6).
    "demo-story": [
        (
            "A",
            "neutral",
            "So yesterday I took the early train into the city because I had to drop off the "
            "signed papers at the bank before they closed for the long weekend and I wanted to be on time.",
        ),
        (
            "B",
            "surprise",
            "You went all the way into the city just for that? I had no idea the bank still "
            "wanted paper copies of everything, I thought the whole process was done online these days.",
        ),
        (
            "A",
            "anger",
            "That is exactly what I told them on the phone last week, and they still insisted "
            "that nothing would move forward unless I came in person and signed every single page in front of them.",
        ),
        (
            "B",
            "sadness",
            "I am sorry you lost your whole morning to that, it sounds exhausting, and I know "
            "how much you were looking forward to finally having a quiet day off this week.",
        ),
        (
            "A",
            "joy",
            "Well, the good news is that the loan is approved now, so we can start looking at "
            "apartments next month, and we might even find one close to the park that you like so much.",
        ),
        (
            "B",
            "neutral",
            "In that case let us sit down on Sunday evening, make a list of the areas we want "
            "to see, and decide how much we are willing to spend on rent every month.",
        ),
    ],
}


def speak(text: str, speaker: str, emotion: str, workdir: Path) -> np.ndarray:
    rate, pitch_off, amp = PROSODY[emotion]
    v = VOICES[speaker]
    wav = workdir / "line.wav"
    cmd = [
        "espeak-ng",
        "-v",
        v["voice"],
        "-s",
        str(rate),
        "-p",
        str(max(0, min(99, v["pitch"] + pitch_off))),
        "-a",
        str(amp),
        "-w",
        str(wav),
        text,
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32")
    audio = resample_poly(audio, RATE_HZ, sr).astype(np.float32) if sr != RATE_HZ else audio
    voiced = np.flatnonzero(np.abs(audio) > 0.01)  # trim espeak's own leading/trailing silence
    return audio[voiced[0] : voiced[-1] + 1] if len(voiced) else audio


def make(name: str, lines: list[tuple[str, str, str]], out: Path) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    left, right, truth = [], [], []
    t = 0.6
    pos = int(t * RATE_HZ)
    left.append(np.zeros(pos, np.float32))
    right.append(np.zeros(pos, np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        for speaker, emotion, text in lines:
            audio = speak(text, speaker, emotion, Path(tmp))
            audio = audio / max(1e-3, float(np.abs(audio).max())) * 0.7
            silence = np.zeros(len(audio), np.float32)
            left.append(audio if speaker == "A" else silence)
            right.append(audio if speaker == "B" else silence)
            start = pos / RATE_HZ
            pos += len(audio)
            truth.append(
                {
                    "start_s": round(start, 3),
                    "end_s": round(pos / RATE_HZ, 3),
                    "speaker": speaker,
                    "text": text,
                    "label": emotion,
                }
            )
            gap = int(rng.uniform(0.9, 1.4) * RATE_HZ)
            left.append(np.zeros(gap, np.float32))
            right.append(np.zeros(gap, np.float32))
            pos += gap
    stereo = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    sf.write(out / f"{name}.flac", stereo.sum(axis=1).clip(-1, 1), RATE_HZ, subtype="PCM_16")
    sf.write(out / f"{name}-stereo.flac", stereo, RATE_HZ, subtype="PCM_16")
    with open(out / f"{name}.jsonl", "w") as f:
        for row in truth:
            f.write(json.dumps(row) + "\n")
    print(f"{name}: {len(lines)} lines, {stereo.shape[0] / RATE_HZ:.1f} s")


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(DEMOS)
    unknown = sorted(set(names) - set(DEMOS))
    if unknown:
        print(f"unknown demo {unknown[0]!r}: choose from {', '.join(DEMOS)}", file=sys.stderr)
        return 2
    for name in names:
        make(name, DEMOS[name], HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
