"""ser-live: real-time conversational speech emotion tracking.

From Python (see :mod:`streamer.api`)::

    from streamer import EmotionTracker

    tracker = EmotionTracker()  # the bundled model, Whisper tiny.en; never downloads
    for event in tracker.track("call.flac"):
        print(event.start_s, event.speaker, event.label, round(event.confidence, 2), event.text)

The names below are imported lazily, so ``import streamer`` (and the ``ser-live``
command's start-up, its ``--help`` in particular) does not pay for torch and Whisper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "BUNDLED_MODEL",
    "EmotionStream",
    "EmotionTracker",
    "PipelineConfig",
    "SegmenterConfig",
    "UtteranceEvent",
    "read_jsonl",
]

_WHERE = {
    "BUNDLED_MODEL": "streamer.options",
    "EmotionTracker": "streamer.api",
    "EmotionStream": "streamer.stream",
    "PipelineConfig": "streamer.pipeline",
    "SegmenterConfig": "streamer.segmenter",
    "UtteranceEvent": "streamer.events",
    "read_jsonl": "streamer.export",
}

if TYPE_CHECKING:
    from streamer.api import EmotionTracker
    from streamer.events import UtteranceEvent
    from streamer.export import read_jsonl
    from streamer.options import BUNDLED_MODEL
    from streamer.pipeline import PipelineConfig
    from streamer.segmenter import SegmenterConfig
    from streamer.stream import EmotionStream


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'streamer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
