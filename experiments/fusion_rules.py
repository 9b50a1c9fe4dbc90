"""Fixed rules that combine a checkpoint's two channel answers, scored where they can be chosen
(mixed validation, by part) and where they are judged (the leave-voices-out sets).

    python experiments/fusion_rules.py --checkpoint streamer/assets/default.pt \\
        --lvo runs/lvo16/results-bundled.json

The voice issue's item 4: on unseen synthetic voices the fused answer follows the voice channel
and falls below the words alone. A rule that needs no fitting cannot learn the training voices:
each channel's answer is the model with the other channel withheld from the newest utterance, as
the live events carry it (``channels``, calibrated with the checkpoint's channel temperatures).
Rules (nothing fitted; the prior is the mean fused answer on validation):

- ``fused``: the model's own answer; ``voice`` / ``words``: one channel alone;
- ``poe``: product of the two channels' posteriors over the prior (each channel's evidence, counted once);
- ``max-conf``: the channel whose top probability is higher;
- ``conf-geo``: geometric mix of the two channels weighted by their top probabilities;
- ``fused+words``: the fused answer times the words' posterior over the prior (the words counted twice).

Nothing here chooses: the table is printed for docs/results.md, and a rule is worth building
into the live classifier only if validation picks it and the leave-voices-out sets agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from training.arbiter import streamed_answers  # noqa: E402
from training.evaluate import checkpoint_dialogues, part_of_each_utterance  # noqa: E402
from training.extract import ExtractConfig  # noqa: E402

EPS = 1e-6


def _norm(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=-1, keepdims=True)


def rules(fused: np.ndarray, audio: np.ndarray, text: np.ndarray, prior: np.ndarray) -> dict[str, np.ndarray]:
    """Each rule's (n, C) answer; rows where a channel is missing keep the fused answer, as live."""
    both = np.isfinite(audio).all(1) & np.isfinite(text).all(1)
    a, t = np.where(both[:, None], audio, fused), np.where(both[:, None], text, fused)
    la, lt, lp = np.log(a + EPS), np.log(t + EPS), np.log(prior + EPS)
    ca, ct = a.max(1, keepdims=True), t.max(1, keepdims=True)
    out = {
        "fused": fused,
        "voice": a,
        "words": t,
        "poe": _norm(np.exp(la + lt - lp)),
        "max-conf": np.where(ca >= ct, a, t),
        "conf-geo": _norm(np.exp((ca * la + ct * lt) / (ca + ct))),
        "fused+words": _norm(np.exp(np.log(fused + EPS) + lt - lp)),
    }
    return {k: np.where(both[:, None], v, fused) for k, v in out.items()}


def wf1(y: np.ndarray, p: np.ndarray) -> float:
    return float(f1_score(y, p.argmax(1), average="weighted"))


def validation_table(ck: models.Checkpoint) -> tuple[np.ndarray, list[str]]:
    dialogues = checkpoint_dialogues(
        ck, "mixed", "validation", None, {"words_text": "asr"}, ExtractConfig(progress=False)
    )
    ans = streamed_answers(ck.model, ck.temperature, ck.meta.get("channel_temperatures"), dialogues)
    prior = _norm(ans["fused"].mean(0))
    parts = part_of_each_utterance(dialogues)
    out = rules(ans["fused"], ans["audio"], ans["text"], prior)
    names = sorted(set(parts))
    lines = [
        "| rule | " + " | ".join(f"validation {n}" for n in names) + " | mean of parts |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for rule, p in out.items():
        cells = [wf1(ans["y"][parts == n], p[parts == n]) for n in names]
        lines.append(f"| {rule} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {np.mean(cells):.3f} |")
    return prior, lines


def lvo_table(path: Path, labels: list[str], prior: np.ndarray) -> list[str]:
    results = json.loads(path.read_text())
    sets = [s for s, r in results.items() if any("probs" in u for u in r.get("utterances", []))]
    if not sets:
        raise SystemExit(f"{path} keeps no probabilities: re-run `python -m training lvo` with today's code")
    table: dict[str, dict[str, float]] = {}
    for name in sets:
        rows = [u for u in results[name]["utterances"] if u["true"] is not None]
        y = np.array([labels.index(u["true"]) for u in rows])
        missed = np.array(["probs" not in u for u in rows])

        def dist(kind: str, rows: list = rows) -> np.ndarray:
            blank = [np.nan] * len(labels)
            return np.array(
                [[u["probs"][kind][c] for c in labels] if kind in u.get("probs", {}) else blank for u in rows]
            )

        fused = dist("fused")
        fused[missed] = 1.0 / len(labels)  # a missed utterance: no answer (scored wrong below)
        for rule, p in rules(fused, dist("audio"), dist("text"), prior).items():
            pred = p.argmax(1)
            pred[missed] = -1
            table.setdefault(rule, {})[name] = float(
                f1_score(y, pred, average="weighted", labels=sorted(set(y)), zero_division=0)
            )
    lines = ["| rule | " + " | ".join(sets) + " | mean |", "|---|" + "---:|" * (len(sets) + 1)]
    main = [s for s in sets if s != "voice-ravdess-long"]
    for rule, by_set in table.items():
        cells = " | ".join(f"{by_set[s]:.3f}" for s in sets)
        lines.append(f"| {rule} | {cells} | {np.mean([by_set[s] for s in main]):.3f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("streamer/assets/default.pt"))
    ap.add_argument(
        "--lvo", type=Path, nargs="*", default=[], help="lvo results of this checkpoint (with probabilities)"
    )
    args = ap.parse_args()
    ck = models.load(args.checkpoint, device="cpu")
    prior, lines = validation_table(ck)
    print("\n".join(lines))
    for path in args.lvo:
        print(f"\n{path} (mean over the sets but the forty-turn one):")
        print("\n".join(lvo_table(path, list(ck.labels), prior)))


if __name__ == "__main__":
    main()
