"""The session prior's whole weight grid on validation *and* test, for the record (docs/results.md).

    python experiments/prior_grid.py [--checkpoint streamer/assets/default.pt] [--weights 2 5 10 20 50]

`python -m training prior` chooses the weight on validation and scores test once; this prints
every weight on both splits, and the variant that estimates the session's prior from the
model's unadjusted answers instead of the adjusted ones (no feedback). Nothing here chooses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from models.prior import PriorShift, SessionPrior  # noqa: E402
from training.evaluate import checkpoint_dialogues  # noqa: E402
from training.extract import ExtractConfig  # noqa: E402
from training.prior_fit import scores as part_scores  # noqa: E402
from training.prior_fit import session_posteriors  # noqa: E402


def without_feedback(posteriors: list, shift: PriorShift) -> list:
    """Like :class:`SessionPrior`, but the session's prior is estimated from the unadjusted answers."""
    prior = np.asarray(shift.prior)
    out = []
    for p, y in posteriors:
        total, n, adjusted = prior * shift.weight, shift.weight, []
        for answer in p:
            q = answer * (total / n) / prior
            adjusted.append(q / q.sum())
            total, n = total + answer, n + 1
        out.append((np.array(adjusted), y))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="streamer/assets/default.pt")
    ap.add_argument("--weights", nargs="+", type=float, default=[2, 5, 10, 20, 50])
    args = ap.parse_args()
    ck = models.load(args.checkpoint, device="cpu")
    data = {
        s: checkpoint_dialogues(ck, "mixed", s, None, {"words_text": "asr"}, ExtractConfig(progress=False))
        for s in ("validation", "test")
    }
    post = {s: session_posteriors(ck, d) for s, d in data.items()}
    prior = np.concatenate([p for p, _ in post["validation"]]).mean(axis=0)
    prior = tuple(float(x) for x in prior / prior.sum())

    def row(name: str, answers: dict) -> None:
        cells = []
        for split in ("validation", "test"):
            s = part_scores(answers[split], data[split], True)
            cells.append(f"{s['paired']:.3f} / {s['words']:.3f} / {s['voice']:.3f} -> {s['parts_mean']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    print("| session prior | validation: paired / words / voice -> mean | test: paired / words / voice -> mean |")
    print("|---|---|---|")
    row("none", post)
    for w in args.weights:
        shift = PriorShift(prior, w)
        row(f"weight {w:g}", {s: [(SessionPrior(shift).run(p), y) for p, y in post[s]] for s in post})
        row(f"weight {w:g}, no feedback", {s: without_feedback(post[s], shift) for s in post})


if __name__ == "__main__":
    main()
