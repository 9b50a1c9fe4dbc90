"""Replay recordings through the real live pipeline and report latency and speed.

    python bench/replay_bench.py recordings/demo-*.flac [--speed realtime|max] [--model CKPT]
        [--asr-model tiny.en [.cache/whisper-base ...]] [--end-silence-ms 500 300] [--compare]

Latency per utterance is measured by the pipeline itself, from the moment the
segmenter decided the utterance had ended to the event being emitted, per stage
(ASR, openSMILE, text encoder, model), grouped by utterance length and by the
end-of-speech silence setting. ``--compare`` also runs the plain sequential way
(no speculative work during the end-of-speech wait, openSMILE after Whisper) in the
same run and reports the ratio. With ``--speed max`` the real-time factor is wall time / audio duration.
``--ui`` runs the Textual app headless around the pipeline and adds the "ui" stage (event
emitted -> the screen refresh that drew its row) and "on_screen" (total + ui).
Several ``--asr-model`` values run one after another and end with a table of real-time
factor, latency and word error rate (against ``<recording>.jsonl`` where it exists) per
ASR model (``bench/get_whisper_base.py`` assembles Whisper base offline).
``--events DIR`` writes each run's utterance events (their per-stage ``latency_ms`` included)
as JSONL, one file per run, to find what makes a percentile's tail.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np

from streamer.options import TEXT_RUNTIMES, sleeping_threads

sleeping_threads()  # as ser-live does, before torch or Whisper loads

BUCKETS = (("<= 2 s", 0.0, 2.0), ("2-6 s", 2.0, 6.0), ("> 6 s", 6.0, 1e9))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


#: pipeline modes: name -> (speculate, overlap, interim)
MODES = {
    "interim": (True, True, True),
    "speculative": (True, True, False),
    "overlap": (False, True, False),
    "sequential": (False, False, False),
}


def measure(recordings: list[Path], args, end_silence_ms: int, mode: str, asr_model: str, text_runtime: str = "auto"):
    from streamer.cli import build_parser, build_pipeline
    from streamer.events import InterimEvent, UtteranceEvent
    from training.e2e import read_truth, truth_path, word_error_rate

    events, audio_s, wall_s, description, wers = [], 0.0, 0.0, {}, []
    global cpu_s, delays, interims
    cpu_s, delays, interims = 0.0, [], []
    work.clear()
    for rec in recordings:
        argv = [
            "--replay",
            str(rec),
            "--speed",
            args.speed,
            "--asr-model",
            asr_model,
            "--no-ui",
            "--end-silence-ms",
            str(end_silence_ms),
            "--text-runtime",
            text_runtime,
        ]
        if args.model:
            argv += ["--model", str(args.model)]
        if args.block_ms is not None:
            argv += ["--block-ms", str(args.block_ms)]
        if args.asr_threads is not None:
            argv += ["--asr-threads", str(args.asr_threads)]
        speculate, overlap, interim = MODES[mode]
        pipeline, _ = build_pipeline(build_parser().parse_args(argv))
        pipeline.config = dataclasses.replace(pipeline.config, speculate=speculate, overlap=overlap, interim=interim)
        description = pipeline.describe()
        got: list = []
        timed: list = []  # (perf_counter at emission, event)

        def tap(event, got=got, timed=timed) -> None:
            got.append(event)
            timed.append((time.perf_counter(), event))

        census(pipeline.processor, work)
        t0, c0 = time.perf_counter(), time.process_time()
        if args.ui:
            shown, interim_ui = run_in_app(pipeline, tap, with_interim=True)
            for e in got:
                if isinstance(e, UtteranceEvent) and e.index in shown:
                    e.latency_ms["ui"] = shown[e.index]
                    e.latency_ms["on_screen"] = e.latency_ms["total"] + shown[e.index]
        else:
            pipeline.run(tap, threading.Event(), threading.Event())
        wall_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        if args.ui and interim:  # after the timing: word timestamps need another Whisper pass
            delays += interim_word_delays(rec, timed, interim_ui)
        interims += [e for e in got if isinstance(e, InterimEvent)]
        audio_s += pipeline.source.duration_s  # decoded once, by the source
        utts = [e for e in got if isinstance(e, UtteranceEvent) and e.error is None]
        events += utts
        truth = truth_path(rec)
        if truth is not None:
            reference = " ".join(t.text for t in read_truth(truth))
            wers.append((len(reference.split()), word_error_rate(reference, " ".join(e.text for e in utts))))
    words = sum(n for n, _ in wers)
    description["wer"] = f"{sum(n * w for n, w in wers) / words:.3f}" if words else "n/a"
    return events, audio_s, wall_s, description


cpu_s = 0.0  # CPU seconds (all threads) of the last measure(): the real-time factor's numerator
work: dict[str, list] = {}  # stage -> [calls, wall s] of the last measure() (see census)
delays: list[dict] = []  # interim words of the last measure(): the word, its place, its delay (s)
interims: list = []  # the interim events of the last measure()
_work_lock = threading.Lock()


def census(processor, tally: dict[str, list]) -> None:
    """Count the calls and wall time of the pipeline's costly steps into ``tally``, whichever
    thread makes them: what the CPU went on (final and speculative preparations, guesses dropped
    as stale, interim decodes, Whisper's encoder passes and decodes, text reads, voice vectors)."""
    from streamer.work import STALE

    def wrap(obj, name: str, key: str) -> None:
        fn = getattr(obj, name, None)
        if fn is None:
            return

        def counted(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            with _work_lock:
                row = tally.setdefault(key, [0, 0.0])
                row[0] += 1
                row[1] += time.perf_counter() - t
                if key == "prepare" and getattr(out, "error", None) == STALE:
                    tally.setdefault("prepare: stale", [0, 0.0])[0] += 1
                if key == "interim" and out is None:
                    tally.setdefault("interim: given up", [0, 0.0])[0] += 1
            return out

        setattr(obj, name, counted)

    wrap(processor, "prepare", "prepare")
    wrap(processor, "interim", "interim")
    if processor.transcriber is not None:
        wrap(processor.transcriber, "encode", "whisper encode")
        wrap(processor.transcriber, "transcribe", "whisper decode")
    wrap(processor.features, "text_vector", "text read")
    if processor.speakers is not None:
        wrap(processor.speakers, "embed", "voice vector")


def interim_word_delays(rec: Path, timed: list, interim_ui: list[tuple[float, float]]) -> list[dict]:
    """Seconds from each word's end (Whisper word timestamps on the finished utterance) to the
    screen refresh that first showed it (an interim row or the final row), for turns > 6 s.

    The audio clock is tied to the wall clock by the level events (emitted as their block is
    read: the least delayed one gives the offset); a word counts as shown once a row of its
    utterance has it within two places of its position in the final transcript. Whisper often
    writes a word differently before it hears what follows ("Okay, Joly" before "Oh hey, Joey"),
    so ``any_delay_s`` also gives the delay to the first row that shows *a* word there: one whose
    heard audio reaches past the word's end and whose transcript is long enough to have a word
    within two places of it (the streaming-ASR "first hypothesis" latency)."""
    from streamer.asr import Transcriber
    from streamer.audio import load_audio
    from streamer.events import InterimEvent, LevelEvent, UtteranceEvent

    offset = min(t - e.time_s for t, e in timed if isinstance(e, LevelEvent))
    ui = iter(ms for _, ms in interim_ui)
    shows: dict[float, list[tuple[float, list[str], float]]] = {}  # (when drawn, words, heard up to s)
    finals: dict[float, float] = {}  # utterance start -> when its final row was drawn
    for t, e in timed:
        if isinstance(e, InterimEvent):
            shows.setdefault(e.start_s, []).append((t + next(ui, 0.0) / 1000, _norm(e.text), e.end_s))
        elif isinstance(e, UtteranceEvent):
            finals[e.start_s] = t + e.latency_ms.get("ui", 0.0) / 1000
            shows.setdefault(e.start_s, []).append((finals[e.start_s], _norm(e.text), e.end_s))
    audio = load_audio(rec)
    asr = Transcriber("tiny.en", device="cpu")
    out = []
    for e in (e for _, e in timed if isinstance(e, UtteranceEvent) and e.error is None):
        if e.end_s - e.start_s <= 6.0:
            continue
        _, words = asr.transcribe_words(audio[int(e.start_s * 16000) : int(e.end_s * 16000)])
        timing = [(w.word, w.end_s) for w in words]
        out += word_delays(e.start_s, timing, shows.get(e.start_s, []), finals[e.start_s], offset)
    return out


def word_delays(start_s: float, words, rows, final_t: float, offset: float) -> list[dict]:
    """One utterance's words (text, end s into the utterance) against the rows that showed it
    ((wall time drawn, normalised words, audio heard up to s), the final row included, drawn at
    ``final_t``); ``offset`` turns audio seconds into wall seconds."""
    out = []
    for i, (text, end_s) in enumerate(words):
        word = _norm(text)
        spoken = offset + start_s + end_s
        seen = [t for t, ws, _ in rows if word and word[0] in ws[max(0, i - 2) : i + 3]]
        hypothesis = [t for t, ws, heard in rows if heard >= start_s + end_s and len(ws) > i - 2]
        if seen:
            out.append(
                {
                    "start_s": start_s,
                    "word": word,
                    "place": i,
                    "end_s": round(end_s, 2),
                    "delay_s": round(min(seen) - spoken, 3),
                    "any_delay_s": round(min(hypothesis + seen) - spoken, 3),
                    "by_final": min(seen) == final_t,
                }
            )
    return out


def _norm(text: str) -> list[str]:
    return ["".join(c for c in w.lower() if c.isalnum()) for w in text.split()]


def run_in_app(pipeline, tap, labels: list[str] | None = None, with_interim: bool = False, **app_options):
    """Run ``pipeline`` inside the real EmotionApp (headless, rendering as usual), calling
    ``tap(event)`` in the pipeline thread for every event; returns {utterance index: ui ms}.
    ``labels`` defaults to the labels of the pipeline's checkpoint; ``app_options`` go to EmotionApp."""
    import asyncio

    from streamer.events import UtteranceEvent
    from streamer.ui import EmotionApp

    utterances = 0

    class Tap:
        def describe(self) -> dict[str, str]:
            return pipeline.describe()

        def run(self, emit, stop, paused) -> None:
            def both(event) -> None:
                nonlocal utterances
                utterances += isinstance(event, UtteranceEvent)
                tap(event)
                emit(event)

            pipeline.run(both, stop, paused)

    app = EmotionApp(Tap(), list(labels or pipeline.processor.labels), **app_options)

    async def drive() -> None:
        # A plain sleep, not ``pilot.pause``: the pilot makes every widget process its queue and
        # forces a screen refresh on each call, which at 20 Hz cost as much CPU as the app's own
        # work (session 19: real-time factor 0.198 against 0.132 without the UI on the same
        # replay; ser-live in a terminal costs ~0.03 for its UI). The app refreshes on its own
        # schedule, as it does in a terminal.
        async with app.run_test(size=(140, 40)):
            while not app.pipeline_done.is_set() or len(app.ui_latency_ms) < min(utterances, app.record_limit):
                await asyncio.sleep(0.1)

    asyncio.run(drive())
    if with_interim:
        return dict(app.ui_latency_ms), list(app.interim_shown)
    return dict(app.ui_latency_ms)


def report(title: str, events, audio_s: float, wall_s: float, speed: str) -> None:
    print(f"\n### {title}: {len(events)} utterances, {audio_s:.1f} s of audio")
    stages = sorted({k for e in events for k in e.latency_ms})
    print("| stage | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|")
    for stage in stages:
        vals = [e.latency_ms[stage] for e in events if stage in e.latency_ms]
        print(f"| {stage} | {pct(vals, 50):.1f} | {pct(vals, 95):.1f} | {max(vals):.1f} |")
    ui = any("on_screen" in e.latency_ms for e in events)
    extra = " on screen p50 ms | on screen p95 ms |" if ui else ""
    print(f"\n| utterance length | n | total p50 ms | total p95 ms | max ms |{extra}")
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if ui else ""))
    for name, lo, hi in BUCKETS:
        bucket = [e for e in events if lo < e.end_s - e.start_s <= hi]
        vals = [e.latency_ms["total"] for e in bucket]
        if vals:
            row = f"| {name} | {len(vals)} | {pct(vals, 50):.1f} | {pct(vals, 95):.1f} | {max(vals):.1f} |"
            if ui:
                seen = [e.latency_ms["on_screen"] for e in bucket if "on_screen" in e.latency_ms]
                row += f" {pct(seen, 50):.1f} | {pct(seen, 95):.1f} |"
            print(row)
    if speed == "max":
        print(f"\nreal-time factor: {wall_s / audio_s:.3f} (wall {wall_s:.1f} s for {audio_s:.1f} s of audio)")
    print(f"\nCPU real-time factor: {cpu_s / audio_s:.3f} (CPU s of all threads per audio s; {cpu_s:.1f} s)")
    if work:
        done = [f"{k} {n} ({s:.1f} s)" if s else f"{k} {n}" for k, (n, s) in sorted(work.items())]
        print("work done (calls, wall s): " + "; ".join(done))
    if delays:
        seconds = [d["delay_s"] for d in delays]
        late = [d["delay_s"] for d in delays if d["end_s"] < 1.5]
        print(
            f"interim-word delay (word end -> on screen), {len(delays)} words of > 6 s turns: "
            f"p50 {pct(seconds, 50):.2f} s, p95 {pct(seconds, 95):.2f} s, max {max(seconds):.2f} s; "
            f"first shown by the final row: {sum(d['by_final'] for d in delays)}; "
            f"words ending in the first 1.5 s: {len(late)}, p50 {pct(late, 50):.2f} s"
        )
        anyword = [d["any_delay_s"] for d in delays]
        print(
            f"a word (right or not yet) on screen at its place: p50 {pct(anyword, 50):.2f} s, "
            f"p95 {pct(anyword, 95):.2f} s, max {max(anyword):.2f} s"
        )
        print(f"interim events: {len(interims)}, decode p50 {pct([e.latency_ms['asr'] for e in interims], 50):.0f} ms")


def main(argv: list[str] | None = None) -> int:
    from streamer.options import sequential_blas

    with sequential_blas():  # as ser-live runs
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--asr-model", nargs="+", default=["tiny.en"], help="one or more; compared in one run")
    ap.add_argument("--speed", choices=("realtime", "max"), default="realtime")
    ap.add_argument("--end-silence-ms", type=int, nargs="+", default=[500])
    ap.add_argument("--compare", action="store_true", help="also run the plain sequential pipeline")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=None, help="pipelines to run (overrides)")
    ap.add_argument("--text-runtime", nargs="+", choices=TEXT_RUNTIMES, default=["auto"], help="compared in one run")
    ap.add_argument("--ui", action="store_true", help="run inside the Textual app (headless) and time the UI stage")
    ap.add_argument("--events", type=Path, default=None, help="write each run's events (JSONL) into this folder")
    ap.add_argument("--block-ms", type=int, default=None, help="audio block length (default: ser-live's)")
    ap.add_argument("--asr-threads", type=int, default=None, help="Whisper's CPU threads (default: ser-live's)")
    args = ap.parse_args(argv)

    from streamer.cli import _quiet_libraries

    _quiet_libraries(False)
    default = "overlap" if args.speed == "max" else "speculative"  # what ser-live does
    modes = args.modes or ([default, "sequential"] if args.compare else [default])
    print(
        f"# {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores; "
        f"ASR {', '.join(args.asr_model)}; speed {args.speed}"
    )
    summary = []
    for asr_model in args.asr_model:
        for silence in args.end_silence_ms:
            totals = {}
            for name, runtime in [(m, r) for m in modes for r in args.text_runtime]:
                events, audio_s, wall_s, desc = measure(args.recordings, args, silence, name, asr_model, runtime)
                label = name if len(args.text_runtime) == 1 else f"{name}, text on {runtime}"
                if args.events is not None:
                    from streamer.export import JsonlWriter

                    args.events.mkdir(parents=True, exist_ok=True)
                    stem = f"{Path(asr_model).name}-{name}-{runtime}-{silence}ms"
                    (args.events / f"{stem}.jsonl").unlink(missing_ok=True)  # a fresh file per run
                    with JsonlWriter(args.events / f"{stem}.jsonl") as writer:
                        for event in events:
                            writer.write(event)
                        for event in interims:  # interim events after the finals, by their start
                            writer.write(event)
                    if delays:  # each interim word: its place in its turn and its delay
                        with open(args.events / f"{stem}-words.jsonl", "w", encoding="utf-8") as f:
                            f.writelines(json.dumps(d) + "\n" for d in delays)
                totals[label] = [e.latency_ms["total"] for e in events]
                report(
                    f"ASR {asr_model}, {name}, text on {runtime}, end silence {silence} ms, model {desc.get('model')} "
                    f"on {desc.get('device')}",
                    events,
                    audio_s,
                    wall_s,
                    args.speed,
                )
                asr = [e.latency_ms["asr"] for e in events if "asr" in e.latency_ms]
                summary.append(
                    (asr_model, label, silence, wall_s / audio_s, pct(asr, 50), pct(totals[label], 95), desc["wer"])
                )
            if default in totals and "sequential" in totals:
                s, q = totals[default], totals["sequential"]
                print(
                    f"\nsequential / {default} latency: p50 {pct(q, 50) / pct(s, 50):.2f}x, "
                    f"p95 {pct(q, 95) / pct(s, 95):.2f}x"
                )
    if summary:
        print("\n| ASR model | pipeline | end silence ms | wall / audio | ASR p50 ms | total p95 ms | WER |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for row in summary:
            print("| {} | {} | {} | {:.3f} | {:.1f} | {:.1f} | {} |".format(*row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
