"""How much the text branch leans on MELD's punctuation, and what a head trained without it gives.

Whisper writes no exclamation marks for a flat (synthetic) voice: of 168 MELD dev lines read
by flite/festival voices, MELD writes "!" in 62 and tiny.en in none. A frozen-encoder probe
(all-mpnet-base-v2, mean of its last four layers, the line alone; logistic regression with C
chosen on the validation split in the form it was trained on) is trained on MELD train lines
as MELD writes them, with "!" turned into "." (``flat``), or (``--mixed P``) with each line
read flat with probability P and served as written. Each head is scored on MELD dev (report
only) in both forms, on tiny.en's transcripts of the ``asr-text`` collections, and on what
tiny.en wrote for the words-only leave-voices-out lines (``experiments/words_gap.py --dump``).

    python experiments/words_gap.py runs/lvo19 --conditions asr --dump runs/words-heard.json
    python experiments/punctuation_probe.py --asr runs/words-heard.json --forms raw flat --mixed 0.5 0.75
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from training.asr_text import load as load_asr
from training.asr_text import spoken_punctuation
from training.data.records import MELD_LABELS
from training.data.shared import DEFAULT_ROOT, meld_dialogues
from training.text_tune import examples

FORMS = {"raw": lambda t: t, "flat": spoken_punctuation}


def wf1(y, p) -> float:
    return float(f1_score(y, p, average="weighted", zero_division=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asr", type=Path, required=True, help="JSON of {set: [{asr, text, label}]}")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--encoder", default="sentence-transformers/all-mpnet-base-v2")
    parser.add_argument("--cache", type=Path, default=None, help="an .npz of vectors by string, read and filled")
    parser.add_argument(
        "--mixed", type=float, nargs="*", default=[], help="also heads trained with each line flat with these P"
    )
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    args = parser.parse_args()

    from streamer.text_encoder import TextEncoder

    _, train = meld_dialogues("train", args.root)
    _, val = meld_dialogues("validation", args.root)
    _, dev = meld_dialogues("test", args.root)  # MELD dev: reported, never selected on
    data = {name: examples(ds, 0) for name, ds in (("train", train), ("validation", val), ("dev", dev))}
    for name, split, dialogues in (("validation-asr", "validation", val), ("dev-asr", "test", dev)):
        heard = {(p.dialogue, p.turn): p.asr for p in load_asr(split)}  # `python -m training asr-text`
        keep = [d for d in dialogues if all((d.id, u.turn) in heard for u in d.utterances)]
        if keep:
            data[name] = examples(keep, 0, heard, speakers=False)
    lvo = json.loads(args.asr.read_text())
    enc = TextEncoder(args.encoder, 128, "cpu", pooling="mean_last4")
    label_id = {name: i for i, name in enumerate(MELD_LABELS)}
    texts = {name: t for name, (t, _, _) in data.items()}
    for name, rows in lvo.items():
        texts[name] = [r["asr"] for r in rows]
        texts[name + ":script"] = [r["text"] for r in rows]
    forms = {form: FORMS[form] for form in args.forms}
    unique = sorted({fn(t) for fn in forms.values() for ts in texts.values() for t in ts})
    cache = args.cache if args.cache is not None and args.cache.is_file() else None
    known = dict(np.load(cache, allow_pickle=False).items()) if cache else {}
    todo = [t for t in unique if t not in known]
    vectors = {**known, **dict(zip(todo, enc.embed(todo) if todo else []))}  # each distinct string once
    if args.cache is not None and todo:
        np.savez(args.cache, **vectors)
    X = {
        (name, form): np.stack([vectors[fn(t)] for t in ts]) for name, ts in texts.items() for form, fn in forms.items()
    }
    y = {name: data[name][2] for name in data}
    for name, rows in lvo.items():
        y[name] = y[name + ":script"] = np.array([label_id[r["label"]] for r in rows])
    report = {}
    reported = [n for n in data if n not in ("train", "validation")]  # MELD dev, and both heard sets
    tests = (*reported, *[n for name in lvo for n in (name + ":script", name)])
    for form in forms:
        best = None
        for C in (0.1, 0.3, 1.0, 3.0):
            clf = LogisticRegression(C=C, max_iter=3000).fit(X["train", form], y["train"])
            f1 = wf1(y["validation"], clf.predict(X["validation", form]))
            if best is None or f1 > best[0]:
                best = (f1, C, clf)
        f1, C, clf = best
        row = {"C": C, "validation": round(f1, 3)}
        for test in tests:
            scores = {tf: round(wf1(y[test], clf.predict(X[test, tf])), 3) for tf in forms}
            row[test] = scores
        report[form] = row
        print(form, json.dumps(row), flush=True)
    rng = np.random.default_rng(0)
    for p in args.mixed:  # each training line read flat with probability p; served as written
        pick = rng.random(len(y["train"])) < p
        Xm = np.where(pick[:, None], X["train", "flat"], X["train", "raw"])
        pick_v = rng.random(len(y["validation"])) < p
        Xv = np.where(pick_v[:, None], X["validation", "flat"], X["validation", "raw"])
        best = None
        for C in (0.1, 0.3, 1.0, 3.0):
            clf = LogisticRegression(C=C, max_iter=3000).fit(Xm, y["train"])
            f1 = wf1(y["validation"], clf.predict(Xv))
            if best is None or f1 > best[0]:
                best = (f1, C, clf)
        f1, C, clf = best
        row = {"C": C, "validation": round(f1, 3)}
        for test in tests:
            row[test] = {tf: round(wf1(y[test], clf.predict(X[test, tf])), 3) for tf in forms}
        report[f"mixed-{p}"] = row
        print(f"mixed-{p}", json.dumps(row), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
