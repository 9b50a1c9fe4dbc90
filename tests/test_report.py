"""The picture of a conversation (issue 13): HTML report and PNG timeline, rendered as a person sees them."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import hex2color, rgb_to_hsv
from matplotlib.image import imread

from streamer.cli import main
from streamer.events import UtteranceEvent
from streamer.report import colours, emotion_shares, write_plot, write_report

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["anger", "joy", "neutral", "sadness"]


def ev(i, start, speaker, label, conf=0.8, text="words", error=None) -> UtteranceEvent:
    probs = {} if label is None else {lab: (conf if lab == label else (1 - conf) / 3) for lab in LABELS}
    return UtteranceEvent(i, start, start + 2.0, speaker, text, label, conf if label else 0.0, probs, {}, error)


EVENTS = [
    ev(0, 0.5, "A", "joy", 0.9, 'Hello <there> & "you"'),
    ev(1, 3.0, "B", "anger", 0.6),
    ev(2, 6.0, "A", "joy", 0.4),
    ev(3, 9.0, "B", None, text="", error="asr failed"),
    ev(4, 12.0, "A", "sadness", 0.7),
]


def coloured_share(png: Path, colour: str) -> float:
    """Share of the image's pixels with ``colour``'s hue (any opacity over white)."""
    img = imread(png)[..., :3]
    hsv = rgb_to_hsv(img.reshape(-1, 3))
    hue = rgb_to_hsv(np.array([hex2color(colour)]))[0, 0]
    near = np.minimum(abs(hsv[:, 0] - hue), 1 - abs(hsv[:, 0] - hue)) < 0.03
    return float((near & (hsv[:, 1] > 0.2)).mean())


def test_shares_count_each_speakers_classified_utterances():
    shares = emotion_shares(EVENTS)
    assert shares["A"] == pytest.approx({"joy": 2 / 3, "sadness": 1 / 3})
    assert shares["B"] == {"anger": 1.0}  # the failed utterance is not a share of anything


def test_report_is_self_contained_and_shows_everything(tmp_path):
    page = write_report(EVENTS, tmp_path / "r.html", "a <call>", LABELS, {"model": "hbaf"}).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "a &lt;call&gt;" in page
    # url(#id) is a clip path inside the page; anything else would be fetched.
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\((?!#)", page, re.I)
    # The only URLs are SVG's namespace names, which a browser never fetches.
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    assert html.escape(EVENTS[0].text) in page and "asr failed" in page
    assert "joy 67%, sadness 33%" in page and "anger 100%" in page
    assert page.count('class="chip"') == 4  # one label per classified utterance


def test_plot_uses_one_colour_per_emotion(tmp_path):
    png = write_plot(EVENTS, tmp_path / "t.png", LABELS)
    palette = colours(LABELS)
    for label in ("joy", "anger", "sadness"):
        assert coloured_share(png, palette[label]) > 0.002, label
    assert coloured_share(png, "#2ca02c") == 0.0  # green: no emotion here has it


def test_report_and_plot_options_are_checked_before_the_session(tmp_path, capsys):
    wav = ROOT / "recordings" / "demo-kitchen.flac"
    assert main(["--replay", str(wav), "--no-ui", "--report", str(tmp_path / "r.pdf")]) == 2
    assert "--report writes HTML; give a path ending in .html" in capsys.readouterr().err
    assert main(["--replay", str(wav), "--no-ui", "--plot", str(tmp_path / "r.jpg")]) == 2
    assert "--plot writes PNG" in capsys.readouterr().err
    (tmp_path / "r.html").write_text("keep me")
    assert main(["--replay", str(wav), "--no-ui", "--report", str(tmp_path / "r.html")]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "r.html").read_text() == "keep me"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, out: Path, profile: Path) -> None:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    cmd += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    cmd += ["--window-size=1200,1400", f"--screenshot={out}", page.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_of_a_demo_renders_in_headless_chromium(tmp_path):
    """The whole way a user goes: replay a demo with --report and --plot, open the page in a browser."""
    from streamer.export import read_jsonl

    rec = ROOT / "recordings" / "demo-kitchen-stereo.flac"
    report, plot, jsonl = tmp_path / "call.html", tmp_path / "call.png", tmp_path / "call.jsonl"
    args = ["--replay", str(rec), "--split-channels", "--speed", "max", "--no-ui", "--jsonl", str(jsonl)]
    assert main([*args, "--report", str(report), "--plot", str(plot)]) == 0
    events = read_jsonl(jsonl)
    shot = tmp_path / "shot.png"
    screenshot(report, shot, tmp_path / "profile")
    img = imread(shot)[..., :3]
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    assert (img < 0.9).mean() > 0.02  # text, bars and chips: not a blank page
    palette = colours(sorted({e.label for e in events if e.label}))
    palette = {lab: c for lab, c in palette.items() if rgb_to_hsv(np.array(hex2color(c)))[1] > 0.2}  # not grey
    assert palette, "the demo should have at least one non-neutral label"
    seen = [lab for lab in palette if coloured_share(shot, palette[lab]) > 0.0005]
    assert len(seen) == len(palette)  # every emotion of the conversation is visible in its colour
    page = report.read_text()
    assert all(html.escape(e.text) in page for e in events) and "speaker A" in page and "speaker B" in page
    assert all(coloured_share(plot, palette[lab]) > 0.001 for lab in palette)
