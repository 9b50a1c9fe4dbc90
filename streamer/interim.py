"""Transcripts in pieces: words while a long utterance is still being spoken, and a final
transcript that is mostly ready when the speaker stops.

Whisper's decoder time grows with the number of words, so a 10 s turn cost ~400 ms of
decoding after its end (on a 2-core CPU), more than the end-of-speech wait hides. The
segmenter marks *cuts* at short pauses inside long utterances (``Utterance.cuts``, decided
causally from sample counts), and the transcript of an utterance with cuts is the join of
its pieces' transcripts. A piece is a pure function of its audio, so it is decoded once
and kept here by its sample bounds: while the speaker goes on, the pipeline's worker
decodes the pieces already closed (as part of the interim words), and at the end only the
last piece is left. Whether interim decoding ran or not, the final transcript is the same
(same pieces, same decoder); only when it is ready changes.

No threads here: :class:`PieceTranscripts` is used by one thread at a time (the
pipeline's worker when it speculates, else the pipeline thread); an interim decode takes a
flag that another thread may set to have it give up between steps.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np

from streamer.asr import EncodePolicy
from streamer.segmenter import Utterance

log = logging.getLogger(__name__)

#: The cheap window for the open (still growing) piece of an interim transcript: 10 s costs
#: ~30% less encoder time than the 15 s policy for ~2 WER points (docs/benchmarks.md); the
#: final transcript never uses it.
INTERIM_POLICY = EncodePolicy(min_window_s=10.0, pad_s=1.0)


class PieceTranscripts:
    """``text(utt)``: the transcript of an utterance, decoded piece by piece with a cache.

    ``transcriber`` is a :class:`streamer.asr.Transcriber` (or any object with
    ``transcribe(audio) -> str``; ``encode`` and ``transcribe(audio, encoded)`` are used
    when present). ``limit`` bounds the cache (least recently used pieces go first; a
    live session only ever needs the pieces of the utterances in progress).
    """

    def __init__(self, transcriber, limit: int = 64) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.transcriber = transcriber
        self.limit = limit
        self._cache: OrderedDict[tuple[int, int, int], str] = OrderedDict()
        #: how many pieces were decoded and how many came from the cache (for tests and benchmarks)
        self.decoded = self.reused = 0

    def text(self, utt: Utterance, encoded=None) -> str:
        """The final transcript. Without cuts: one decode of the whole utterance (on ``encoded``,
        the shared encoder pass, when given). With cuts: the pieces' transcripts joined."""
        if not utt.cuts:
            if encoded is not None:
                return self.transcriber.transcribe(utt.audio, encoded)
            return self.transcriber.transcribe(utt.audio)
        return _join(self.piece(utt, a, b) for a, b in utt.pieces())

    def piece(self, utt: Utterance, a: int, b: int) -> str:
        """The transcript of ``utt.audio[a:b]``, decoded once per (channel, session bounds)."""
        key = (utt.channel or 0, utt.start_sample + a, utt.start_sample + b)
        if key in self._cache:
            self._cache.move_to_end(key)
            self.reused += 1
            return self._cache[key]
        text = self.transcriber.transcribe(np.ascontiguousarray(utt.audio[a:b]))
        self.decoded += 1
        self._cache[key] = text
        while len(self._cache) > self.limit:
            self._cache.popitem(last=False)
        return text

    def interim(self, utt: Utterance, abandon: threading.Event | None = None) -> str | None:
        """Words so far of an utterance in progress (:meth:`Segmenter.in_progress`): the closed
        pieces as the final transcript will have them (decoded now if not yet, so the final
        finds them ready), and the open piece on :data:`INTERIM_POLICY`'s cheaper window.

        ``abandon``: once set, the next step is not started and None is returned; the open
        piece's encoder pass and decode are one step each (neither can be interrupted).
        """
        pieces = utt.pieces()
        closed = []
        for a, b in pieces[:-1]:
            if abandon is not None and abandon.is_set():
                return None
            closed.append(self.piece(utt, a, b))
        a, _ = pieces[-1]
        tail = np.ascontiguousarray(utt.audio[a:])
        encode = getattr(self.transcriber, "encode", None)
        if encode is not None:
            encoded = encode(tail, INTERIM_POLICY)
            if abandon is not None and abandon.is_set():
                return None
            open_text = self.transcriber.transcribe(tail, encoded)
        else:
            open_text = self.transcriber.transcribe(tail)
        return _join([*closed, open_text])


def _join(texts) -> str:
    return " ".join(t.strip() for t in texts if t and t.strip())
