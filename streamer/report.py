"""A picture of a conversation: the emotion timeline as a PNG, and a self-contained HTML report.

The report is one file a person can open anywhere, mail, or archive: the timeline plot is an
inline SVG, the styles are inline, there is no script and no link, so opening it makes no
network request. It holds the emotion timeline per speaker (one colour per emotion, the
confidence as opacity, so an unsure label fades instead of shouting), each speaker's share
of every emotion, and the transcript with its labels.

Colours are fixed per emotion name (the same emotion has the same colour in every report);
labels this module does not know get the remaining colours of a qualitative palette.
"""

from __future__ import annotations

import html
import io
import logging
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from streamer.events import UtteranceEvent
from streamer.export import _atomic_write, format_clock

log = logging.getLogger(__name__)

#: Colour per emotion: warm for aroused negative, cool for low arousal, grey for neutral.
EMOTION_COLOURS = {
    "anger": "#d62728",
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "joy": "#f2b701",
    "happy": "#f2b701",
    "happiness": "#f2b701",
    "neutral": "#9e9e9e",
    "uncertain": "#dcdcdc",  # --uncertain-below: no emotion claimed
    "sadness": "#1f77b4",
    "sad": "#1f77b4",
    "surprise": "#17becf",
    "calm": "#2ca02c",
    "frustration": "#ff7f0e",
    "excited": "#e377c2",
}
_SPARE = ("#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")
#: The row name of utterances without a speaker (one mixed-down channel).
NO_SPEAKER = "all"
#: Failed utterances (no label) are drawn as outlines in this colour.
ERROR_COLOUR = "#444444"


def speaker_of(event: UtteranceEvent) -> str:
    return event.speaker or NO_SPEAKER


def labels_of(events: Sequence[UtteranceEvent], labels: Sequence[str] | None = None) -> list[str]:
    """The model's labels in its order when known, else those seen (probabilities, then labels)."""
    seen: dict[str, None] = dict.fromkeys(labels or ())
    for e in events:
        seen.update(dict.fromkeys(e.probs))
        if e.label is not None:
            seen[e.label] = None
    return list(seen)


def colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour per label: the fixed one for known emotions, spare ones for the others."""
    spare = iter(_SPARE * (1 + len(labels) // len(_SPARE)))
    return {label: EMOTION_COLOURS.get(label.lower()) or next(spare) for label in labels}


def emotion_shares(events: Sequence[UtteranceEvent]) -> dict[str, dict[str, float]]:
    """Per speaker, the share of their classified utterances given each label (failures left out)."""
    counts: dict[str, dict[str, int]] = {}
    for e in events:
        if e.label is not None:
            row = counts.setdefault(speaker_of(e), {})
            row[e.label] = row.get(e.label, 0) + 1
    return {spk: {lab: n / sum(row.values()) for lab, n in row.items()} for spk, row in counts.items()}


def _figure(events: Sequence[UtteranceEvent], labels: Sequence[str]):
    """The timeline: one row per speaker, one bar per utterance, alpha = confidence."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed (and none on a server)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = colours(labels)
    speakers = sorted({speaker_of(e) for e in events}) or [NO_SPEAKER]
    end = max((e.end_s for e in events), default=1.0)
    fig = Figure(figsize=(10, 1.2 + 0.7 * len(speakers)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for e in events:
        row = speakers.index(speaker_of(e))
        width = max(e.end_s - e.start_s, 0.05)
        if e.label is None:
            ax.barh(row, width, left=e.start_s, height=0.6, fill=False, edgecolor=ERROR_COLOUR, hatch="//")
        else:
            alpha = min(1.0, max(0.15, float(e.confidence)))  # a barely visible bar still shows an utterance
            ax.barh(row, width, left=e.start_s, height=0.6, color=palette.get(e.label, ERROR_COLOUR), alpha=alpha)
    ax.set_yticks(range(len(speakers)), [f"speaker {s}" if s != NO_SPEAKER else "all" for s in speakers])
    ax.invert_yaxis()
    ax.set_xlim(0, end * 1.01)
    ax.set_xlabel("time (s) — bar opacity is the model's confidence")
    ax.spines[["top", "right"]].set_visible(False)
    used = [lab for lab in labels if any(e.label == lab for e in events)]
    handles = [Patch(color=palette[lab], label=lab) for lab in used]
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8), frameon=False)
    return fig


def write_plot(
    events: Sequence[UtteranceEvent], path: str | os.PathLike[str], labels: Sequence[str] | None = None
) -> Path:
    """The emotion timeline as a PNG (written to a temporary file, then renamed)."""
    events = list(events)
    fig = _figure(events, labels_of(events, labels))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def timeline_svg(events: Sequence[UtteranceEvent], labels: Sequence[str] | None = None) -> str:
    """The timeline as an ``<svg>`` element to inline in HTML (text kept as text, so it can be searched)."""
    import matplotlib

    events = list(events)
    fig = _figure(events, labels_of(events, labels))
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ser-live"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype: not allowed inside HTML
    return re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)  # RDF naming the tool: not content


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
svg { width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1.5rem; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #eee; vertical-align: top; }
.chip { display: inline-block; padding: 0 0.45rem; border-radius: 0.6rem; color: #111; white-space: nowrap; }
.bar { display: flex; height: 1.1rem; width: 100%; min-width: 20rem; border-radius: 0.2rem; overflow: hidden; }
.bar span { display: block; height: 100%; }
.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.error { color: #a00; }
"""


def _chip(label: str | None, confidence: float, palette: dict[str, str]) -> str:
    if label is None:
        return '<span class="error">failed</span>'
    colour = palette.get(label, ERROR_COLOUR)
    alpha = min(1.0, max(0.15, confidence))
    return (
        f'<span class="chip" style="background: {colour}{round(alpha * 255):02x}">{html.escape(label)}</span> '
        f'<span class="num">{confidence:.2f}</span>'
    )


def _shares_table(events: Sequence[UtteranceEvent], labels: list[str], palette: dict[str, str]) -> str:
    shares = emotion_shares(events)
    rows = []
    for spk in sorted(shares):
        mine = [e for e in events if speaker_of(e) == spk and e.label is not None]
        mean = sum(float(e.confidence) for e in mine) / len(mine)
        parts = [(lab, shares[spk].get(lab, 0.0)) for lab in labels if shares[spk].get(lab)]
        bar = "".join(
            f'<span style="width:{share * 100:.2f}%; background:{palette[lab]}" title="{html.escape(lab)} '
            f'{share:.0%}"></span>'
            for lab, share in parts
        )
        text = ", ".join(f"{html.escape(lab)} {share:.0%}" for lab, share in sorted(parts, key=lambda p: -p[1]))
        rows.append(
            f'<tr><td>{html.escape(spk)}</td><td class="num">{len(mine)}</td><td class="num">{mean:.2f}</td>'
            f'<td><div class="bar">{bar}</div></td><td>{text}</td></tr>'
        )
    if not rows:
        return "<p>No utterance was classified.</p>"
    return (
        "<table><tr><th>speaker</th><th>utterances</th><th>mean confidence</th><th>emotion shares</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _transcript(events: Sequence[UtteranceEvent], palette: dict[str, str]) -> str:
    rows = []
    for e in events:
        label = _chip(e.label, float(e.confidence), palette)
        if e.error:
            label += f' <span class="error">{html.escape(e.error)}</span>'
        rows.append(
            f'<tr><td class="time">{format_clock(e.start_s)}–{format_clock(e.end_s)}</td>'
            f"<td>{html.escape(speaker_of(e))}</td><td>{label}</td><td>{html.escape(e.text)}</td></tr>"
        )
    return (
        "<table><tr><th>time</th><th>speaker</th><th>emotion</th><th>transcript</th></tr>" + "".join(rows) + "</table>"
    )


def render_report(
    events: Sequence[UtteranceEvent],
    title: str = "ser-live session",
    labels: Sequence[str] | None = None,
    description: dict[str, str] | None = None,
) -> str:
    """The whole HTML page as a string (no script, no external resource)."""
    events = list(events)
    labs = labels_of(events, labels)
    palette = colours(labs)
    meta = [f"{len(events)} utterances", f"written {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"]
    meta += [f"{k} {v}" for k, v in (description or {}).items() if v]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="meta">{html.escape(" · ".join(meta))}</p>'
        f"<h2>Emotion timeline</h2>{timeline_svg(events, labs)}"
        f"<h2>Emotion shares per speaker</h2>{_shares_table(events, labs, palette)}"
        f"<h2>Transcript</h2>{_transcript(events, palette)}"
        '<p class="meta">Labels are a model\'s guesses from the voice and the words, with a probability '
        "calibrated on validation data (not a guarantee on other voices); see the model card.</p>"
        "</body></html>\n"
    )


def write_report(
    events: Sequence[UtteranceEvent],
    path: str | os.PathLike[str],
    title: str | None = None,
    labels: Sequence[str] | None = None,
    description: dict[str, str] | None = None,
) -> Path:
    """Write the self-contained HTML report atomically (an interrupted write leaves no half file)."""
    page = render_report(events, title or Path(path).stem, labels, description)

    def write(f: TextIO) -> None:
        f.write(page)

    return _atomic_write(path, write)
