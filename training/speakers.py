"""Speaker attribution on rendered conversations: who spoke each utterance, scored against the script.

    python -m training speakers --split test [--embedder ge2e|whisper] [--sweep] [--conversations 12]
    python -m training speakers --fit-projection      # rebuild streamer/assets/speaker_projection.npz

Conversations are built from voices the bundled model never trained on (the ``validation`` or
``test`` side of the shared voice splits: RAVDESS actors 1-20 and EmoDB speakers, and the
espeak-ng/flite/festival voices of :data:`training.data.tts.VOICE_SPLITS`), rendered as one mono
signal with pauses, cut by the real segmenter, and each cut is given a speaker online by
:class:`streamer.speakers.SpeakerTracker`. Acted voices change emotion from turn to turn, so an
angry and a calm utterance of one person must stay one speaker. Thresholds are chosen on
``validation`` (``--sweep``) and reported on ``test``.

Scores, per set, pooled over its conversations:

- ``attribution``: share of scripted utterances whose cut carries the right speaker, under the
  best one-to-one mapping of predicted to true speakers (``scipy.optimize.linear_sum_assignment``
  per conversation). A missed utterance or one called overlapping counts as wrong.
- ``der``: diarisation error rate on a 10 ms grid, no collar: (missed speech + false alarm +
  speaker confusion) / scripted speech, under the same kind of mapping (by overlap time);
  ``confusion`` is its speaker part alone (the rest is the segmenter's).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from streamer.segmenter import Segmenter, SegmenterConfig
from streamer.speakers import SpeakerConfig, SpeakerTracker

log = logging.getLogger(__name__)

RATE_HZ = 16000
FRAME_S = 0.01


@dataclass(frozen=True)
class SpeakerSet:
    """``source``: ``acted`` clips of ``corpora``, ``tts`` voices reading MELD lines, or ``dialogues``:
    whole MELD dialogues read by synthetic voices, one per MELD speaker (the words-only recordings of
    the voice issue). ``voices`` per conversation (0 for ``dialogues``: as many as the dialogue has)."""

    source: str
    voices: int
    corpora: tuple[str, ...] = ("ravdess",)
    turns: int = 12
    description: str = ""


SETS: dict[str, SpeakerSet] = {
    "ravdess-2": SpeakerSet("acted", 2, ("ravdess",), 12, "two RAVDESS actors, any emotion each turn"),
    "acted-4": SpeakerSet("acted", 4, ("ravdess", "emodb"), 16, "four acted voices (RAVDESS + EmoDB), any emotion"),
    "emodb-2": SpeakerSet("acted", 2, ("emodb",), 12, "two EmoDB speakers (German), any emotion"),
    "one-voice": SpeakerSet("acted", 1, ("ravdess",), 10, "one RAVDESS actor across emotions: must stay one"),
    "tts-2": SpeakerSet("tts", 2, turns=12, description="two synthetic voices reading MELD lines"),
    "tts-4": SpeakerSet("tts", 4, turns=16, description="four synthetic voices reading MELD lines"),
    "acted-6": SpeakerSet("acted", 6, ("ravdess", "emodb"), 24, "six acted voices (RAVDESS + EmoDB), any emotion"),
    "tts-6": SpeakerSet("tts", 6, turns=24, description="six synthetic voices reading MELD lines"),
    # The kind of recording the second held-back set is: real dialogues (2-7 people, most of
    # them two or three) with their short lines ("What?", "Yeah."), which the tts-N sets leave out.
    "dialogues": SpeakerSet("dialogues", 0, turns=0, description="MELD dialogues read by synthetic voices"),
}


@dataclass(frozen=True)
class Turn:
    start_s: float
    end_s: float
    speaker: str


@dataclass
class Conversation:
    """A rendered mono conversation: the script (true turns) and the segmenter's cuts with their embeddings."""

    name: str
    turns: list[Turn]
    cuts: list[tuple[float, float]]
    embeddings: list[tuple[np.ndarray, np.ndarray | None]]


def _trim(audio: np.ndarray) -> np.ndarray:
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[voiced[0] : voiced[-1] + 1] if len(voiced) else audio


def _voice_pools(spec: SpeakerSet, split: str, root: Path) -> dict[str, list[Callable[[], np.ndarray]]]:
    """Voice -> loaders of its utterances (acted clips, or TTS lines of the split's MELD dialogues)."""
    from streamer.audio import load_audio

    if spec.source == "acted":
        from training.data.shared import read_clips, voice_splits

        clips = read_clips(root, spec.corpora)
        splits = voice_splits(clips, seed=0)
        pools: dict[str, list] = {}
        for clip in clips:
            if splits[clip.voice] == split:
                pools.setdefault(clip.voice, []).append(lambda p=clip.path: _trim(load_audio(p)))
        return pools
    from training.data.shared import meld_dialogues
    from training.data.tts import VOICE_SPLITS, engine_available, rendered

    _, dialogues = meld_dialogues(split, root)
    lines = [u.text for d in dialogues[:60] for u in d.utterances if u.text and 3 <= len(u.text.split()) <= 20]
    voices = [v for v in VOICE_SPLITS[split] if engine_available(v.engine)]
    return {v.id: [lambda v=v, t=t: load_audio(rendered(v, t)) for t in lines[i::7][:40]] for i, v in enumerate(voices)}


def _join(clips: Iterable[tuple[np.ndarray, str]], rng: random.Random, gap_s: tuple[float, float]):
    """Clips one after another, 0.5 s of silence first and a seeded gap of ``gap_s`` after each:
    (mono audio, true turns). ``clips`` may draw from ``rng`` as it is read; each gap is drawn
    after its clip, so a lazy generator keeps the seeded order of draws."""
    pieces, turns, pos = [np.zeros(8000, np.float32)], [], 8000
    for audio, speaker in clips:
        turns.append(Turn(pos / RATE_HZ, (pos + len(audio)) / RATE_HZ, speaker))
        gap = np.zeros(int(rng.uniform(*gap_s) * RATE_HZ), np.float32)
        pieces += [audio, gap]
        pos += len(audio) + len(gap)
    return np.concatenate(pieces), turns


def _dialogues(split: str, root: Path, count: int, seed: int) -> list[tuple[str, np.ndarray, list]]:
    """The split's first ``count`` MELD dialogues with at least two speakers, read by its synthetic voices
    as the words-only data renders them (:func:`training.data.mixed.load_tts_words`), every line kept."""
    from streamer.audio import load_audio
    from training.data.mixed import load_tts_words

    rng = random.Random(f"speakers:{seed}:{split}:dialogues")
    data = load_tts_words(split, root)
    out = []
    for d in data.dialogues:
        if len({u.voice for u in d.utterances}) < 2:
            continue
        lines = ((_trim(np.asarray(load_audio(u.audio_path), np.float32)), str(u.voice)) for u in d.utterances)
        out.append((f"{split}-{d.id}", *_join(lines, rng, (1.0, 1.4))))  # the lvo recordings' gaps
        if len(out) == count:
            break
    return out


def render(spec: SpeakerSet, split: str, root: Path, count: int, seed: int = 0) -> list[tuple[str, np.ndarray, list]]:
    """``count`` conversations: (name, mono audio, true turns); seeded, so every candidate hears the same."""
    if spec.source == "dialogues":
        return _dialogues(split, root, count, seed)
    pools = _voice_pools(spec, split, root)
    if len(pools) < spec.voices:
        raise ValueError(f"the {split} split has {len(pools)} voices for this set, it needs {spec.voices}")
    rng = random.Random(f"speakers:{seed}:{split}:{spec}")
    out = []
    for n in range(count):
        voices = rng.sample(sorted(pools), spec.voices)
        order = [rng.randrange(spec.voices)]
        while len(order) < spec.turns:  # mostly alternating, sometimes the same person goes on
            others = [k for k in range(spec.voices) if k != order[-1]]
            order.append(rng.choice(others) if others and rng.random() >= 0.2 else order[-1])
        clips = ((np.asarray(rng.choice(pools[voices[k]])(), np.float32), voices[k]) for k in order)
        out.append((f"{split}-{n:02d}", *_join(clips, rng, (0.7, 1.3))))
    return out


def cut(audio: np.ndarray, config: SegmenterConfig | None = None) -> list:
    """The live segmenter's utterances of a whole recording."""
    seg = Segmenter(config or SegmenterConfig())
    return [*seg.push(audio), *seg.flush()]


def embedder_fn(name: str) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
    """``ge2e``: the resemblyzer encoder; ``whisper``: mean Whisper tiny.en encoder states (the ASR pass)."""
    if name == "ge2e":
        from streamer.speakers import VoiceEmbedder

        return VoiceEmbedder().embed
    if name == "whisper":
        from streamer.asr import Transcriber

        asr = Transcriber("tiny.en", device="cpu")
        return lambda audio: (asr.encode(audio).speech_states().mean(axis=0), None)
    raise ValueError(f"unknown embedder {name!r}: use ge2e or whisper")


def prepare(sets: list[str], split: str, root: Path, count: int, embed) -> dict[str, list[Conversation]]:
    out = {}
    for name in sets:
        convs = []
        for cname, audio, turns in render(SETS[name], split, root, count):
            utts = cut(audio)
            cuts = [(u.start_sample / RATE_HZ, u.end_sample / RATE_HZ) for u in utts]
            convs.append(Conversation(cname, turns, cuts, [embed(u.audio) for u in utts]))
        out[name] = convs
        log.info("%s: %d conversations, %d cuts", name, len(convs), sum(len(c.cuts) for c in convs))
    return out


def center(prepared: dict[str, list[Conversation]]) -> None:
    """Subtract the mean embedding of all cuts (Whisper states share a large common part)."""
    vecs = [e for convs in prepared.values() for c in convs for e, _ in c.embeddings]
    mean = np.mean(vecs, axis=0)
    for convs in prepared.values():
        for c in convs:
            c.embeddings = [(e - mean, p) for e, p in c.embeddings]


def assign(conv: Conversation, config: SpeakerConfig, second_pass: float | None = None) -> list[str | None]:
    """Online labels (the live tracker), or with ``second_pass`` the replay's re-clustering of the
    whole conversation at that merge threshold (:mod:`streamer.recluster`)."""
    if second_pass is not None:
        from streamer.recluster import recluster

        return recluster([e for e, _ in conv.embeddings], config, merge_above=second_pass)
    tracker = SpeakerTracker(config)
    return [tracker.push(e, p).speaker for e, p in conv.embeddings]


def best_mapping(matrix: np.ndarray) -> float:
    """Largest total of a one-to-one pairing of rows (truth) and columns (predicted)."""
    if matrix.size == 0:
        return 0.0
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return float(matrix[rows, cols].sum())


def score(conv: Conversation, labels: list[str | None]) -> dict[str, float]:
    """Attribution counts and DER frame counts of one conversation."""
    truth = sorted({t.speaker for t in conv.turns})
    pred = sorted({x for x in labels if x is not None})
    counts = np.zeros((len(truth), len(pred)))
    abstained = 0
    for t in conv.turns:
        best, best_ov = None, 0.2  # a cut must overlap the turn by 0.2 s to be its cut
        for (s, e), lab in zip(conv.cuts, labels):
            ov = min(e, t.end_s) - max(s, t.start_s)
            if ov > best_ov:
                best, best_ov = (lab,), ov
        if best is not None and best[0] is None:
            abstained += 1
        elif best is not None:
            counts[truth.index(t.speaker), pred.index(best[0])] += 1
    end = max([t.end_s for t in conv.turns] + [e for _, e in conv.cuts])
    n = int(np.ceil(end / FRAME_S)) + 1
    ref, hyp = np.full(n, -1), np.full(n, -1)
    for t in conv.turns:
        ref[int(round(t.start_s / FRAME_S)) : int(round(t.end_s / FRAME_S))] = truth.index(t.speaker)
    for (s, e), lab in zip(conv.cuts, labels):
        if lab is not None:
            hyp[int(round(s / FRAME_S)) : int(round(e / FRAME_S))] = pred.index(lab)
    both = (ref >= 0) & (hyp >= 0)
    overlap = np.zeros((len(truth), len(pred)))
    np.add.at(overlap, (ref[both], hyp[both]), 1)
    return {
        "turns": len(conv.turns),
        "correct": best_mapping(counts),
        "abstained": abstained,
        "speech": float((ref >= 0).sum()),
        "missed": float(((ref >= 0) & (hyp < 0)).sum()),
        "false_alarm": float(((ref < 0) & (hyp >= 0)).sum()),
        "confusion": float(both.sum() - best_mapping(overlap)),
        "speakers_true": len(truth),
        "speakers_found": len(pred),
    }


def evaluate(
    prepared: dict[str, list[Conversation]],
    config: SpeakerConfig,
    second_pass: float | None = None,
    known_count: bool = False,
) -> dict[str, dict]:
    """Per set: attribution, DER, confusion, abstentions, mean speakers found vs true
    (``known_count``: each conversation's tracker is told how many people speak in it, ``--speakers N``)."""
    results = {}
    for name, convs in prepared.items():
        rows = [
            score(c, assign(c, replace(config, speakers=min(len({t.speaker for t in c.turns}), config.max_speakers))
                            if known_count else config,
                            second_pass))
            for c in convs
        ]
        tot = {k: sum(r[k] for r in rows) for k in rows[0]}
        results[name] = {
            "conversations": len(rows),
            "utterances": int(tot["turns"]),
            "attribution": tot["correct"] / tot["turns"],
            "der": (tot["missed"] + tot["false_alarm"] + tot["confusion"]) / tot["speech"],
            "confusion": tot["confusion"] / tot["speech"],
            "abstained": tot["abstained"] / tot["turns"],
            "speakers_found": tot["speakers_found"] / len(rows),
            "speakers_true": tot["speakers_true"] / len(rows),
        }
    return results


def sweep(prepared: dict, thresholds: list[float], base: SpeakerConfig) -> dict[float, dict]:
    return {th: evaluate(prepared, replace(base, new_below=th)) for th in thresholds}


def table(results: dict[str, dict]) -> str:
    lines = [
        "| set | conversations | utterances | attribution | DER | confusion | abstained | speakers found / true |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['conversations']} | {r['utterances']} | {r['attribution']:.3f} | {r['der']:.3f} | "
            f"{r['confusion']:.3f} | {r['abstained']:.3f} | {r['speakers_found']:.2f} / {r['speakers_true']:.0f} |"
        )
    return "\n".join(lines)


def run(args) -> str:
    """``python -m training speakers``: render, cut, embed once; then assign and score (per threshold)."""
    if args.fit_projection:
        from training.speaker_fit import run_fit

        return run_fit(args)
    if args.conversations < 1:
        raise ValueError(f"--conversations must be at least 1, got {args.conversations}")
    names = args.sets or list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise ValueError(f"unknown set(s) {', '.join(unknown)} for --sets; use {', '.join(SETS)}")
    base = SpeakerConfig()
    if args.projection is not None:  # "none": raw vectors (the Whisper candidate is never projected)
        base = replace(base, projection=None if args.projection == "none" else Path(args.projection))
    if args.embedder == "whisper":
        base = replace(base, projection=None)
    if args.center_strength is not None:
        base = replace(base, center_strength=args.center_strength)
    if args.fill_sweep and not args.speakers:
        raise ValueError("--fill-sweep needs --speakers: it is the threshold while known people are still unheard")
    SpeakerTracker(base)  # a bad setting or projection file fails here, before minutes of rendering
    import torch

    torch.set_num_threads(1)  # same vectors; on a shared 2-core CPU two spinning threads are many times slower
    embed = embedder_fn(args.embedder)
    timed: list[float] = []

    def timed_embed(audio):
        t = time.perf_counter()
        out = embed(audio)
        timed.append((time.perf_counter() - t) * 1000)
        return out

    prepared = prepare(names, args.split, Path(args.data_root), args.conversations, timed_embed)
    if args.embedder == "whisper":
        center(prepared)
    out, text = {}, []
    # (title, results key, settings, second-pass merge threshold): live labels first, on the same cuts
    runs = [(f"new speaker below similarity {t}", t, {"new_below": t}, None) for t in args.sweep or [base.new_below]]
    if args.fill_sweep:
        fills = args.fill_sweep
        runs = [(f"known count, new below {f} till all heard", f"fill {f}", {"fill_below": f}, None) for f in fills]
    if args.second_pass:
        from streamer.recluster import MERGE_ABOVE

        merges = args.second_pass_sweep or [MERGE_ABOVE]
        runs += [(f"second pass, merge above {m}", f"second-pass {m}", {}, m) for m in merges]
    for what, key, settings, merge in runs:
        config = replace(base, **settings)
        if args.speakers:
            results = evaluate(prepared, config, merge, known_count=True)
        else:
            results = evaluate(prepared, config, merge)
        out[key] = results
        text.append(f"{what} ({args.embedder}, {args.split}):\n{table(results)}")
    text.append(f"embedding ms per cut: median {np.median(timed):.1f} (no quiet machine: see bench/ for timings)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(base).items() if k != "new_below"}
        summary = {"embedder": args.embedder, "split": args.split, "config": config, "results": out}
        args.out.write_text(json.dumps(summary, indent=2))
    return "\n\n".join(text)


def add_parser(sub) -> None:
    """The ``python -m training speakers`` subcommand."""
    sp = sub.add_parser("speakers", help="score online speaker attribution (accuracy, DER) on rendered conversations")
    sp.add_argument("--split", default="test", choices=("validation", "test"), help="whose voices (never train)")
    sp.add_argument("--sets", nargs="+", default=None, help="which sets (default: all)")
    sp.add_argument("--conversations", type=int, default=12, help="conversations per set")
    sp.add_argument("--embedder", default="ge2e", choices=("ge2e", "whisper"))
    sp.add_argument("--speakers", action="store_true", help="tell the tracker each conversation's number of voices")
    sp.add_argument("--sweep", nargs="+", type=float, default=None, metavar="SIM", help="new-speaker thresholds")
    sp.add_argument(
        "--fill-sweep",
        nargs="+",
        type=float,
        default=None,
        metavar="SIM",
        help="with --speakers: new-speaker thresholds while known people are still unheard (instead of --sweep)",
    )
    sp.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    sp.add_argument("--second-pass", action="store_true", help="also score the replay's re-clustering (same cuts)")
    sp.add_argument("--second-pass-sweep", nargs="+", type=float, default=None, metavar="SIM", help="merge thresholds")
    sp.add_argument("--data-root", default="../shared/data")
    sp.add_argument("--projection", default=None, metavar="NPZ|none", help="speaker back end (default: shipped)")
    sp.add_argument("--center-strength", type=float, default=None, help="share of the session mean removed")
    sp.add_argument("--fit-projection", action="store_true", help="fit the back end on train voices and write it")
    sp.add_argument("--nap-dims", type=int, default=32, help="--fit-projection: within-speaker directions removed")
    sp.add_argument("--projection-out", type=Path, default=None, help="--fit-projection: where (default: the asset)")
