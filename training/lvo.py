"""Leave-voices-out, end to end: conversations rendered only from voices no model trains on.

    python -m training lvo --out runs/lvo [--model CK] [--sets voice-ravdess words-engines] [--dialogues 8]

Every set is rendered from the *test* side of the shared splits, whose voices are disjoint
from training and validation (acted voices are dealt per corpus and gender; the synthetic
voices of ``test`` are other espeak-ng accents plus the flite and festival engines, which
nothing trains on), and its dialogues come from MELD dev, which nothing selects on. Each
recording is replayed through the real tracker (VAD, Whisper, features, model) and the
labels are scored against the ground truth, pooled over the set's recordings:

- ``voice-ravdess``: two RAVDESS actors alternating; neutral words, the voice carries it;
- ``voice-other``: EmoDB test voices: other wording (German sentences) through English ASR;
- ``words-espeak`` / ``words-engines``: MELD dev dialogues read by held-out espeak-ng
  voices / by flite and festival voices; the words carry it, the voice is flat;
- ``paired``: MELD dev dialogues voiced by held-out acted clips of the same label.

Weighted F1, macro F1 and unweighted accuracy (mean recall over the true classes) are
reported, so answering one class for everything cannot look good.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, recall_score

from training.e2e import MISSED, evaluate_recording, write_recordings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LvoSet:
    dataset: str
    options: dict
    description: str
    #: this share of ``--dialogues`` recordings (at least one): long recordings hold more utterances each
    recording_share: float = 1.0

    def recordings(self, dialogues: int) -> int:
        return max(1, round(dialogues * self.recording_share))


LVO_SETS: dict[str, LvoSet] = {
    "voice-ravdess": LvoSet(
        "voice-chains",
        {"corpora": "ravdess", "two_speaker_fraction": 1.0},
        "RAVDESS test actors alternating, neutral words",
    ),
    # Forty turns a recording: each voice speaks ~20 times, so its running statistics (per-speaker
    # normalisation, speaker tracking) leave the prior behind; ten-turn recordings never do.
    "voice-ravdess-long": LvoSet(
        "voice-chains",
        {"corpora": "ravdess", "two_speaker_fraction": 1.0, "min_turns": 40, "max_turns": 40},
        "RAVDESS test actors alternating for 40 turns, neutral words",
        recording_share=0.25,
    ),
    # EmoDB only: URDU's speakers each recorded nearly one emotion, so their chains have one label
    "voice-other": LvoSet("voice-chains", {"corpora": "emodb"}, "EmoDB test voices: German words through ASR"),
    "words-espeak": LvoSet("tts-words", {"engines": "espeak-ng"}, "MELD dev read by held-out espeak-ng voices"),
    "words-engines": LvoSet("tts-words", {"engines": "flite,festival"}, "MELD dev read by flite and festival voices"),
    "paired": LvoSet("paired", {}, "MELD dev voiced by held-out acted clips"),
}


def render_set(name: str, out: Path, dialogues: int, root: str | None = None) -> list[Path]:
    """The set's recordings (``<out>/<name>/*.flac`` + ground truth), rendered once and reused."""
    from training.data import load_dataset

    folder = out / name
    spec = LVO_SETS[name]
    dialogues = spec.recordings(dialogues)
    existing = sorted(folder.glob("*.flac"))
    if len(existing) >= dialogues:
        return existing[:dialogues]
    split = load_dataset(spec.dataset, "test", root, **spec.options)
    return write_recordings(split, folder, dialogues)


#: Confidence thresholds of the coverage/accuracy trade-off ("uncertain" below the threshold).
THRESHOLDS = (0.4, 0.5, 0.6, 0.7)


def coverage_curve(labels_true: list[str | None], labels_pred: list[str], confidences: list[float]) -> dict:
    """Per threshold: the share of utterances labelled at that confidence or above, and their accuracy."""
    rows = [(t, p, c) for t, p, c in zip(labels_true, labels_pred, confidences) if t is not None]
    out = {}
    for th in THRESHOLDS:
        kept = [(t, p) for t, p, c in rows if c >= th]
        out[str(th)] = {
            "coverage": len(kept) / len(rows) if rows else 0.0,
            "accuracy": float(np.mean([t == p for t, p in kept])) if kept else None,
        }
    return out


def voice_gender(speaker: str | None) -> str | None:
    """"F"/"M" for an acted voice of the shared corpora (RAVDESS: odd actors are male, by its
    documentation; EmoDB: its speaker table), None where unknown (synthetic readers)."""
    from training.data.shared import EMODB_GENDERS

    corpus, _, number = (speaker or "").rpartition("_")
    if corpus == "ravdess" and number.isdigit():
        return "M" if int(number) % 2 else "F"
    if corpus == "emodb":
        return EMODB_GENDERS.get(number)
    return None


def by_gender(labels_true: list[str | None], labels_pred: list[str], speakers: list[str | None]) -> dict:
    """Pooled scores per gender of the true speaker, where known."""
    genders = [voice_gender(s) for s in speakers]
    return {
        g: pooled_scores(
            [t for t, x in zip(labels_true, genders) if x == g], [p for p, x in zip(labels_pred, genders) if x == g]
        )
        for g in sorted({x for x in genders if x})
    }


def pooled_attribution(recordings: list[dict]) -> dict | None:
    """Speaker attribution pooled over a set's recordings (turns with the right speaker under
    each recording's best mapping / turns), overall and by how many people speak in a recording."""
    if not recordings:
        return None

    def pool(rs: list[dict]) -> dict:
        turns = sum(r["turns"] for r in rs)
        return {
            "recordings": len(rs),
            "turns": turns,
            "attribution": sum(r["correct"] for r in rs) / max(turns, 1),
            "speakers_found_per_true": float(np.mean([r["speakers_found"] / r["speakers_true"] for r in rs])),
        }

    counts = sorted({r["speakers_true"] for r in recordings})
    return pool(recordings) | {
        "by_speakers": {str(n): pool([r for r in recordings if r["speakers_true"] == n]) for n in counts}
    }


def pooled_scores(labels_true: list[str | None], labels_pred: list[str]) -> dict:
    pairs = [(t, p) for t, p in zip(labels_true, labels_pred) if t is not None]
    if not pairs:
        return {"n": 0, "weighted_f1": 0.0, "macro_f1": 0.0, "unweighted_accuracy": 0.0, "accuracy": 0.0}
    y, p = zip(*pairs)
    classes = sorted(set(y))
    return {
        "n": len(y),
        "weighted_f1": float(f1_score(y, p, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y, p, labels=classes, average="macro", zero_division=0)),
        "unweighted_accuracy": float(recall_score(y, p, labels=classes, average="macro", zero_division=0)),
        "accuracy": float(np.mean([a == b for a, b in pairs])),
        "missed": sum(x == MISSED for x in p),
        "predicted": {c: int(sum(x == c for x in p)) for c in sorted(set(p))},
    }


def evaluate_sets(
    out: Path,
    checkpoint: Path | None,
    sets: list[str],
    dialogues: int = 8,
    asr_model: str = "tiny.en",
    root: str | None = None,
) -> dict[str, dict]:
    """Render (once) and score every set; returns set name -> pooled scores (+ WER)."""
    results = {}
    for name in sets:
        if name not in LVO_SETS:
            raise ValueError(f"unknown leave-voices-out set {name!r}: choose from {', '.join(LVO_SETS)}")
        recordings = render_set(name, out / "recordings", dialogues, root)
        y_true, y_pred, conf, wers, speakers, heard_as, per_recording, probs, who = [], [], [], [], [], [], [], [], []
        names_of: list[str] = []  # the recording of each utterance
        for rec in recordings:
            r = evaluate_recording(rec, rec.with_suffix(".jsonl"), checkpoint, asr_model=asr_model)
            y_true += r["labels_true"]
            y_pred += r["labels_pred"]
            conf += r["confidences"]
            probs += r["probs"]
            speakers += r["speakers_true"]
            heard_as += r.get("speakers_pred", [None] * len(r["speakers_true"]))
            names_of += [rec.stem] * len(r["labels_true"])
            wers.append(r["wer"])
            if r.get("speaker_attribution"):
                who.append(r["speaker_attribution"])
            per_recording.append((len(r["labels_true"]), r.get("labels_channels", {})))
        scores = pooled_scores(y_true, y_pred)
        # what each channel says alone on the same utterances: "at least what the words alone give";
        # a channel the model named for some recordings only counts as missed in the others
        names = sorted({c for _, channels in per_recording for c in channels})
        alone = {c: [x for n, channels in per_recording for x in channels.get(c, [MISSED] * n)] for c in names}
        scores["channels"] = {c: pooled_scores(y_true, answers) for c, answers in alone.items()}
        # every utterance's answers, for confusions and combination rules without a second replay
        scores["utterances"] = [
            {"recording": names_of[i], "true": t, "pred": p, "confidence": round(c, 4), "speaker": spk,
             "heard_as": who_said,
             **{n: alone[n][i] for n in names}}
            | ({"probs": probs[i]} if probs[i] else {})
            for i, (t, p, c, spk, who_said) in enumerate(zip(y_true, y_pred, conf, speakers, heard_as))
        ]
        scores["coverage"] = coverage_curve(y_true, y_pred, conf)
        scores["by_gender"] = by_gender(y_true, y_pred, speakers)
        scores["wer"] = float(np.mean(wers)) if wers else None
        scores["speakers"] = pooled_attribution(who)
        scores["recordings"] = len(recordings)
        results[name] = scores
        log.info("%s: %s", name, json.dumps({k: v for k, v in scores.items() if k != "predicted"}))
    return results


def table(results: dict[str, dict]) -> str:
    lines = [
        "| set | utterances | weighted F1 | macro F1 | unweighted acc. | WER | wF1 by gender | wF1 per channel alone"
        " | speaker attribution | most predicted |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for name, r in results.items():
        top = ", ".join(f"{k} {v}" for k, v in sorted(r["predicted"].items(), key=lambda kv: -kv[1])[:3])
        genders = ", ".join(f"{g} {v['weighted_f1']:.3f} ({v['n']})" for g, v in r.get("by_gender", {}).items())
        alone = ", ".join(f"{c} {v['weighted_f1']:.3f}" for c, v in r.get("channels", {}).items())
        who = r.get("speakers")
        by = ", ".join(f"{n}: {v['attribution']:.3f}" for n, v in who["by_speakers"].items()) if who else ""
        who = f"{who['attribution']:.3f} (people: {by})" if who else "-"
        lines.append(
            f"| {name} | {r['n']} | {r['weighted_f1']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['unweighted_accuracy']:.3f} | {r['wer']:.3f} | {genders or '-'} | {alone or '-'} | {who} | {top} |"
        )
    return "\n".join(lines)
