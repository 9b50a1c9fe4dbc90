"""How often tiny.en writes "!" for real emotional speech (RAVDESS training actors 1-20 only).

30 clips per emotion at strong intensity (neutral: its one intensity), seeded, transcribed by
the live :class:`streamer.asr.Transcriber`. MELD's script marks 37 % of the words-only
leave-voices-out lines with "!"; this says how much of that a live transcript keeps
(docs/results.md, "The words as Whisper punctuates them").

    python experiments/whisper_exclamations.py
"""

from __future__ import annotations

import glob
import random
from collections import Counter

from streamer.asr import Transcriber
from streamer.audio import load_audio

EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry", "08": "surprised"}
PER_EMOTION = 30


def main() -> None:
    asr = Transcriber("tiny.en")
    files = []
    for actor in range(1, 21):  # actors 21-24 are held out of everything
        root = f"../shared/data/ravdess/Actor_{actor:02d}"
        files += glob.glob(f"{root}/03-01-*-02-*.flac") + glob.glob(f"{root}/03-01-01-01-*.flac")
    random.Random(0).shuffle(files)
    clips, marked, examples = Counter(), Counter(), {}
    for path in files:
        emotion = EMOTIONS.get(path.rsplit("/", 1)[-1].split("-")[2])
        if emotion is None or clips[emotion] >= PER_EMOTION:
            continue
        text = asr.transcribe(load_audio(path))
        clips[emotion] += 1
        marked[emotion] += "!" in text
        examples.setdefault(emotion, []).append(text)
    for emotion in EMOTIONS.values():
        print(f"{emotion:9s} {marked[emotion]:2d} of {clips[emotion]} with '!'  e.g. {examples[emotion][:3]}")


if __name__ == "__main__":
    main()
