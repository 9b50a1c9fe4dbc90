"""The bundle's labels with Whisper in int8 (what its training features used) vs float32, end to end.

    python experiments/compute_type_e2e.py voice-ravdess words-espeak    # sets under runs/lvo16/recordings

Each recording of the named leave-voices-out sets (written by `python -m training lvo --out
runs/lvo16 --dialogues 16`) is replayed through `ser-live --replay ... --speed max` twice, with
`--compute-type int8` and `float32`, and scored by `training.e2e.score`; prints the share of
utterances with the same label and each weighted F1 (docs/results.md, "Session 16").
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("int8", "float32")


def replay(recording: Path, compute_type: str) -> list:
    from streamer.cli import build_parser, build_pipeline
    from streamer.events import UtteranceEvent

    argv = ["--replay", str(recording), "--speed", "max", "--no-ui", "--compute-type", compute_type]
    pipeline, _ = build_pipeline(build_parser().parse_args(argv))
    events: list = []
    pipeline.run(events.append, threading.Event(), threading.Event())
    return [e for e in events if isinstance(e, UtteranceEvent)]


def compare(recordings: list[Path]) -> dict:
    from sklearn.metrics import f1_score

    from training.e2e import Segment, read_truth, score, truth_path

    pairs: dict[str, list] = {ct: [] for ct in TYPES}
    agree = total = 0
    for rec in recordings:
        labels = {}
        for ct in TYPES:
            events = replay(rec, ct)
            pred = [Segment(e.start_s, e.end_s, e.text, e.label, e.speaker, e.confidence, (), {}) for e in events]
            scored = score(read_truth(truth_path(rec)), pred)
            pairs[ct] += [(t, str(p)) for t, p in zip(scored["labels_true"], scored["labels_pred"]) if t is not None]
            labels[ct] = {round(e.start_s, 2): e.label for e in events}
        a, b = labels["int8"], labels["float32"]
        agree += sum(a[k] == b[k] for k in set(a) & set(b))
        total += max(len(a), len(b))
    row = {"same_label": agree / total, "utterances": total}
    for ct, p in pairs.items():
        row[ct] = f1_score([t for t, _ in p], [y for _, y in p], average="weighted", zero_division=0)
    return row


def main() -> int:
    sys.path.insert(0, str(ROOT))
    out = {}
    for name in sys.argv[1:]:
        out[name] = compare(sorted((ROOT / "runs" / "lvo16" / "recordings" / name).glob("*.flac")))
        print(name, json.dumps(out[name]), flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
