"""Timeline exporters: JSONL (append-only), CSV, SRT, VTT and the --no-ui line."""

from __future__ import annotations

import csv
import json
import math

import pytest

from streamer.events import UtteranceEvent
from streamer.export import (
    JsonlWriter,
    cue_text,
    event_to_json,
    export,
    format_clock,
    format_line,
    read_jsonl,
    srt_timestamp,
    vtt_timestamp,
    write_csv,
    write_session_jsonl,
    write_srt,
    write_vtt,
)


def ev(index, start, end, text, label="joy", conf=0.82, speaker="A", error=None, probs=None, latency=None):
    return UtteranceEvent(
        index=index,
        start_s=start,
        end_s=end,
        speaker=speaker,
        text=text,
        label=None if error else label,
        confidence=0.0 if error else conf,
        probs=probs if probs is not None else ({} if error else {"neutral": 1 - conf, label: conf}),
        latency_ms=latency if latency is not None else {"asr": 120.5, "total": 180.25},
        error=error,
    )


@pytest.fixture
def events():
    return [
        ev(0, 3.2, 5.9, "hello there"),
        ev(1, 6.0, 8.5, 'she said "no", then left, sadly', "sadness", 0.61, speaker="B"),
        ev(2, 9.0, 10.25, "naïve café — 你好 ✓ <b>&", "neutral", 0.5, speaker=None),
        ev(3, 3599.9996, 3723.4567, "late", "anger", 0.9, latency={"asr": 90.0, "model": 2.0, "total": 100.0}),
        ev(4, 12.0, 13.0, "garbled", error="asr: decoder crashed"),
    ]


def test_clock_and_subtitle_timestamps():
    assert format_clock(3.24) == "00:03.2" and format_clock(59.96) == "01:00.0" and format_clock(3723.46) == "1:02:03.5"
    assert srt_timestamp(0) == "00:00:00,000" and srt_timestamp(3.2) == "00:00:03,200"
    assert srt_timestamp(3599.9996) == "01:00:00,000" and srt_timestamp(3723.4567) == "01:02:03,457"
    assert vtt_timestamp(59.9994) == "00:00:59.999" and vtt_timestamp(360000.5) == "100:00:00.500"
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="non-negative"):
            srt_timestamp(bad)


def test_format_line_and_cue_text(events):
    assert format_line(events[0]) == '00:03.2–00:05.9  A  joy (0.82)  "hello there"'
    assert format_line(events[2]).startswith("00:09.0–00:10.2  -  neutral (0.50)")
    assert format_line(events[4]) == '00:12.0–00:13.0  A  ERROR: asr: decoder crashed  "garbled"'
    multiline = ev(5, 1.0, 2.0, "two\nlines", error="boom\ntraceback")
    assert "\n" not in format_line(multiline) and "\n" not in cue_text(multiline)
    assert cue_text(events[0]) == "[joy 0.82] Speaker A: hello there"
    assert cue_text(events[2]) == "[neutral 0.50] naïve café — 你好 ✓ <b>&"
    assert cue_text(events[4]) == "[error: asr: decoder crashed] Speaker A: garbled"
    assert cue_text(ev(6, 1.0, 2.0, "", speaker=None)) == "[joy 0.82]"


def test_srt(tmp_path, events):
    path = write_srt(events, tmp_path / "out.srt")
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    assert blocks[-1] == "" and len(blocks) == 6
    assert blocks[0] == "1\n00:00:03,200 --> 00:00:05,900\n[joy 0.82] Speaker A: hello there"
    assert blocks[1].splitlines()[2] == '[sadness 0.61] Speaker B: she said "no", then left, sadly'
    assert blocks[3].splitlines()[:2] == ["4", "01:00:00,000 --> 01:02:03,457"]
    assert blocks[4].splitlines()[2] == "[error: asr: decoder crashed] Speaker A: garbled"


def test_vtt_escapes_markup(tmp_path, events):
    text = write_vtt(events, tmp_path / "out.vtt").read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n00:00:03.200 --> 00:00:05.900\n[joy 0.82] Speaker A: hello there\n\n")
    assert "[neutral 0.50] naïve café — 你好 ✓ &lt;b&gt;&amp;\n" in text
    assert "01:00:00.000 --> 01:02:03.457\n" in text and "," not in text.splitlines()[2]
    assert text.count(" --> ") == 5


def test_subtitles_reject_backwards_times(tmp_path):
    with pytest.raises(ValueError, match="ends .* before it starts"):
        write_srt([ev(0, 5.0, 4.0, "x")], tmp_path / "bad.srt")
    assert not (tmp_path / "bad.srt").exists()


def test_csv_header_quoting_unicode_and_failures(tmp_path, events):
    path = write_csv(events, tmp_path / "out.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "index", "start_s", "end_s", "speaker", "text", "label", "confidence",
        "prob_neutral", "prob_joy", "prob_sadness", "prob_anger",
        "latency_asr_ms", "latency_total_ms", "latency_model_ms", "error",
    ]  # fmt: skip
    assert len(rows) == 6
    assert rows[1][:7] == ["0", "3.200", "5.900", "A", "hello there", "joy", "0.8200"]
    assert rows[2][4] == 'she said "no", then left, sadly'
    assert '"she said ""no"", then left, sadly"' in path.read_text(encoding="utf-8")
    assert rows[3][3] == "" and rows[3][4] == "naïve café — 你好 ✓ <b>&"
    assert rows[4][11:14] == ["90.0", "100.0", "2.0"] and rows[1][13] == ""
    assert rows[5][5:7] == ["", ""] and rows[5][-1] == "asr: decoder crashed"


def test_export_dispatch(tmp_path, events):
    assert export(events, tmp_path / "a.txt", "SRT").read_text(encoding="utf-8").startswith("1\n")
    assert export(events, tmp_path / "b.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    assert export(events, tmp_path / "c.csv", "csv").read_text(encoding="utf-8").startswith("index,")
    with pytest.raises(ValueError, match="unknown export format 'xlsx'"):
        export(events, tmp_path / "d.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.vtt", "c.csv"]  # no temp files left


def test_jsonl_appends_never_truncates_and_round_trips(tmp_path, events):
    path = tmp_path / "sub" / "session.jsonl"
    with JsonlWriter(path) as w:
        w.write(events[0])
        assert path.read_text(encoding="utf-8").count("\n") == 1  # flushed before close
    with JsonlWriter(path) as w:
        for e in events[1:]:
            w.write(e)
        assert w.count == 4
    assert read_jsonl(path) == events
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[2])["text"] == "naïve café — 你好 ✓ <b>&" and "你好" in lines[2]
    record = json.loads(lines[4])
    assert record["error"] == "asr: decoder crashed" and record["label"] is None
    assert set(record) == {"index", "start_s", "end_s", "speaker", "text", "label", "confidence", "probs",
                           "latency_ms", "error", "channels", "overlap"}  # fmt: skip
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(events[0])
    with pytest.raises(TypeError, match="UtteranceEvent"):
        JsonlWriter(tmp_path / "x.jsonl").write({"text": "x"})


def test_jsonl_repairs_partial_last_line_and_reports_bad_lines(tmp_path, events):
    path = tmp_path / "crashed.jsonl"
    path.write_text(event_to_json(events[0]) + "\n" + '{"index": 1, "start', encoding="utf-8")
    with JsonlWriter(path) as w:
        w.write(events[1])
    with pytest.raises(ValueError, match=r"crashed.jsonl:2 is not a valid utterance record"):
        read_jsonl(path)
    assert read_jsonl(path, skip_invalid=True) == events[:2]
    assert path.read_text(encoding="utf-8").startswith(event_to_json(events[0]))  # old data kept


def test_jsonl_non_finite_values_stay_valid_json(tmp_path):
    e = ev(0, 1.0, 2.0, "x", conf=math.nan, probs={"joy": math.nan}, latency={"total": math.inf})
    line = event_to_json(e)
    assert json.loads(line)["confidence"] is None and "NaN" not in line and "Infinity" not in line
    path = tmp_path / "n.jsonl"
    with JsonlWriter(path) as w:
        w.write(e)
    back = read_jsonl(path)[0]
    assert math.isnan(back.confidence) and math.isnan(back.probs["joy"]) and math.isnan(back.latency_ms["total"])


def test_session_files_are_new_and_never_overwritten(tmp_path, events):
    lines = [event_to_json(e) for e in events]
    first = write_session_jsonl(lines, tmp_path / "rec")
    second = write_session_jsonl(lines[:1], tmp_path / "rec")
    assert first != second and first.name.startswith("session-") and first.suffix == ".jsonl"
    assert read_jsonl(first) == events and read_jsonl(second) == events[:1]


def test_an_uncertain_event_shows_its_guess_and_round_trips(tmp_path):
    from dataclasses import replace

    unsure = replace(ev(0, 3.2, 5.9, "fine, I guess", "joy", 0.38), label="uncertain", guess="joy")
    assert format_line(unsure) == '00:03.2–00:05.9  A  uncertain (joy?) (0.38)  "fine, I guess"'
    assert cue_text(unsure) == "[uncertain (joy?) 0.38] Speaker A: fine, I guess"
    line = json.loads(event_to_json(unsure))
    assert (line["label"], line["guess"]) == ("uncertain", "joy")
    assert "guess" not in json.loads(event_to_json(ev(1, 6.0, 7.0, "sure")))  # the usual lines are unchanged
    path = tmp_path / "s.jsonl"
    with JsonlWriter(path) as w:
        w.write(unsure)
    (back,) = read_jsonl(path)
    assert (back.label, back.guess, back.probs) == ("uncertain", "joy", unsure.probs)
