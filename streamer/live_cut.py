"""Train as you serve: the audio the live segmenter would hand on for a clip said alone.

Training clips carry their own leading and trailing silence; the live tracker analyses only
what :class:`~streamer.segmenter.Segmenter` cuts. Feature extraction for training runs every
clip through the same segmenter (:func:`live_cut`), so training and live features agree.
"""

from __future__ import annotations

import numpy as np

from streamer.segmenter import Segmenter, SegmenterConfig

#: Silence :func:`live_cut` puts before a clip: what a replayed recording has between turns.
LEAD_SILENCE_MS = 1000

def live_cut(audio: np.ndarray, config: SegmenterConfig | None = None) -> np.ndarray:
    """The audio the live tracker would analyse for ``audio`` said alone: the segmenter's cut.

    Training clips carry their own leading/trailing silence (RAVDESS has ~1 s of it), while
    live features come from the segmenter's cut with its pre- and post-roll: features of
    whole clips are a train/serve skew (7 weighted-F1 points of openSMILE on unseen voices).
    So training features are computed on this cut: the clip is put between
    ``LEAD_SILENCE_MS`` of digital silence and enough silence to end the utterance, run
    through a fresh :class:`Segmenter`, and the span from its first utterance's start to its
    last's end is returned (live, a long pause inside a clip would split it; training keeps
    the clip whole so it keeps its label). A clip in which the segmenter finds no speech is
    returned as it is. Replaying exactly that padded audio gives the same cut (tested).
    """
    config = config or SegmenterConfig()
    x = np.asarray(audio, np.float32)
    padded = pad_like_live_cut(x, config)
    seg = Segmenter(config)
    utts = seg.push(padded) + seg.flush()
    if not utts:
        return x
    return padded[utts[0].start_sample : utts[-1].end_sample].copy()


def pad_like_live_cut(audio: np.ndarray, config: SegmenterConfig | None = None) -> np.ndarray:
    """The padded signal :func:`live_cut` segments (for replaying a clip as the tracker hears it)."""
    config = config or SegmenterConfig()
    rate = config.sample_rate_hz
    return np.concatenate(
        [
            np.zeros(rate * LEAD_SILENCE_MS // 1000, np.float32),
            np.asarray(audio, np.float32),
            np.zeros(rate * (config.end_silence_ms + 500) // 1000, np.float32),
        ]
    )
