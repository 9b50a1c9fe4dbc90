"""What a dataset loader found wrong, kept, excluded and substituted, in one place.

Loaders never drop an utterance silently: each one left out (or kept in a degraded
form, e.g. text-only) is a :class:`Problem` in the split's :class:`LoadReport`, and
utterances left out on purpose (IEMOCAP's minority classes) are counted as excluded
by design. Stages that read the audio later (feature extraction) record files they
could not decode in the same report, so one summary covers the whole run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Kinds of problem a loader records; each names one utterance (or one clip) it concerns.
PROBLEM_KINDS = (
    "missing_column",  # an optional column absent: every utterance lacks that field
    "unknown_label",  # label outside the dataset's label set
    "missing_audio",  # audio file not found
    "unreadable_audio",  # audio file there but not decodable (or empty)
    "empty_text",  # no transcript
    "bad_value",  # a field of the wrong type or out of range
    "duplicate",  # the same (dialogue, turn) twice
)

#: What happened to the utterance a problem concerns.
ACTIONS = ("excluded", "text-only", "kept")

_EXAMPLES_IN_SUMMARY = 3


class DataError(ValueError):
    """A dataset that cannot be loaded as asked; the message is one sentence naming the fix."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one utterance (``where``: its source id, path or CSV row)."""

    kind: str
    where: str
    detail: str
    action: str = "excluded"

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"problem kind must be one of {PROBLEM_KINDS}, got {self.kind!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"problem action must be one of {ACTIONS}, got {self.action!r}")


@dataclass
class LoadReport:
    """Counts and lists of everything a loader (or a later stage) did not use as given.

    ``rows`` is how many utterances the source offered, ``kept`` how many the split
    holds. ``excluded_by_design`` counts deliberate exclusions by reason (not errors);
    ``events`` counts substitutions and other noteworthy decisions (e.g. a clip taken
    from another voice); ``notes`` are free-form remarks about the whole source.
    """

    dataset: str
    split: str
    source: str = ""
    rows: int = 0
    kept: int = 0
    problems: list[Problem] = field(default_factory=list)
    excluded_by_design: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, where: str, detail: str, action: str = "excluded") -> Problem:
        """Record one problem; later stages call this too (e.g. a clip that fails to decode)."""
        problem = Problem(kind, str(where), detail, action)
        self.problems.append(problem)
        log.debug("%s/%s: %s at %s (%s): %s", self.dataset, self.split, kind, where, action, detail)
        return problem

    def exclude_by_design(self, reason: str, count: int = 1) -> None:
        self.excluded_by_design[reason] += count

    def count(self, event: str, count: int = 1) -> None:
        self.events[event] += count

    def note(self, text: str) -> None:
        self.notes.append(text)

    def counts(self) -> dict[str, int]:
        """Problem kind -> number of problems of that kind."""
        return dict(Counter(p.kind for p in self.problems))

    def affected(self, actions: tuple[str, ...] = ("excluded", "text-only")) -> int:
        """How many distinct utterances (``where`` keys) a problem with one of ``actions`` touched."""
        return len({p.where for p in self.problems if p.action in actions})

    def check_fraction(self, bad: int, total: int, what: str, hint: str, max_fraction: float) -> None:
        """Raise :class:`DataError` when ``bad / total`` exceeds ``max_fraction``.

        A few broken files are normal in a large release and get reported; many mean
        the layout or the path is wrong, and training on the rest would mislead.
        """
        if total <= 0 or bad / total <= max_fraction:
            return
        kinds = Counter(p.kind for p in self.problems if p.action != "kept")
        worst = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        example = next((p.where for p in self.problems if p.action != "kept"), "")
        raise DataError(
            f"{self.dataset} {self.split}: {bad} of {total} {what} ({bad / total:.1%}, more than the allowed "
            f"{max_fraction:.1%}) have problems ({worst}; e.g. {example}); {hint}"
        )

    def summary(self) -> str:
        """A few human-readable lines: counts, problem kinds with examples, exclusions, events."""
        head = f"{self.dataset} {self.split}: kept {self.kept} of {self.rows} utterances"
        if self.source:
            head += f" from {self.source}"
        lines = [head]
        by_kind: dict[str, list[Problem]] = {}
        for p in self.problems:
            by_kind.setdefault(p.kind, []).append(p)
        for kind, items in by_kind.items():
            actions = Counter(p.action for p in items)
            how = ", ".join(f"{n} {a}" for a, n in actions.most_common())
            examples = "; ".join(f"{p.where}: {p.detail}" for p in items[:_EXAMPLES_IN_SUMMARY])
            more = f" (+{len(items) - _EXAMPLES_IN_SUMMARY} more)" if len(items) > _EXAMPLES_IN_SUMMARY else ""
            lines.append(f"  {kind}: {len(items)} ({how}), e.g. {examples}{more}")
        for reason, n in self.excluded_by_design.most_common():
            lines.append(f"  excluded by design: {n} {reason}")
        for event, n in self.events.most_common():
            lines.append(f"  {event}: {n}")
        lines.extend(f"  note: {text}" for text in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (every problem listed, not just examples)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "source": self.source,
            "rows": self.rows,
            "kept": self.kept,
            "problem_counts": self.counts(),
            "problems": [
                {"kind": p.kind, "where": p.where, "detail": p.detail, "action": p.action} for p in self.problems
            ],
            "excluded_by_design": dict(self.excluded_by_design),
            "events": dict(self.events),
            "notes": list(self.notes),
        }
