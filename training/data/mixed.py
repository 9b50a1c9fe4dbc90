"""Conversations where only one channel carries the emotion, and their mixture with ``paired``.

``paired`` gives every utterance a voice and words of the same label, so a model trained on
it never sees a flat voice reading angry words, nor an angry voice saying nothing much; on
such lines the fusion lets whichever channel looks unusual decide (an unfamiliar voice
overrode clear words: the voice issue). Three constructions fix what the model sees:

- ``tts-words`` (words only): real MELD dialogues read by Debian's synthetic voices
  (:mod:`training.data.tts`), one voice per MELD speaker; the label is MELD's, the voice is
  flat. The voices of each split are disjoint, and ``test`` uses engines never trained on.
- voice only: chains of acted clips (``voice-chains``) whose words are replaced by MELD
  lines labelled *neutral*: the emotion is in the voice, the words vary and say nothing.
  (Not RAVDESS's own two sentences: "Kids are talking by the door" must not become the
  switch that hands the decision to the audio.)
- ``mixed``: ``paired`` + words-only + voice-only dialogues of one split, the training set
  of the bundled model.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from training.augment import draw
from training.data.records import MELD_LABELS, DatasetSplit, Dialogue, as_names, require_split
from training.data.report import LoadReport
from training.data.shared import (
    DEFAULT_ROOT,
    SHARED_SPLITS,
    PairedOptions,
    VoiceChainOptions,
    load_paired,
    load_voice_chains,
    meld_dialogues,
)
from training.data.tts import DEFAULT_TTS_CACHE, ENGINES, VOICE_SPLITS, engine_available, rendered

log = logging.getLogger(__name__)

#: Where the words-only dialogues' text comes from: the script read aloud, or Whisper's transcript of it.
WORDS_TEXT = ("script", "asr")


@dataclass(frozen=True)
class TtsWordsOptions:
    """``engines``: which engines' voices of the split read the lines; ``max_dialogues``: the
    first N dialogues of the split (rendering and encoding cost time). ``text``: what the
    text features read, ``script`` (MELD's line) or ``asr`` (what Whisper hears in the
    rendering, as the live tracker would: train as you serve; the script stays the label's
    source only)."""

    seed: int = 0
    max_dialogues: int | None = None
    validation_fraction: float = 0.1
    engines: tuple[str, ...] = ENGINES
    cache_dir: Path = DEFAULT_TTS_CACHE
    text: str = "script"

    def __post_init__(self) -> None:
        if self.text not in WORDS_TEXT:
            raise ValueError(f"text must be one of {', '.join(WORDS_TEXT)}, got {self.text!r}")
        object.__setattr__(self, "engines", as_names(self.engines))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        unknown = sorted(set(self.engines) - set(ENGINES))
        if unknown or not self.engines:
            raise ValueError(f"engines must be a non-empty subset of {ENGINES}, got {self.engines}")
        if self.max_dialogues is not None and self.max_dialogues < 1:
            raise ValueError(f"max_dialogues must be >= 1 or None, got {self.max_dialogues}")


def load_tts_words(split: str, root: Path | str = DEFAULT_ROOT, options: TtsWordsOptions | None = None) -> DatasetSplit:
    """MELD dialogues of the split read by the split's synthetic voices (words-only)."""
    options = options or TtsWordsOptions()
    require_split("tts-words", split, SHARED_SPLITS)
    voices = [v for v in VOICE_SPLITS[split] if v.engine in options.engines and engine_available(v.engine)]
    if not voices:
        raise ValueError(
            f"no installed TTS engine among {', '.join(options.engines)}: apt-get install espeak-ng flite festival"
        )
    meld, dialogues = meld_dialogues(split, Path(root), options.seed, options.validation_fraction)
    dialogues = dialogues[: options.max_dialogues]
    report = LoadReport("tts-words", split, source=f"{Path(root) / 'meld'} read by {len(voices)} synthetic voices")
    report.note(f"words-only: MELD {meld.name} lines read by {', '.join(sorted({v.engine for v in voices}))}")
    out = []
    for d in dialogues:
        rng = random.Random(f"tts-words:{options.seed}:{split}:{d.id}")
        cast = rng.sample(voices, min(len(voices), len(d.speakers)))
        voice_of = {s: cast[i % len(cast)] for i, s in enumerate(d.speakers)}
        utts = []
        for u in d.utterances:
            report.rows += 1
            if not u.text or not any(c.isalnum() for c in u.text):
                report.exclude_by_design("no words to speak")
                continue
            v = voice_of[u.speaker]
            path = rendered(v, u.text, options.cache_dir)
            text = u.text if options.text == "script" else None  # None: extraction transcribes the audio
            utts.append(dataclasses.replace(u, audio_path=path, start_s=None, end_s=None, voice=v.id, text=text))
        if utts:
            out.append(Dialogue(d.id, tuple(utts)))
    result = DatasetSplit("tts-words", split, tuple(out), MELD_LABELS, report)
    log.info("%s", report.summary())
    return result


@dataclass(frozen=True)
class MixedOptions:
    """How many dialogues of each kind (None: all): ``paired_dialogues`` MELD dialogues voiced
    by acted clips, ``words_dialogues`` read by synthetic voices, ``voice_dialogues`` voice-only
    chains of acted clips with neutral MELD lines as their words."""

    seed: int = 0
    paired_dialogues: int | None = None
    words_dialogues: int | None = 300
    voice_dialogues: int | None = None
    corpora: tuple[str, ...] = ("ravdess", "emodb", "urdu")
    #: Engines of the words-only part. espeak-ng alone by default: its held-out variants make
    #: the test split, and flite/festival stay unheard until the leave-voices-out evaluation.
    words_engines: tuple[str, ...] = ("espeak-ng",)
    #: The words-only part's text: ``script`` or ``asr`` (see :class:`TtsWordsOptions`).
    words_text: str = "script"
    #: Training split only: this many extra copies of the acted (paired and voice-only) dialogues,
    #: each voice made a new voice in a new room (:mod:`training.augment`).
    augment_copies: int = 0
    #: Training split only: this many augmented copies of the words-only dialogues. Each copy of
    #: a dialogue gives its synthetic voices a new pitch, tempo and room of their own (not shared
    #: with the voice's other dialogues), so the audio branch hears many flat voices that carry
    #: nothing instead of sixteen; with ``words_text=asr`` each copy's text is Whisper's transcript
    #: of the augmented audio.
    augment_words: int = 0
    #: Voice-only chains: this many times the number that uses each acted clip about once. The
    #: voice-only part is what teaches the fusion to follow an emotional voice over neutral words.
    voice_repeats: int = 1
    check_audio: bool = False

    def __post_init__(self) -> None:
        if self.words_text not in WORDS_TEXT:
            raise ValueError(f"words_text must be one of {', '.join(WORDS_TEXT)}, got {self.words_text!r}")
        object.__setattr__(self, "corpora", as_names(self.corpora))
        object.__setattr__(self, "words_engines", as_names(self.words_engines))
        for name in ("augment_copies", "augment_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.voice_repeats < 1:
            raise ValueError(f"voice_repeats must be >= 1, got {self.voice_repeats}")
        for name in ("paired_dialogues", "words_dialogues", "voice_dialogues"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")


def neutral_lines(split: str, root: Path, seed: int = 0) -> list[str]:
    """MELD lines labelled neutral from the split's MELD side (train/validation: MELD train; test: dev)."""
    _, dialogues = meld_dialogues(split, root, seed)
    return [u.text for d in dialogues for u in d.utterances if u.label == "neutral" and u.text and len(u.text) > 3]


def voice_only(split: str, root: Path, options: MixedOptions) -> list[Dialogue]:
    """Voice-chains of the split whose words are neutral MELD lines (the voice carries the label)."""
    if options.voice_dialogues == 0:
        return []
    chains = load_voice_chains(
        split,
        root,
        VoiceChainOptions(
            seed=options.seed, corpora=options.corpora, check_audio=options.check_audio, repeats=options.voice_repeats
        ),
    )
    lines = neutral_lines(split, root, options.seed)
    out = []
    for d in chains.dialogues[: options.voice_dialogues]:
        rng = random.Random(f"voice-only:{options.seed}:{split}:{d.id}")
        utts = tuple(dataclasses.replace(u, text=rng.choice(lines)) for u in d.utterances)
        out.append(Dialogue(f"voice-{d.id}", utts))
    return out


def augmented_copies(
    dialogues: list[Dialogue], copies: int, seed: int = 0, per_dialogue: bool = False
) -> list[Dialogue]:
    """``copies`` copies of each dialogue whose voices are new voices in new rooms: copy k of a
    voice is the same person and room throughout (per-speaker normalisation sees one voice).
    ``per_dialogue``: the voice is drawn anew in every dialogue (synthetic voices recur across
    hundreds of dialogues; drawing them once would add only as many voices as the engine has)."""
    out = []
    for k in range(1, copies + 1):
        for d in dialogues:
            utts = tuple(
                dataclasses.replace(
                    u,
                    augment=draw(
                        f"{d.id}/{u.voice or u.speaker}" if per_dialogue else u.voice or u.speaker,
                        k,
                        f"{u.audio_path}:{u.start_s}:{u.end_s}",
                        seed,
                    ).key(),
                )
                for u in d.utterances
            )
            out.append(Dialogue(f"aug{k}-{d.id}", utts))
    return out


def load_mixed(split: str, root: Path | str = DEFAULT_ROOT, options: MixedOptions | None = None) -> DatasetSplit:
    """``paired`` + words-only (``tts-words``) + voice-only dialogues of one split."""
    options = options or MixedOptions()
    require_split("mixed", split, SHARED_SPLITS)
    root = Path(root)
    parts: list[Dialogue] = []
    report = LoadReport("mixed", split, source=str(root))
    if options.paired_dialogues != 0:
        paired = load_paired(
            split,
            root,
            PairedOptions(
                seed=options.seed,
                corpora=options.corpora,
                max_dialogues=options.paired_dialogues,
                check_audio=options.check_audio,
            ),
        )
        parts += [Dialogue(f"paired-{d.id}", d.utterances) for d in paired.dialogues]
        report.problems.extend(paired.report.problems)
    if options.words_dialogues != 0:
        words = load_tts_words(
            split,
            root,
            TtsWordsOptions(
                seed=options.seed,
                max_dialogues=options.words_dialogues,
                engines=options.words_engines,
                text=options.words_text,
            ),
        )
        parts += [Dialogue(f"words-{d.id}", d.utterances) for d in words.dialogues]
        report.problems.extend(words.report.problems)
    voice = voice_only(split, root, options)
    parts += voice
    if split == "train" and options.augment_copies:
        acted = [d for d in parts if not d.id.startswith("words-")]
        parts += augmented_copies(acted, options.augment_copies, options.seed)
        report.note(f"{options.augment_copies} augmented copies of {len(acted)} acted dialogues (new voices and rooms)")
    if split == "train" and options.augment_words:
        words = [d for d in parts if d.id.startswith("words-")]
        parts += augmented_copies(words, options.augment_words, options.seed, per_dialogue=True)
        report.note(f"{options.augment_words} augmented copies of {len(words)} words-only dialogues")
    report.rows = sum(len(d) for d in parts)
    report.note(f"{len(parts)} dialogues: paired, words-only (synthetic voices) and voice-only (neutral words)")
    result = DatasetSplit("mixed", split, tuple(parts), MELD_LABELS, report)
    log.info("%s", report.summary())
    return result
