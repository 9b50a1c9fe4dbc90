"""End-to-end evaluation of the live tracker on a recording with ground truth.

The recording is replayed (as fast as possible) through the real pipeline:
VAD -> Whisper -> features -> model. Predicted utterances are aligned to the
ground-truth utterances by time overlap, then we report weighted F1 of the
labels (a missed utterance counts as wrong), segmentation errors (missed,
split, merged, false alarms) and the word error rate of the transcripts.

Ground truth is JSONL, one utterance a line:
``{"start_s": 0.6, "end_s": 2.9, "speaker": "A", "text": "...", "label": "joy"}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

MISSED = "<missed>"


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str = ""
    label: str | None = None
    speaker: str | None = None
    confidence: float = 1.0
    #: What each channel said on its own (``{"audio": label, "text": label}``), where the model tells.
    channels: tuple[tuple[str, str], ...] = ()
    #: The distributions behind the answers: ``{"fused": {label: p}, "audio": {...}, "text": {...}}``
    #: (kept so combination rules can be scored on the same utterances without a second replay).
    probs: dict[str, dict[str, float]] = field(default_factory=dict, compare=False)


def read_truth(path: Path) -> list[Segment]:
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(
                Segment(
                    float(row["start_s"]),
                    float(row["end_s"]),
                    row.get("text", ""),
                    row.get("label"),
                    row.get("speaker"),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n} is not a ground-truth line with start_s/end_s ({exc})") from None
    return out


def truth_path(recording: Path) -> Path | None:
    """The ground truth beside a recording: ``NAME.jsonl``, or for ``NAME-stereo.*`` the
    mono demo's ``NAME.jsonl`` (both channels of a stereo demo share one script)."""
    recording = Path(recording)
    for candidate in (
        recording.with_suffix(".jsonl"),
        recording.with_name(recording.stem.removesuffix("-stereo") + ".jsonl"),
    ):
        if candidate.is_file():
            return candidate
    return None


def overlap(a: Segment, b: Segment) -> float:
    return max(0.0, min(a.end_s, b.end_s) - max(a.start_s, b.start_s))


def align(truth: list[Segment], pred: list[Segment], min_overlap_s: float = 0.2) -> dict:
    """Match by overlap. Each prediction belongs to the truth it overlaps most; a truth
    with no prediction is missed, with several is split; a prediction that covers
    (>= ``min_overlap_s``) several truths is a merge; one overlapping none is a false alarm."""
    owner = []
    for p in pred:
        ov = [overlap(t, p) for t in truth]
        owner.append(int(np.argmax(ov)) if ov and max(ov) > 0 else -1)
    per_truth: list[list[int]] = [[] for _ in truth]
    for j, i in enumerate(owner):
        if i >= 0:
            per_truth[i].append(j)
    merged = sum(1 for p in pred if sum(overlap(t, p) >= min_overlap_s for t in truth) > 1)
    labels_true, labels_pred, confidences, speakers, heard_as, missed = [], [], [], [], [], 0
    probs: list[dict[str, dict[str, float]]] = []
    by_channel: dict[str, dict[int, str]] = {}
    for i, t in enumerate(truth):
        # its own predictions, else one that merged it with a neighbour (it was heard, and labelled)
        js = per_truth[i] or [j for j, p in enumerate(pred) if overlap(t, p) >= min_overlap_s]
        best = max(js, key=lambda j: overlap(t, pred[j])) if js else None
        missed += best is None
        labels_true.append(t.label)
        speakers.append(t.speaker)
        heard_as.append(pred[best].speaker if best is not None else None)
        labels_pred.append(pred[best].label if best is not None and pred[best].label else MISSED)
        confidences.append(pred[best].confidence if best is not None and pred[best].label else 0.0)
        probs.append(pred[best].probs if best is not None and pred[best].label else {})
        for name, label in pred[best].channels if best is not None else ():
            by_channel.setdefault(name, {})[i] = label
    return {
        "truth": len(truth),
        "predicted": len(pred),
        "missed": missed,
        "split": sum(1 for js in per_truth if len(js) > 1),
        "merged": merged,
        "false_alarms": sum(1 for i in owner if i < 0),
        "labels_true": labels_true,
        "labels_pred": labels_pred,
        "confidences": confidences,
        "probs": probs,
        "speakers_true": speakers,
        # whom the tracker named for each truth (None: missed, or no speaker given)
        "speakers_pred": heard_as,
        # each channel's own answer per truth, where the model gives one (missed otherwise)
        "labels_channels": {c: [got.get(i, MISSED) for i in range(len(truth))] for c, got in by_channel.items()},
    }


def speaker_attribution(speakers_true: list[str | None], speakers_pred: list[str | None]) -> dict | None:
    """How many of one recording's turns carry the right speaker under the best one-to-one
    mapping of predicted to true speakers (the speaker issue's attribution, as
    ``python -m training speakers`` scores it); a missed turn, or one heard without a speaker,
    counts as wrong. ``None`` where the truth names no speakers."""
    from training.speakers import best_mapping

    pairs = [(t, p) for t, p in zip(speakers_true, speakers_pred) if t is not None]
    if not pairs:
        return None
    truth = sorted({t for t, _ in pairs})
    heard = sorted({p for _, p in pairs if p is not None})
    counts = np.zeros((len(truth), len(heard)))
    for t, p in pairs:
        if p is not None:
            counts[truth.index(t), heard.index(p)] += 1
    return {
        "turns": len(pairs),
        "correct": int(round(best_mapping(counts))),
        "speakers_true": len(truth),
        "speakers_found": len(heard),
    }


def normalize_words(text: str) -> list[str]:
    text = text.lower().replace("’", "'")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words / reference length."""
    r, h = normalize_words(reference), normalize_words(hypothesis)
    if not r:
        return float(len(h) > 0)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(r)


def score(truth: list[Segment], pred: list[Segment]) -> dict:
    a = align(truth, pred)
    labelled = [(t, p) for t, p in zip(a["labels_true"], a["labels_pred"]) if t is not None]
    y_true = [t for t, _ in labelled]
    y_pred = [p for _, p in labelled]
    a["weighted_f1"] = float(f1_score(y_true, y_pred, average="weighted", zero_division=0)) if labelled else 0.0
    a["accuracy"] = float(np.mean([t == p for t, p in labelled])) if labelled else 0.0
    a["wer"] = word_error_rate(" ".join(t.text for t in truth), " ".join(p.text for p in pred))
    a["speaker_attribution"] = speaker_attribution(a["speakers_true"], a["speakers_pred"])
    return a


def replay(recording: Path, checkpoint: Path | None, asr_model: str = "tiny.en", split_channels: bool = False):
    """Run the real pipeline over a recording; returns the utterance events."""
    import threading

    from streamer.cli import build_parser, build_pipeline
    from streamer.events import UtteranceEvent

    argv = ["--replay", str(recording), "--speed", "max", "--asr-model", asr_model, "--no-ui"]
    if checkpoint is not None:
        argv += ["--model", str(checkpoint)]
    if split_channels:
        argv.append("--split-channels")
    import torch

    threads = torch.get_num_threads()  # the live tracker sets its own: give the caller's back
    try:
        pipeline, _ = build_pipeline(build_parser().parse_args(argv))
        events: list = []
        pipeline.run(events.append, threading.Event(), threading.Event())
    finally:
        torch.set_num_threads(threads)
    return [e for e in events if isinstance(e, UtteranceEvent)]


def evaluate_recording(recording: Path, truth_path: Path, checkpoint: Path | None = None, **kw) -> dict:
    events = replay(recording, checkpoint, **kw)
    pred = [
        Segment(
            e.start_s,
            e.end_s,
            e.text,
            e.label,
            e.speaker,
            e.confidence,
            tuple((c, v["label"]) for c, v in sorted(e.channels.items()) if v.get("label")),
            {"fused": dict(e.probs)} | {c: dict(v["probs"]) for c, v in e.channels.items() if v.get("probs")},
        )
        for e in events
    ]
    result = score(read_truth(truth_path), pred)
    result["recording"] = str(recording)
    lat = [e.latency_ms.get("total", 0.0) for e in events]
    result["latency_ms_p50"] = float(np.median(lat)) if lat else None
    return result


def write_recordings(split, out_dir: Path, limit: int | None = None, gap_s: float = 1.0, seed: int = 0) -> list[Path]:
    """Render dialogues of a split as recordings with ground truth (``<id>.flac`` + ``<id>.jsonl``).

    Each utterance's clip follows the previous one after ``gap_s`` of silence (a little
    jitter, seeded), the way the demos are built, so VAD + ASR + model can be scored on
    held-out voices end to end.
    """
    import soundfile as sf

    from training.extract import load_utterance_audio

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for dialogue in split.dialogues[:limit]:
        pieces, rows, pos = [np.zeros(8000, np.float32)], [], 8000
        for u in dialogue.utterances:
            if u.audio_path is None:
                continue
            audio = load_utterance_audio(u.audio_path, u.start_s, u.end_s, live_cut=False, augment=u.augment)
            rows.append(
                {
                    "start_s": round(pos / 16000, 3),
                    "end_s": round((pos + len(audio)) / 16000, 3),
                    "speaker": u.speaker,
                    "text": u.text or "",
                    "label": u.label,
                }
            )
            gap = np.zeros(int((gap_s + rng.uniform(0, 0.4)) * 16000), np.float32)
            pieces += [audio, gap]
            pos += len(audio) + len(gap)
        if not rows:
            continue
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in dialogue.id)
        path = out_dir / f"{name}.flac"
        sf.write(path, np.concatenate(pieces), 16000, subtype="PCM_16")
        path.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(path)
    return paths
