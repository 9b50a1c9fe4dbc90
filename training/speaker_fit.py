"""Fit the speaker back end (:mod:`streamer.speaker_backend`) on training-split voices only.

    python -m training speakers --fit-projection [--nap-dims 32] [--projection-out PATH]

Every clip of a training voice is embedded exactly as live utterances are
(:class:`streamer.speakers.VoiceEmbedder`, at most two partials): RAVDESS and EmoDB train actors
and URDU train speakers (each acting many emotions: the within-speaker variation to remove),
plus the espeak-ng training voices of :data:`training.data.tts.VOICE_SPLITS` reading MELD
train lines (without them the synthetic-voice sets lose 0.1-0.2 attribution on validation).
No validation or test voice is read, so the speaker evaluation stays on unseen voices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamer.speaker_backend import PROJECTION_PATH, Projection, fit_nap

log = logging.getLogger(__name__)

#: Corpora of acted clips whose train voices the projection learns from.
ACTED = ("ravdess", "emodb", "urdu")
#: Synthetic lines per espeak-ng training voice (MELD train lines, spread over the first 200 dialogues).
TTS_LINES = 40
#: Directions removed (chosen on validation from 16/32/48/64: docs/results.md).
NAP_DIMS = 32


def training_voices(root: Path) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(voice, loader of one utterance) for every training clip and synthetic training line."""
    from streamer.audio import load_audio
    from training.data.shared import meld_dialogues, read_clips, voice_splits
    from training.data.tts import VOICE_SPLITS, engine_available, rendered
    from training.speakers import _trim

    clips = read_clips(root, ACTED)
    splits = voice_splits(clips, seed=0)  # the same voice split as every other use of these corpora
    out: list[tuple[str, Callable[[], np.ndarray]]] = [
        (clip.voice, lambda p=clip.path: _trim(load_audio(p))) for clip in clips if splits[clip.voice] == "train"
    ]
    _, dialogues = meld_dialogues("train", root)
    lines = [u.text for d in dialogues[:200] for u in d.utterances if u.text and 3 <= len(u.text.split()) <= 20]
    for i, voice in enumerate(VOICE_SPLITS["train"]):
        if not engine_available(voice.engine):
            log.warning("speaker projection: %s is not installed; its training voice is left out", voice.engine)
            continue
        out += [(voice.id, lambda v=voice, t=t: load_audio(rendered(v, t))) for t in lines[i::17][:TTS_LINES]]
    return out


def fit_projection(root: Path, dims: int = NAP_DIMS, embed: Callable | None = None) -> Projection:
    """Embed every training utterance and fit NAP with ``dims`` directions removed."""
    if embed is None:
        from streamer.speakers import VoiceEmbedder

        embed = VoiceEmbedder().embed
    items = training_voices(root)
    vectors = np.stack([embed(load())[0] for _, load in items])
    names = [voice for voice, _ in items]
    voices = f"{len(set(names))} voices ({', '.join(ACTED)}, espeak-ng)"
    info = f"NAP {dims} of {vectors.shape[1]}: {len(vectors)} train utterances of {voices}"
    log.info("%s", info)
    return fit_nap(vectors, names, dims, info)


def run_fit(args) -> str:
    """``--fit-projection``: fit and write the .npz (the shipped asset unless ``--projection-out``)."""
    import torch

    torch.set_num_threads(1)  # same vectors; on a shared 2-core CPU one thread is faster
    out = args.projection_out or PROJECTION_PATH
    projection = fit_projection(Path(args.data_root), args.nap_dims)
    projection.save(out)
    return f"{projection.info}\nwritten to {out} ({Path(out).stat().st_size / 1024:.0f} KiB)"
