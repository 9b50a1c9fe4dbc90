"""The dialogue in the text encoder's input: the current line plus its previous turns.

A line such as "Fine." means little alone; EmoBERTa-style encoders read it with the turns
before it. Only *past* turns enter (the tracker is causal: an utterance's event is out
before the next one is spoken), newest first so that truncation drops the oldest.
Speakers are tagged relative to the current one (``A`` is the current speaker, ``B``,
``C``… the others by recency), so the tags mean the same in MELD (named characters) and
live (``A``/``B`` from the speaker tracker, or none): a turn whose speaker is unknown
gets no tag. Training (``training/text_tune.py``, ``training/extract.py``) and the live
pipeline build the input with the same two functions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

TAGS = "ABCDEFGH"


@dataclass(frozen=True)
class Turn:
    speaker: str | None
    text: str


def context_input(past: Sequence[Turn], speaker: str | None, turns: int) -> str | None:
    """The second segment of the encoder input: up to ``turns`` past turns, newest first,
    each ``"<tag>: <text>"`` (tag relative to ``speaker``), joined by `` | ``; None when empty."""
    if turns <= 0:
        return None
    chosen = [t for t in past if t.text.strip()][-turns:][::-1]
    if not chosen:
        return None
    tags: dict[str, str] = {} if speaker is None else {speaker: TAGS[0]}
    parts = []
    for t in chosen:
        if t.speaker is None:
            parts.append(t.text.strip())
            continue
        if t.speaker not in tags:
            tags[t.speaker] = TAGS[min(len(tags) + (speaker is None), len(TAGS) - 1)]
        parts.append(f"{tags[t.speaker]}: {t.text.strip()}")
    return " | ".join(parts)


def dialogue_contexts(turns: Sequence[Turn], context_turns: int) -> list[str | None]:
    """The context of every turn of a whole dialogue, each from its past only (batch == streaming)."""
    return [context_input(turns[:i], t.speaker, context_turns) for i, t in enumerate(turns)]


class DialogueHistory:
    """Live state: the last ``turns`` transcripts and their speakers (bounded memory)."""

    def __init__(self, turns: int) -> None:
        if turns < 0:
            raise ValueError(f"context turns must be >= 0, got {turns}")
        self.turns = turns
        self._past: deque[Turn] = deque(maxlen=max(turns, 1))

    def context(self, speaker: str | None) -> str | None:
        # tuple(deque) copies in one C call under the GIL: safe while the worker thread pushes
        return context_input(tuple(self._past), speaker, self.turns)

    def push(self, speaker: str | None, text: str) -> None:
        if self.turns and text.strip():
            self._past.append(Turn(speaker, text))

    def reset(self) -> None:
        self._past.clear()
