"""Where the words-only leave-voices-out sets lose: the script, Whisper's words, the live cut.

The words-only recordings (MELD dev lines read by synthetic voices nothing trains on) score
0.36-0.41 end to end where the same model reads MELD dev's script at about 0.60. This replays
each line of a rendered ``training lvo`` set through the bundle's own front end with the true
segmentation and the true speakers (each line cut at its rendered times, 0.3 s either side),
and scores, per condition, the fused answer and each channel alone:

- ``script``: the line's text as MELD writes it (the ceiling of the words on these lines);
- ``asr``: Whisper's transcript of that cut, as the live path would write it;
- and, from the ``training lvo`` results JSON, the tracker end to end (its own cuts and speakers).

    python experiments/words_gap.py runs/lvo19 --sets words-espeak words-engines
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import Counter
from pathlib import Path

from streamer.audio import load_audio
from training.asr_text import spoken_punctuation
from training.e2e import read_truth
from training.lvo import pooled_scores

PAD_BEFORE_S = 0.3
PAD_AFTER_S = 0.3


#: What the model reads for a line: ``(tracker, its ground-truth Segment, its audio cut) -> text``.
CONDITIONS = {
    "script": lambda tracker, line, cut: line.text,
    "asr": lambda tracker, line, cut: tracker.transcriber.transcribe(cut),
    "script-flat": lambda tracker, line, cut: spoken_punctuation(line.text),
    "script-lower": lambda tracker, line, cut: re.sub(r"[^\w\s']", "", line.text).lower(),
}
CHANNELS = ("audio", "text")


def replay(tracker, recording: Path, text_of) -> list[dict]:
    """Each line of one recording through features and model, in order, with true speakers."""
    from streamer.pipeline import SPEAKER_NAMES
    from streamer.text_context import DialogueHistory

    audio, rate = load_audio(recording), 16000  # mono at the tracker's rate
    ckpt = tracker.checkpoint
    classifier = ckpt.classifier()
    text_cfg = ckpt.pipeline.text
    history = DialogueHistory(text_cfg.context_turns if text_cfg is not None else 0)
    names: dict[str, str] = {}
    out = []
    for line in read_truth(recording.with_suffix(".jsonl")):
        a = int(max(0.0, line.start_s - PAD_BEFORE_S) * rate)
        b = int(min(len(audio) / rate, line.end_s + PAD_AFTER_S) * rate)
        cut = audio[a:b]
        speaker = names.setdefault(line.speaker, SPEAKER_NAMES[len(names)])  # as tracked: A, B, ...
        text = text_of(tracker, line, cut)
        extra = {"text_context": history.context(speaker)} if history.turns else {}
        slot = SPEAKER_NAMES.index(speaker)  # HBAF's speaker slot, as the live pipeline fills it
        feats, _ = tracker.features.utterance(cut, text, speaker=slot, norm_key=speaker, **extra)
        probs = classifier.push(feats, per_channel=True)
        history.push(speaker, text)
        row = {"true": line.label, "fused": ckpt.labels[int(probs.argmax())], "words": text, "script": line.text}
        for name, p in classifier.last_channels.items():
            row[name] = ckpt.labels[int(p.argmax())]
        out.append(row)
    return out


def by_exclamation(utterances: list[dict], recordings: list[Path]) -> dict:
    """Share of non-neutral answers, truth and each channel, on the lines MELD writes with and without "!"
    (end to end; a recording counts when its utterances align one to one with its lines)."""
    rows = []
    for rec in recordings:
        mine = [u for u in utterances if u["recording"] == rec.stem]
        said = read_truth(rec.with_suffix(".jsonl"))
        if len(mine) == len(said) and all(u["true"] == line.label for u, line in zip(mine, said)):
            rows += [("!" in line.text, u) for line, u in zip(said, mine)]
    out = {}
    for marked in (True, False):
        sel = [u for m, u in rows if m == marked]
        if sel:
            out["with !" if marked else "without !"] = {
                "n": len(sel),
                **{k: round(sum(u[k] != "neutral" for u in sel) / len(sel), 2) for k in ("true", "pred", *CHANNELS)},
            }
    return out


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate over a set, normalised as ``python -m training asr-text`` measures it."""
    from training.asr_text import AsrPair, ErrorRates

    return ErrorRates.measure([AsrPair("", 0, "", ref, hyp) for ref, hyp in zip(refs, hyps)]).wer


def score(rows: list[dict], key: str) -> float:
    """Weighted F1 of one answer (fused or a channel), as ``training lvo`` pools it."""
    return pooled_scores([r["true"] for r in rows], [r.get(key, "<missed>") for r in rows])["weighted_f1"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lvo", type=Path, help="a `python -m training lvo --out` folder")
    parser.add_argument("--sets", nargs="+", default=["words-espeak", "words-engines"])
    parser.add_argument("--results", default="results-bundled.json")
    parser.add_argument("--conditions", nargs="+", default=["script", "asr"], choices=list(CONDITIONS))
    parser.add_argument("--dump", type=Path, default=None, help="write the asr condition's transcripts here (JSON)")
    parser.add_argument("--prompt", default="", help="Whisper's previous-text prompt (the asr condition)")
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled one)")
    args = parser.parse_args()

    from streamer.api import EmotionTracker

    tracker = EmotionTracker(args.model)
    if args.prompt:
        tok = tracker.transcriber._tokenizer
        ids = tok.encode(" " + args.prompt.strip())
        tracker.transcriber._prompt = [tok.sot_prev, *ids, *tok.sot_sequence, tok.no_timestamps]
    e2e = json.loads((args.lvo / args.results).read_text()) if (args.lvo / args.results).is_file() else {}
    report, heard = {}, {}
    for name in args.sets:
        recordings = sorted((args.lvo / "recordings" / name).glob("*.flac"))
        report[name] = {}
        for cond in args.conditions:
            rows = [r for rec in recordings for r in replay(tracker, rec, CONDITIONS[cond])]
            report[name][cond] = {k: round(score(rows, k), 3) for k in ("fused", *CHANNELS)}
            if cond == "asr":
                heard[name] = [{"asr": r["words"], "text": r["script"], "label": r["true"]} for r in rows]
            report[name][cond]["text_answers"] = dict(Counter(r["text"] for r in rows).most_common())
            report[name][cond]["n"] = len(rows)
            report[name][cond]["with_exclamation"] = sum("!" in r["words"] for r in rows)
            report[name][cond]["wer"] = round(wer([r["script"] for r in rows], [r["words"] for r in rows]), 3)
            print(name, cond, report[name][cond], flush=True)
        if name in e2e:
            s = e2e[name]
            report[name]["end_to_end"] = {
                "fused": round(s["weighted_f1"], 3),
                **{k: round(v["weighted_f1"], 3) for k, v in s.get("channels", {}).items()},
                "n": s["n"],
            }
            report[name]["end_to_end"]["by_exclamation"] = by_exclamation(s["utterances"], recordings)
            print(name, "end_to_end", report[name]["end_to_end"], flush=True)
    if args.dump is not None and heard:  # experiments/punctuation_probe.py --asr reads it
        args.dump.write_text(json.dumps(heard))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
