"""``python -m training compare``: one markdown table over runs (mean ± std across seeds)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from training.recipes import label


def compare_table(run_dirs: list[Path], split: str = "validation") -> str:
    """Group runs by name without the ``-s<seed>`` suffix and by recipe; mean ± std of the main metrics.

    The last column names the training recipe each row ran under (``unrecorded`` for runs
    written before recipes were recorded); seeds of one name under different recipes are
    separate rows, never averaged together.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for d in run_dirs:
        f = Path(d) / "metrics.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        if split not in m:
            continue
        name = m["run"].rsplit("-s", 1)[0] if "-s" in m["run"] else m["run"]
        groups.setdefault((name, label(m.get("recipe"))), []).append(m[split])
    if not groups:
        raise ValueError(f"no run in {', '.join(map(str, run_dirs))} has {split} metrics: train some first")
    keys = ("weighted_f1", "accuracy", "macro_f1", "unweighted_accuracy", "ece")
    lines = ["| run | seeds | " + " | ".join(keys) + " | recipe |", "|---|---:|" + "---:|" * len(keys) + "---|"]
    for (name, recipe), ms in sorted(groups.items()):
        cells = []
        for k in keys:
            vals = [m[k] for m in ms]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f} ± {sd:.3f}")
        lines.append(f"| {name} | {len(ms)} | " + " | ".join(cells) + f" | {recipe} |")
    return "\n".join(lines)
