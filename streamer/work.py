"""Where ASR and features run: the one module that starts threads.

:class:`Work` runs each utterance's ASR and features inline, or in one worker thread when
the pipeline speculates (and the audio-only features in a second one with ``overlap``),
plus the interim decodes of utterances still in progress when that worker is idle.
:class:`~streamer.pipeline.LivePipeline` drives it from whatever thread calls ``run``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from streamer.events import InterimEvent, UtteranceEvent
from streamer.segmenter import Segmenter, Utterance

if TYPE_CHECKING:
    from streamer.pipeline import UtteranceProcessor

log = logging.getLogger(__name__)

#: ``Prepared.error`` of a speculative guess abandoned because speech went on.
STALE = "stale guess"


class Work:
    """Where ASR and features run: inline, or in the one worker thread when speculating;
    with ``overlap`` the audio-only features of each utterance run in a second thread.

    With speculation every ``prepare`` goes through a single worker thread, so the
    extractors are never used from two threads at once; the pipeline thread keeps
    reading audio (and deciding utterance ends on time) meanwhile.
    """

    def __init__(
        self,
        processor: UtteranceProcessor,
        speculate: bool,
        overlap: bool = False,
        guess_words_after: int | None = None,
    ) -> None:
        self.processor = processor
        #: With interim words on: a speculative guess at least this many samples long is also
        #: shown as interim words once transcribed (the decode is paid for anyway, and it reads
        #: the audio on the final's window), and the interim cadence counts from it.
        self.guess_words_after = guess_words_after
        self._guessed: list[tuple[int, Utterance, Future]] = []  # guesses whose words are still to show
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ser-live-prepare") if speculate else None
        self.audio_pool = ThreadPoolExecutor(1, thread_name_prefix="ser-live-audio") if overlap else None
        #: per segmenter: the guess's bounds, its result, and its flag set once speech outgrows it
        self.pending: dict[int, tuple[tuple[int, int], Future, threading.Event]] = {}
        #: per segmenter: the interim decode running, and its flag set when the worker is wanted for a
        #: guess or a final (the decode then stops after its encoder pass instead of holding the worker)
        self.interim_jobs: dict[int, tuple[Future, threading.Event]] = {}
        self.interim_at: dict[int, int] = {}  # per segmenter: samples heard at the last interim
        self.finished_at: dict[int, float] = {}  # per segmenter: end (s) of its last final event
        self.guessed_at: dict[int, float] = {}  # per segmenter: when its pending guess was submitted

    def _idle(self) -> bool:
        guesses = (f for _, f, _ in self.pending.values())
        return all(f.done() for f in guesses) and all(f.done() for f, _ in self.interim_jobs.values())

    def interim(self, channel: int, seg: Segmenter, after: int, every: int) -> None:
        """Start an interim decode of ``seg``'s utterance in progress if the worker is idle, the
        utterance is ``after`` samples long and ``every`` samples were heard since the last one."""
        if self.pool is None or not self._idle() or seg.samples_seen - self.interim_at.get(channel, -every) < every:
            return
        utt = seg.in_progress()
        if utt is None or utt.end_sample - utt.start_sample < after:
            return
        self.interim_at[channel] = seg.samples_seen
        flag = threading.Event()
        self.interim_jobs[channel] = (self.pool.submit(self.processor.interim, utt, flag), flag)

    def _yield_interims(self) -> None:
        """The worker is wanted for a speculative guess or a final: running interim decodes
        give up after the step they are in (their words would be late and stale anyway)."""
        for job, flag in self.interim_jobs.values():
            if not job.done():
                flag.set()

    def interims(self) -> list[InterimEvent]:
        """Interim events whose decode has finished, unless their utterance has ended meanwhile."""
        out = []
        for channel, (future, _) in list(self.interim_jobs.items()):
            if not future.done():
                continue
            del self.interim_jobs[channel]
            if future.cancelled() or future.exception() is not None:
                log.debug("interim decode failed: %s", None if future.cancelled() else future.exception())
                continue
            event = future.result()
            if event is None:  # given up for a guess or a final
                continue
            if event.start_s >= self.finished_at.get(channel, -1.0):  # same rounding (ms) on both sides
                out.append(event)
        waiting = []
        for channel, utt, future in self._guessed:
            if not future.done():
                waiting.append((channel, utt, future))
                continue
            if future.cancelled() or future.exception() is not None:
                continue
            prepared = future.result()
            if not prepared.text.strip() or round(utt.start_s, 3) < self.finished_at.get(channel, -1.0):
                continue  # no words, or its utterance has ended: the final event says it all
            out.append(InterimEvent.of(utt, prepared.text, prepared.latency.get("asr", 0.0)))
        self._guessed = waiting
        return out

    def speculate(self, channel: int, utt: Utterance | None) -> None:
        """Start preparing ``utt``, the segmenter's guess of the utterance that ends if the
        pause goes on (None: no guess now). A different guess, or none while the channel
        has a guess in work, means speech went on: that guess is flagged stale, so the
        worker drops it after its ASR pass instead of encoding its text and voice too."""
        if self.pool is None:
            return
        key = (utt.start_sample, utt.end_sample) if utt is not None else None
        old = self.pending.get(channel)
        if old is not None and old[0] != key:
            old[2].set()
        if utt is None or (old is not None and old[0] == key):
            return
        if any(not f.done() for _, f, _ in self.pending.values()):
            # The worker is still on an earlier guess: queueing more would make the final
            # utterance wait behind several stale guesses; this bounds it to one.
            return
        self._yield_interims()
        stale = threading.Event()
        future = self.pool.submit(self.processor.prepare, utt, self.audio_pool, stale)
        self.pending[channel] = (key, future, stale)
        self.guessed_at[channel] = time.perf_counter()
        if self.guess_words_after is not None and utt.end_sample - utt.start_sample >= self.guess_words_after:
            self._guessed.append((channel, utt, future))
            self.interim_at[channel] = utt.end_sample  # the interim cadence counts from this decode

    def finish(self, channel: int, utt: Utterance) -> UtteranceEvent:
        decided_at = time.perf_counter()
        self.finished_at[channel] = round(utt.end_s, 3)
        job, flag = self.interim_jobs.pop(channel, (None, None))
        if job is not None:
            job.cancel()  # not started yet: its words are stale
            flag.set()  # running: it stops after its encoder pass
        if self.pool is None:
            return self.processor(utt, decided_at, self.processor.prepare(utt, self.audio_pool))
        old = self.pending.pop(channel, None)
        head_start = None
        if old is not None and old[0] == (utt.start_sample, utt.end_sample) and not old[1].cancelled():
            future = old[1]  # same samples as the guess: its result is this utterance's
            head_start = (decided_at - self.guessed_at[channel]) * 1000
        else:
            if old is not None:
                old[2].set()
                old[1].cancel()
            future = self.pool.submit(self.processor.prepare, utt, self.audio_pool)
        prepared = future.result()
        if prepared.error == STALE:  # flagged, then the same samples ended after all: prepare it whole
            prepared = self.pool.submit(self.processor.prepare, utt, self.audio_pool).result()
        elif head_start is not None:  # how long the guess had before the decision (the end silence it hid in)
            prepared.latency["head_start"] = head_start
        return self.processor(utt, decided_at, prepared)

    def drop_guesses(self) -> None:
        for _, _, stale in self.pending.values():
            stale.set()
        for _, flag in self.interim_jobs.values():
            flag.set()
        for future in [f for _, f, _ in self.pending.values()] + [f for f, _ in self.interim_jobs.values()]:
            future.cancel()
        self.pending.clear()
        self.interim_jobs.clear()
        self._guessed.clear()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.audio_pool is not None:
            self.audio_pool.shutdown(wait=True, cancel_futures=True)
