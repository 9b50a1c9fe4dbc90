"""What Whisper writes for MELD lines: rendered speech -> tiny.en transcripts, and the error model.

The live text branch never sees MELD's transcripts; it sees tiny.en's, with its own casing,
punctuation, numerals and 10-20% word errors. To train and validate the text encoder on
that, MELD lines are read by the split's synthetic voices (``tts-words``: train voices for
train lines, validation voices for validation lines, held-out engines for MELD dev) and
transcribed by the same :class:`~streamer.asr.Transcriber` and encode policy the live
tracker uses. The pairs are cached as JSON (``.cache/asr-text/<split>.json``); the
:class:`ErrorRates` measured on them drive the synthetic noise for lines with no pair.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from training.e2e import normalize_words

log = logging.getLogger(__name__)

_QUESTION = re.compile(r"[!?]*\?[!?]*")
_EXCLAMATION = re.compile(r"!+")


def spoken_punctuation(text: str) -> str:
    """A line punctuated as tiny.en writes speech: a question keeps one ``?``, an exclamation ends in ``.``.

    A script marks emotion with "!" (37 % of the MELD dev lines in the words-only
    leave-voices-out sets); tiny.en writes none for a flat voice and few for an acted one
    (0-27 % of strong RAVDESS clips per emotion, none of the neutral ones). A text model that
    learnt "!" reads live transcripts as calmer than they are; ``text-tune --spoken-p`` trains
    on lines read this way part of the time (docs/results.md, "The words as Whisper
    punctuates them").
    """
    return _EXCLAMATION.sub(".", _QUESTION.sub("?", text))


DEFAULT_CACHE = Path(".cache/asr-text")


@dataclass(frozen=True)
class AsrPair:
    dialogue: str
    turn: int
    voice: str
    text: str  # MELD's line
    asr: str  # what tiny.en wrote for the rendered line


def _align_ops(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum edit alignment."""
    n, m = len(ref), len(hyp)
    d = [[(0, 0, 0, 0)] * (m + 1) for _ in range(n + 1)]  # (cost, sub, del, ins)
    for i in range(1, n + 1):
        d[i][0] = (i, 0, i, 0)
    for j in range(1, m + 1):
        d[0][j] = (j, 0, 0, j)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c, s, de, ins = d[i - 1][j - 1]
            best = (c, s, de, ins) if ref[i - 1] == hyp[j - 1] else (c + 1, s + 1, de, ins)
            c, s, de, ins = d[i - 1][j]
            best = min(best, (c + 1, s, de + 1, ins))
            c, s, de, ins = d[i][j - 1]
            best = min(best, (c + 1, s, de, ins + 1))
            d[i][j] = best
    return d[n][m][1:]


@dataclass(frozen=True)
class ErrorRates:
    """Word error rates per reference word (substitution, deletion) and per hypothesis slot (insertion)."""

    substitution: float
    deletion: float
    insertion: float
    words: int

    @property
    def wer(self) -> float:
        return self.substitution + self.deletion + self.insertion

    @classmethod
    def measure(cls, pairs: list[AsrPair]) -> ErrorRates:
        s = de = ins = n = 0
        for p in pairs:
            ref, hyp = normalize_words(p.text), normalize_words(p.asr)
            a, b, c = _align_ops(ref, hyp)
            s, de, ins, n = s + a, de + b, ins + c, n + len(ref)
        n = max(n, 1)
        return cls(s / n, de / n, ins / n, n)


def collect(split: str, root: Path, max_dialogues: int | None, engines: tuple[str, ...], asr_model: str = "tiny.en"):
    """Render the split's MELD lines with its voices and transcribe them (cached per split and voice set)."""
    from streamer.asr import Transcriber
    from training.data.mixed import TtsWordsOptions, load_tts_words
    from training.extract import load_utterance_audio

    data = load_tts_words(split, root, TtsWordsOptions(max_dialogues=max_dialogues, engines=engines))
    path = DEFAULT_CACHE / f"{split}.json"
    cache: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}
    asr = Transcriber(asr_model, device="cpu")
    todo = [(d, u) for d in data.dialogues for u in d.utterances if f"{u.voice}\n{u.text}" not in cache]
    log.info("%s: %d lines, %d to transcribe", split, sum(len(d.utterances) for d in data.dialogues), len(todo))
    for i, (d, u) in enumerate(todo):
        audio = load_utterance_audio(u.audio_path, u.start_s, u.end_s, live_cut=True)
        cache[f"{u.voice}\n{u.text}"] = asdict(AsrPair(d.id, u.turn, u.voice, u.text, asr.transcribe(audio)))
        if i % 200 == 199 or i == len(todo) - 1:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(path)
            log.info("%s: %d/%d transcribed", split, i + 1, len(todo))
    return load(split)


def load(split: str, cache_dir: Path = DEFAULT_CACHE) -> list[AsrPair]:
    path = Path(cache_dir) / f"{split}.json"
    if not path.is_file():
        return []
    return [AsrPair(**v) for v in json.loads(path.read_text()).values()]
