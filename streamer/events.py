"""What the live pipeline tells its consumers (Textual UI, line printer, JSONL writer).

Events are plain frozen dataclasses: safe to hand from the worker thread to the
UI thread, and trivially serialisable.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

#: The label of an utterance the model is not sure enough about (``--uncertain-below``): no emotion
#: is claimed, and the event's ``guess`` keeps the model's best answer. Users prefer no label to a
#: wrong one; docs/results.md gives the share of utterances labelled and their accuracy per threshold.
UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class UtteranceEvent:
    """One classified utterance. Times are seconds from the session start (sample counts)."""

    index: int
    start_s: float
    end_s: float
    speaker: str | None
    text: str
    label: str | None  # None when the utterance failed (see ``error``)
    confidence: float
    probs: dict[str, float] = field(default_factory=dict)
    #: milliseconds per stage ("asr", "opensmile", "text", "model", "total"), measured
    #: from the moment the segmenter decided the utterance had ended.
    latency_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: What each channel says on its own (the model with the other one withheld):
    #: ``{"audio": {"label": ..., "confidence": ..., "probs": {label: p}}, "text": {...}}``, so a
    #: user sees which channel decided; empty for single-channel models and failed utterances.
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Tracked speakers heard at once in this utterance (``speaker`` is then None: not a guess).
    overlap: tuple[str, ...] = ()
    #: Set only by a replay's second pass over speakers (``--second-pass``): the label the
    #: live tracker gave, ``speaker`` being the re-clustered one (:mod:`streamer.recluster`).
    speaker_live: str | None = None
    #: Set only when ``label`` is :data:`UNCERTAIN`: the model's best answer, below the threshold
    #: (``confidence`` and ``probs`` stay the model's).
    guess: str | None = None
    #: The utterance's voice vector (mono speaker tracking), kept for a second pass; never serialised.
    voice: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field but the voice vector; ``speaker_live`` and ``guess`` only where set (by a
        second pass, by ``--uncertain-below``), so the JSONL keeps the fields it always had."""
        optional = ("speaker_live", "guess")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("voice", *optional)}
        out |= {name: getattr(self, name) for name in optional if getattr(self, name) is not None}
        return copy.deepcopy(out)  # as asdict: the caller's dict shares nothing with the event


@dataclass(frozen=True)
class InterimEvent:
    """Words of an utterance still being spoken: replaced by its :class:`UtteranceEvent`.

    Emitted only by a pipeline configured for interim words (``PipelineConfig.interim``);
    ``start_s`` is the start the final event will have, ``end_s`` how much had been heard.
    Consumers that do not know it ignore it (the JSONL gets it only with ``--interim``).
    """

    start_s: float
    end_s: float
    speaker: str | None
    text: str
    channel: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)  # "asr": time of the interim decode

    def to_dict(self) -> dict[str, Any]:
        return {"type": "interim", **asdict(self)}

    @classmethod
    def of(cls, utt, text: str, asr_ms: float) -> InterimEvent:
        """The interim event of ``utt`` (a :class:`~streamer.segmenter.Utterance` so far) reading ``text``."""
        return cls(round(utt.start_s, 3), round(utt.end_s, 3), utt.speaker, text, utt.channel or 0, {"asr": asr_ms})


@dataclass(frozen=True)
class LevelEvent:
    """Input level (dBFS of the last block) and whether the segmenter is inside speech."""

    time_s: float
    level_dbfs: float
    speech: bool


@dataclass(frozen=True)
class StatusEvent:
    """Session state: model/device description, dropped audio, errors, end of input."""

    message: str
    model: str = ""
    device: str = ""
    dropped_blocks: int = 0
    finished: bool = False
    error: bool = False


Event = UtteranceEvent | InterimEvent | LevelEvent | StatusEvent


class Pipeline(Protocol):
    """What the UI drives. ``run`` blocks (it is called in a worker thread), calls
    ``emit`` for every event, and returns when the input ends or ``stop`` is set.
    ``paused`` set means: keep capturing nothing new into the timeline."""

    def run(self, emit: Callable[[Event], None], stop: threading.Event, paused: threading.Event) -> None: ...

    def describe(self) -> dict[str, str]: ...
