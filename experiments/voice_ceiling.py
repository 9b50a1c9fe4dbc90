"""How far a plain classifier gets on the bundle's own audio vectors: the voice issue's diagnosis.

    python experiments/voice_ceiling.py kinds     # openSMILE / Whisper / both x session / speaker norm
    python experiments/voice_ceiling.py parts     # LR trained on parts of mixed train, plain vs balanced
    python experiments/voice_ceiling.py bundle    # the installed bundle on the same test utterances
    python experiments/voice_ceiling.py encoders --encoder .cache/whisper-base --min-window-s 0
                                                  # another feature encoder / encode window

Every number is utterance level on the RAVDESS *test* actors' two-voice chains (``voice-chains``,
``corpora=ravdess``, ``two_speaker_fraction=1``: the kind of dialogue the ``voice-ravdess``
leave-voices-out set renders), with features from the live front end (the segmenter's cut,
the 15 s encode policy) and the causal per-speaker or per-session normalisation the tracker
applies. Logistic regressions are fitted on training voices only; nothing selects on test
(the grids are printed whole). Features come from the extraction cache (``.cache/features``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from models.pipeline import FeaturePipeline  # noqa: E402
from streamer.features import fit_audio_pipeline  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import hide_modality, part_of_each_utterance  # noqa: E402
from training.experiment import RunConfig, to_dialogues, with_speaker_norm  # noqa: E402
from training.extract import ExtractConfig, extract_split  # noqa: E402
from training.trainer import predict  # noqa: E402

CHAINS = {"corpora": "ravdess", "two_speaker_fraction": 1.0}
MODES = ("session", "speaker")
NORM_PRIOR_WEIGHT = RunConfig.norm_prior_weight  # the training default (utterances of trust in the prior)


def extract_config(ck: models.Checkpoint, opensmile: bool = False) -> ExtractConfig:
    p = ck.pipeline
    return dataclasses.replace(
        ExtractConfig(),
        audio=opensmile,
        whisper=True,
        workers=2,
        whisper_encoder=p.whisper.encoder,
        whisper_min_window_s=p.whisper.min_window_s,
        whisper_pad_s=p.whisper.pad_s,
        tokens=p.tokens,
        text_encoder=p.text.encoder,
        text_pipeline=p.text,
        text_adapter=None,
        progress=False,
    )


def vectors(data, feats, pipeline, labels, mode) -> tuple[np.ndarray, np.ndarray]:
    """Normalised audio vectors and labels of the labelled utterances that have audio."""
    X, y = [], []
    for d in to_dialogues(data, feats, pipeline, labels, norm_mode=mode):
        for u, label in zip(d.utterances, d.labels):
            if label >= 0 and u.get("audio_present", True):
                X.append(u["audio"].numpy())
                y.append(label)
    return np.stack(X), np.array(y)


def fit_score(x, y, x_test, y_test, c: float, balanced: bool) -> tuple[float, int]:
    """Weighted F1 on test and how often the fitted regression answers neutral."""
    clf = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=3000).fit(x, y)
    pred = clf.predict(x_test)
    return f1_score(y_test, pred, average="weighted"), int((pred == NEUTRAL).sum())


NEUTRAL = 4  # index of "neutral" in the bundle's labels (checked in main)


def kinds(ck: models.Checkpoint) -> None:
    ex = extract_config(ck, opensmile=True)
    split = {s: load_dataset("voice-chains", s, None, **CHAINS) for s in ("train", "test")}
    feats = {s: extract_split(d, ex) for s, d in split.items()}
    f = feats["train"]
    y = np.array([ck.labels.index(u.label) for u in split["train"].utterances()])
    smile = fit_audio_pipeline(np.nan_to_num(f.audio[f.audio_ok]), y[f.audio_ok], k=512, seed=0)
    print("| features | normalisation | C=0.003 | C=0.01 | C=0.03 | C=0.1 |\n|---|---|---:|---:|---:|---:|")
    for kind in ("opensmile", "whisper", "both"):
        pipe = FeaturePipeline(
            audio=smile if kind != "whisper" else None, whisper=ck.pipeline.whisper if kind != "opensmile" else None
        )
        pipe = with_speaker_norm(pipe, f, y, NORM_PRIOR_WEIGHT)
        for mode in MODES:
            X, yy = vectors(split["train"], f, pipe, ck.labels, mode)
            Xt, yt = vectors(split["test"], feats["test"], pipe, ck.labels, mode)
            row = [fit_score(X, yy, Xt, yt, C, False)[0] for C in (0.003, 0.01, 0.03, 0.1)]
            print(f"| {kind} | {mode} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)


def parts(ck: models.Checkpoint) -> None:
    ex = extract_config(ck)
    train = load_dataset("mixed", "train", None, words_text="asr", augment_copies=2)
    ftrain = extract_split(train, ex)
    test = load_dataset("voice-chains", "test", None, **CHAINS)
    ftest = extract_split(test, ex)
    dialogues = to_dialogues(train, ftrain, ck.pipeline, ck.labels, norm_mode="mixed")
    part = part_of_each_utterance(dialogues)
    copy = np.concatenate([[d.dialogue_id.startswith("aug")] * sum(y >= 0 for y in d.labels) for d in dialogues])
    X = np.stack([u["audio"].numpy() for d in dialogues for u, y in zip(d.utterances, d.labels) if y >= 0])
    y = np.array([y for d in dialogues for y in d.labels if y >= 0])
    groups = {
        "voice-only, originals": (part == "voice") & ~copy,
        "voice-only + augmented copies": part == "voice",
        "voice-only + paired (+ copies)": part != "words",
        "all of mixed train": np.ones(len(part), dtype=bool),
    }
    print(f"test: {len(ftest.audio_ok)} utterances")
    print("| trained on | n | neutral share | norm | C | plain: wF1 (neutral answers) | balanced |")
    print("|---|---:|---:|---|---:|---|---|")
    for name, keep in groups.items():
        for mode in MODES:
            Xt, yt = vectors(test, ftest, ck.pipeline, ck.labels, mode)
            for C in (0.01, 0.1):
                plain = fit_score(X[keep], y[keep], Xt, yt, C, False)
                bal = fit_score(X[keep], y[keep], Xt, yt, C, True)
                print(
                    f"| {name} | {keep.sum()} | {np.mean(y[keep] == NEUTRAL):.2f} | {mode} | {C} | "
                    f"{plain[0]:.3f} ({plain[1]}) | {bal[0]:.3f} ({bal[1]}) |",
                    flush=True,
                )
    print(f"true neutral: {int((yt == NEUTRAL).sum())} of {len(yt)}")


def encoders(ck: models.Checkpoint, encoder: str, min_window_s: float, pad_s: float) -> None:
    """Pooled states of another Whisper encoder or window, normalised as the bundle's, LR on RAVDESS train."""
    from models.pipeline import WhisperPipeline

    ex = dataclasses.replace(
        extract_config(ck), whisper_encoder=encoder, whisper_min_window_s=min_window_s, whisper_pad_s=pad_s
    )
    split = {s: load_dataset("voice-chains", s, None, **CHAINS) for s in ("train", "test")}
    feats = {s: extract_split(d, ex) for s, d in split.items()}
    f = feats["train"]
    pipe = FeaturePipeline(whisper=WhisperPipeline(encoder, min_window_s, pad_s, dim=int(f.whisper.shape[1])))
    y = np.array([ck.labels.index(u.label) for u in split["train"].utterances()])
    pipe = with_speaker_norm(pipe, f, y, NORM_PRIOR_WEIGHT)
    print(f"encoder {encoder}, window max({min_window_s} s, utterance + {pad_s} s), {pipe.audio_dim} dims")
    print("| normalisation | C | plain | balanced |\n|---|---:|---:|---:|")
    for mode in MODES:
        X, y = vectors(split["train"], f, pipe, ck.labels, mode)
        Xt, yt = vectors(split["test"], feats["test"], pipe, ck.labels, mode)
        for c in (0.003, 0.01, 0.03, 0.1):
            plain, bal = fit_score(X, y, Xt, yt, c, False), fit_score(X, y, Xt, yt, c, True)
            print(f"| {mode} | {c} | {plain[0]:.3f} | {bal[0]:.3f} |", flush=True)


def bundle(ck: models.Checkpoint) -> None:
    ex = extract_config(ck)
    test = load_dataset("voice-chains", "test", None, **CHAINS)
    feats = extract_split(test, ex)
    for mode in MODES:
        for hide in (None, "text"):
            dl = to_dialogues(test, feats, ck.pipeline, ck.labels, norm_mode=mode)
            if hide:
                hide_modality(dl, hide)
            logits, y = predict(ck.model, dl, 32, "cpu")
            pred = logits.argmax(1)
            print(
                f"{mode} norm, {'voice alone' if hide else 'fused'}: weighted F1 "
                f"{f1_score(y, pred, average='weighted'):.3f}, answers "
                f"{dict(collections.Counter(ck.labels[i] for i in pred))}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("kinds", "parts", "bundle", "encoders"))
    ap.add_argument("--checkpoint", default="streamer/assets/default.pt")
    ap.add_argument("--encoder", default="tiny.en", help="encoders: a Whisper name or CTranslate2 folder")
    ap.add_argument("--min-window-s", type=float, default=15.0)
    ap.add_argument("--pad-s", type=float, default=1.0)
    args = ap.parse_args()
    ck = models.load(args.checkpoint)
    assert ck.labels[NEUTRAL] == "neutral", ck.labels
    if args.what == "encoders":
        encoders(ck, args.encoder, args.min_window_s, args.pad_s)
    else:
        {"kinds": kinds, "parts": parts, "bundle": bundle}[args.what](ck)


if __name__ == "__main__":
    main()
