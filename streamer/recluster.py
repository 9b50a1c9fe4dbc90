"""The replay's optional second pass over speakers: cluster the whole session at once.

Live, a label once given is never changed (events are already out), so an early utterance is
judged against the few voices heard before it. A replay at ``--speed max`` knows every
utterance when it ends, and ``--second-pass`` re-clusters all voice vectors together
(agglomerative, average linkage on cosine distance, after the same speaker back end and a
quarter of the session's mean voice removed, as :class:`~streamer.speakers.SpeakerTracker`
compares them), then rewrites the speakers of ``--export``, ``--report``, ``--plot`` and the
end-of-replay summary. The JSONL written during the replay keeps the live labels; each
re-labelled event keeps its live label as ``speaker_live``. Labels are A, B, C... in order of
first appearance, like the live ones. The emotions are not re-computed.

A pure function of the vectors (no threads, I/O or clocks), like the live stages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from streamer.speaker_backend import cached_projection
from streamer.speakers import SPEAKER_NAMES, SpeakerConfig

#: Two clusters whose average cosine similarity is below this stay apart (chosen on validation
#: voices, docs/results.md: "The replay's second pass").
MERGE_ABOVE = 0.15


def recluster(
    embeddings: Sequence[np.ndarray | None], config: SpeakerConfig | None = None, merge_above: float = MERGE_ABOVE
) -> list[str | None]:
    """One label per utterance (``None`` where there is no vector: silence, overlap).

    ``config.speakers`` fixes the number of clusters; otherwise clusters whose average
    similarity exceeds ``merge_above`` are merged, and at most ``config.bound`` are kept.
    """
    config = config or SpeakerConfig()
    if not -1.0 < merge_above < 1.0:
        raise ValueError(f"merge_above must be a cosine similarity in (-1, 1), got {merge_above}")
    rows = [i for i, e in enumerate(embeddings) if e is not None and np.isfinite(e).all() and np.linalg.norm(e) > 1e-6]
    labels: list[str | None] = [None] * len(embeddings)
    if not rows:
        return labels
    x = np.stack([np.asarray(embeddings[i], np.float32).reshape(-1) for i in rows])
    if config.projection is not None:
        x = cached_projection(str(config.projection)).apply(x)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    x = x - config.center_strength * x.mean(axis=0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    if len(rows) == 1:
        clusters = np.ones(1, int)
    else:
        tree = linkage(x, method="average", metric="cosine")
        if config.speakers is not None:
            clusters = fcluster(tree, t=config.speakers, criterion="maxclust")
        else:
            clusters = fcluster(tree, t=1.0 - merge_above, criterion="distance")
            if clusters.max() > config.bound:
                clusters = fcluster(tree, t=config.bound, criterion="maxclust")
    names: dict[int, str] = {}
    for i, c in zip(rows, clusters):
        if int(c) not in names:
            names[int(c)] = SPEAKER_NAMES[len(names)]
        labels[i] = names[int(c)]
    return labels


def relabel(events: list, embeddings: Sequence[np.ndarray | None], config: SpeakerConfig | None = None) -> list:
    """``events`` with the second pass's speakers (``speaker_live`` keeps the live label); events
    without a voice vector keep theirs."""
    labels = recluster(embeddings, config)
    out = []
    for event, label in zip(events, labels):
        if label is None:
            out.append(event)
        else:
            out.append(dataclasses.replace(event, speaker=label, speaker_live=event.speaker))
    return out


def second_pass(events: list, config: SpeakerConfig | None = None) -> tuple[list, str]:
    """``(events, note)``: the events re-labelled over the whole session and one line saying what
    changed; unchanged events and no note when no event carries a voice vector (stereo, no tracking)."""
    voices = [getattr(e, "voice", None) for e in events]
    if all(v is None for v in voices):
        return events, ""
    out = relabel(events, voices, config)
    changed = sum(e.speaker != e.speaker_live for e in out if e.speaker_live is not None)
    found = len({e.speaker for e in out if e.speaker is not None})
    note = (
        f"speakers re-clustered over the whole replay (--second-pass): {found} found, {changed} of {len(out)} "
        "utterances relabelled; the --jsonl log keeps the live labels"
    )
    return out, note
