"""Issue #12: outputs never overwrite or take each other down; signals end a session like its input ending;
options that are wrong are named as the user typed them."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.cli import build_parser, export_path, main, run_headless
from streamer.events import StatusEvent, UtteranceEvent
from streamer.export import read_jsonl
from tests.conftest import err_line

ROOT = Path(__file__).parent.parent


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "talk.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    return path


@pytest.fixture
def garbage(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    return path


def run_cli(*extra, wav, garbage) -> int:
    return main(["--replay", str(wav), "--no-ui", "--model", str(garbage), *map(str, extra)])


# -- 1. nothing overwritten, never the input --------------------------------------------------------


def test_record_and_export_refuse_an_existing_file_unless_overwrite(tmp_path, capsys, wav, garbage):
    old = tmp_path / "old.flac"
    sf.write(old, np.full(8000, 0.25, np.float32), 48000)
    before = old.read_bytes()
    assert run_cli("--record", old, wav=wav, garbage=garbage) == 2
    assert "--record" in (line := err_line(capsys)) and "already exists; pass --overwrite" in line
    assert old.read_bytes() == before
    srt = tmp_path / "t.srt"
    srt.write_text("keep me")
    assert run_cli("--export", "srt", "--export-path", srt, wav=wav, garbage=garbage) == 2
    assert "--export-path" in err_line(capsys) and srt.read_text() == "keep me"
    beside = wav.with_suffix(".csv")  # the default export path, next to the input
    beside.write_text("keep me too")
    assert run_cli("--export", "csv", wav=wav, garbage=garbage) == 2
    assert f"--export {beside} already exists" in err_line(capsys) and beside.read_text() == "keep me too"
    # With --overwrite the outputs pass; the session then stops at the (garbage) checkpoint.
    assert run_cli("--record", old, "--export", "srt", "--export-path", srt, "--overwrite", wav=wav, garbage=garbage)
    assert "checkpoint" in err_line(capsys) and old.read_bytes() == before


def test_no_output_is_ever_written_onto_the_input(tmp_path, capsys, garbage):
    flac = tmp_path / "call.flac"
    sf.write(flac, np.zeros((48000, 2), np.float32), 48000)
    before = flac.read_bytes()
    link = tmp_path / "link.flac"
    link.symlink_to(flac)
    for extra in (
        ["--record", flac, "--overwrite"],
        ["--record", link, "--overwrite"],
        ["--jsonl", flac],
        ["--export", "csv", "--export-path", flac, "--overwrite"],
    ):
        assert run_cli(*extra, wav=flac, garbage=garbage) == 2
        assert "is the --replay input; ser-live never writes onto its input" in err_line(capsys)
    assert flac.read_bytes() == before
    assert run_cli("--record", tmp_path / "a.flac", "--jsonl", tmp_path / "a.flac", wav=flac, garbage=garbage) == 2
    assert "give each output its own file" in err_line(capsys)


def test_jsonl_appends_by_design_and_help_says_so(tmp_path, capsys):
    help_text = " ".join(build_parser().format_help().split())
    assert "appended to, never replaced" in help_text and "--overwrite" in help_text
    assert "next to the --replay input" in help_text


def test_outputs_are_checked_before_the_session_starts(tmp_path, capsys, wav, garbage):
    cases = [
        (["--export", "vtt", "--export-path", tmp_path / "missing" / "t.vtt"], "folder"),
        (["--record", tmp_path / "missing" / "r.flac"], "does not exist"),
        (["--record", tmp_path / "r.wav"], "ending in .flac"),
        (["--export", "csv", "--export-path", tmp_path], "is a folder"),
    ]
    for extra, words in cases:
        assert run_cli(*extra, wav=wav, garbage=garbage) == 2
        line = err_line(capsys)
        assert words in line and ("--export-path" in line or "--record" in line), line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_up_front(tmp_path, capsys, wav, garbage):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert run_cli("--export", "csv", "--export-path", folder / "t.csv", wav=wav, garbage=garbage) == 2
        assert "cannot write in" in err_line(capsys)
    finally:
        folder.chmod(0o755)


def test_export_lands_next_to_the_input_with_normal_permissions(tmp_path):
    from streamer.export import export

    args = build_parser().parse_args(["--replay", str(tmp_path / "calls" / "talk.m4a"), "--export", "srt"])
    assert export_path(args) == tmp_path / "calls" / "talk.srt"
    args = build_parser().parse_args(["--record", str(tmp_path / "rec.flac"), "--export", "csv"])
    assert export_path(args) == tmp_path / "rec.csv"
    mask = os.umask(0o022)
    try:
        out = export([UtteranceEvent(0, 0.0, 1.0, "A", "hi", "joy", 0.9, {"joy": 0.9})], tmp_path / "t.srt")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# -- 2. one failing output does not take the others down -------------------------------------------


def event(i: int, text: str = "hello") -> UtteranceEvent:
    return UtteranceEvent(i, float(i), i + 0.5, "A", text, "joy", 0.9, {"joy": 0.9, "anger": 0.1}, {})


class ScriptedPipeline:
    """Emits utterances; a callable in the script runs with (stop) and may wait for it."""

    def __init__(self, script):
        self.script = script
        self.saw_stop = False

    def run(self, emit, stop, paused):
        emit(StatusEvent("listening"))
        for item in self.script:
            if callable(item):
                item(stop)
            else:
                emit(item)
        self.saw_stop = stop.is_set()
        emit(StatusEvent("input ended", finished=True))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to play the full disk")
def test_a_full_disk_under_jsonl_keeps_the_analysis_and_the_export(tmp_path, capsys):
    args = build_parser().parse_args(
        ["--no-ui", "--jsonl", "/dev/full", "--export", "csv", "--export-path", str(tmp_path / "t.csv")]
    )
    assert run_headless(ScriptedPipeline([event(0), event(1), event(2)]), args) == 1
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 3  # every utterance still analysed and printed
    errors = [line for line in out.err.splitlines() if "error" in line]
    assert len(errors) == 1 and "stopped appending to --jsonl /dev/full" in errors[0]
    assert "No space left on device" in errors[0]
    assert (tmp_path / "t.csv").read_text().count("\n") == 4  # header + 3 rows


def test_an_export_that_cannot_be_written_is_one_sentence_and_keeps_the_jsonl(tmp_path, capsys):
    folder = tmp_path / "gone"
    folder.mkdir()
    args = build_parser().parse_args(
        ["--no-ui", "--jsonl", str(tmp_path / "e.jsonl"), "--export", "srt", "--export-path", str(folder / "t.srt")]
    )

    def remove_folder(stop):  # the export folder disappears mid-session
        folder.rmdir()
        folder.write_text("now a file")

    assert run_headless(ScriptedPipeline([event(0), remove_folder, event(1)]), args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "could not write the --export file" in errors[0]
    assert [e.index for e in read_jsonl(tmp_path / "e.jsonl")] == [0, 1]


def test_a_closed_stdout_does_not_stop_the_analysis_or_the_files(tmp_path, monkeypatch):
    class ClosedPipe:
        """stdout piped into `head -1`: the second line finds the pipe closed."""

        def __init__(self):
            self.lines = 0

        def write(self, text):
            if self.lines >= 1:
                raise BrokenPipeError(32, "Broken pipe")
            self.lines += text.count("\n")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    args = build_parser().parse_args(
        ["--no-ui", "--jsonl", str(tmp_path / "e.jsonl"), "--export", "csv", "--export-path", str(tmp_path / "t.csv")]
    )
    assert run_headless(ScriptedPipeline([event(0), event(1), event(2)]), args) == 0
    assert len(read_jsonl(tmp_path / "e.jsonl")) == 3
    assert (tmp_path / "t.csv").read_text().count("\n") == 4


# -- 3. signals end a session like Ctrl-C ---------------------------------------------------------


@pytest.fixture
def safe_signals():
    """Should the code under test not handle the signal, it must not kill the test run either."""
    caught = []
    old = {s: signal.signal(s, lambda n, f: caught.append(n)) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield caught
    for s, h in old.items():
        signal.signal(s, h)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_ends_a_headless_session_with_every_output_written(tmp_path, capsys, safe_signals, signum):
    args = build_parser().parse_args(
        ["--no-ui", "--jsonl", str(tmp_path / "e.jsonl"), "--export", "vtt", "--export-path", str(tmp_path / "t.vtt")]
    )

    def signalled(stop):
        os.kill(os.getpid(), signum)
        assert stop.wait(5), "the signal did not stop the session"

    pipeline = ScriptedPipeline([event(0), signalled, event(1, "flushed after the signal")])
    assert run_headless(pipeline, args) == 128 + signum
    assert pipeline.saw_stop and not safe_signals
    assert "flushed after the signal" in (tmp_path / "t.vtt").read_text()
    assert len(read_jsonl(tmp_path / "e.jsonl")) == 2
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # handlers put back as they were


def test_stop_still_emits_the_utterance_already_captured():
    from streamer.audio import FileSource
    from streamer.pipeline import LivePipeline
    from tests.test_pipeline import processor

    stop = threading.Event()

    class StopsMidSpeech:
        """demo-office until 2.5 s into it: inside the first utterance (0.3 s to 3.6 s)."""

        channels, dropped_blocks, description = 1, 0, "demo"

        def __iter__(self):
            for i, block in enumerate(FileSource(ROOT / "recordings" / "demo-office.flac", speed="max", block_ms=100)):
                if i == 25:
                    stop.set()  # Ctrl-C
                yield block

    events = []
    LivePipeline(StopsMidSpeech(), processor()).run(events.append, stop, threading.Event())
    utts = [e for e in events if isinstance(e, UtteranceEvent)]
    assert len(utts) == 1 and 2.0 < utts[0].end_s <= 2.6


UI_SCRIPT = """
import threading, sys
from streamer.events import StatusEvent
from streamer.ui import EmotionApp

class Live:
    def describe(self):
        return {"model": "fake"}
    def run(self, emit, stop, paused):
        emit(StatusEvent("listening"))
        stop.wait()

app = EmotionApp(Live(), ["joy", "anger"])
app.run()
print("RECEIVED", app.received_signal, "STOPPED", app.stop.is_set(), flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_quits_the_ui_and_restores_the_terminal(signum):
    import pty
    import select

    parent, child = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", UI_SCRIPT], stdin=child, stdout=child, stderr=child, cwd=ROOT, env=env
    )
    os.close(child)
    out = b""

    def read(until: bytes, timeout_s: float) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout_s
        while until not in out and time.monotonic() < deadline:
            if select.select([parent], [], [], 0.1)[0]:
                try:
                    out += os.read(parent, 65536)
                except OSError:  # the child closed the terminal
                    return

    try:
        read(b"listening", 60)
        assert b"\x1b[?1049h" in out and b"\x1b[?1000h" in out  # alternate screen and mouse reporting on
        proc.send_signal(signum)
        read(b"STOPPED", 20)
        assert proc.wait(10) == 0
        read(b"(the rest)", 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(parent)
    tail = out[out.rindex(b"\x1b[?1049h") :]
    assert b"\x1b[?1049l" in tail and b"\x1b[?1000l" in tail  # both turned off again
    assert f"RECEIVED {signum} STOPPED True".encode() in out


# -- 7. messages that name what the user typed ----------------------------------------------------


def test_wrong_options_are_named_as_typed(tmp_path, capsys, wav, garbage):
    import torch

    (tmp_path / "model.bin").write_bytes(b"x")
    cases = [
        (["--compute-type", "float99"], "--compute-type 'float99' is not a CTranslate2 compute type"),
        (["--asr-model", tmp_path / "model.bin"], "is a file; give a faster-whisper model folder"),
        (["--block-ms", "0"], "--block-ms must be a positive"),
        (["--end-silence-ms", "0"], "--end-silence-ms must be at least one frame"),
        (["--min-utterance-ms", "900", "--max-utterance-ms", "1000"], "--max-utterance-ms (1000) must be at least"),
        (["--compute-device", "tpu"], "--compute-device 'tpu' is not a device"),
        (["--uncertain-below", "1"], "--uncertain-below must be a confidence from 0 to below 1"),
        (["--uncertain-below", "nan"], "--uncertain-below must be a confidence from 0 to below 1"),
        (["--asr-threads", "-1"], "--asr-threads must be 0 (CTranslate2's default) or a number of threads"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--compute-device", "cuda"], "--compute-device cuda asks for a CUDA GPU but none"))
    for extra, words in cases:
        assert run_cli(*extra, wav=wav, garbage=garbage) == 2
        assert words in err_line(capsys), extra
    assert main(["--replay", str(tmp_path), "--no-ui"]) == 2
    assert f"--replay {tmp_path} is a folder" in err_line(capsys)


@pytest.mark.slow
def test_sigterm_on_the_real_cli_finalises_the_recording_and_writes_the_exports(tmp_path):
    """The whole program, real models: SIGTERM while replaying in real time."""
    cmd = [sys.executable, "-m", "streamer.cli", "--replay", str(ROOT / "recordings" / "demo-kitchen.flac"), "--no-ui"]
    cmd += ["--record", str(tmp_path / "rec.flac"), "--jsonl", str(tmp_path / "e.jsonl")]
    cmd += ["--export", "srt", "--export-path", str(tmp_path / "t.srt")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the first utterance: the session is under way
        assert "–" in first, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [first, *rest.splitlines()]
    info = sf.info(str(tmp_path / "rec.flac"))
    assert 3.0 < info.duration < 60.0  # the header was finalised: the length is known
    assert len(read_jsonl(tmp_path / "e.jsonl")) == len([x for x in lines if x.strip()])
    assert (tmp_path / "t.srt").read_text().count(" --> ") == len(read_jsonl(tmp_path / "e.jsonl"))


FULL_DISK_CLI = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))  # every file stops growing at 150 kB
from streamer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_full_disk_under_record_on_the_real_cli_keeps_everything_else(tmp_path):
    """The whole program, real models: the recording hits the limit at ~11 s of a 34 s replay."""
    args = ["--replay", str(ROOT / "recordings" / "demo-kitchen.flac"), "--speed", "max", "--no-ui"]
    args += ["--record", str(tmp_path / "rec.flac"), "--jsonl", str(tmp_path / "e.jsonl")]
    args += ["--export", "srt", "--export-path", str(tmp_path / "t.srt")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "stopped recording to" in errors[0] and "the analysis goes on" in errors[0]
    lines = out.stdout.splitlines()
    assert len(lines) >= 8 and "00:3" in lines[-1]  # analysed to the end of the recording
    assert len(read_jsonl(tmp_path / "e.jsonl")) == len(lines)
    assert (tmp_path / "t.srt").read_text().count(" --> ") == len(lines)
    from streamer.audio import load_audio

    assert 5 * 16000 < len(load_audio(tmp_path / "rec.flac")) < 20 * 16000  # the partial recording reads back


def test_a_save_dir_that_is_a_file_is_refused_before_the_ui_starts(tmp_path):
    from streamer.guards import check_outputs

    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    args = build_parser().parse_args(["--replay", str(tmp_path / "talk.wav"), "--save-dir", str(blocker)])
    with pytest.raises(ValueError, match="--save-dir .* is a file"):
        check_outputs(args)
    ok = build_parser().parse_args(["--replay", str(tmp_path / "talk.wav"), "--save-dir", str(tmp_path / "new" / "d")])
    check_outputs(ok)  # a folder still to be created under a writable one is fine
    for flag in ("--no-ui", "--no-save"):  # nothing will be saved: nothing to check
        check_outputs(build_parser().parse_args(["--replay", "x.wav", "--save-dir", str(blocker), flag]))
