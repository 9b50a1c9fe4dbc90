"""ser-live's command line: every bad input ends with one sentence and a non-zero exit."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from streamer.cli import main
from tests.conftest import err_line


@pytest.fixture
def ckpt_garbage(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"not a checkpoint")
    return p


def test_missing_file(tmp_path, capsys, ckpt_garbage):
    assert main(["--replay", str(tmp_path / "nope.wav"), "--no-ui", "--model", str(ckpt_garbage)]) == 2
    assert "no such recording" in err_line(capsys)


def test_empty_and_unreadable_files(tmp_path, capsys, ckpt_garbage):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert main(["--replay", str(tmp_path / "empty.wav"), "--no-ui", "--model", str(ckpt_garbage)]) == 2
    assert "empty" in err_line(capsys)
    (tmp_path / "junk.mp3").write_bytes(b"\x00\x01junk" * 300)
    assert main(["--replay", str(tmp_path / "junk.mp3"), "--no-ui", "--model", str(ckpt_garbage)]) == 2
    assert "junk.mp3" in err_line(capsys)


def test_file_without_audio_track(tmp_path, capsys, ckpt_garbage):
    av = pytest.importorskip("av")
    path = tmp_path / "video.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for _ in range(3):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert main(["--replay", str(path), "--no-ui", "--model", str(ckpt_garbage)]) == 2
    assert "audio" in err_line(capsys)


def test_model_that_is_not_a_checkpoint(tmp_path, capsys, ckpt_garbage):
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    assert main(["--replay", str(tmp_path / "a.wav"), "--no-ui", "--model", str(ckpt_garbage)]) == 2
    assert "not a readable ser-live checkpoint" in err_line(capsys)
    assert main(["--replay", str(tmp_path / "a.wav"), "--no-ui", "--model", str(tmp_path / "none.pt")]) == 2
    assert "no checkpoint at" in err_line(capsys)


class NoDevices:
    """A sounddevice stand-in with no input devices."""

    @staticmethod
    def query_devices(*a, **k):
        return []

    class default:  # noqa: N801 - mirrors sounddevice.default
        device = (-1, -1)


def test_no_microphone_and_no_portaudio(monkeypatch, capsys, ckpt_garbage):
    import streamer.microphone as audio

    monkeypatch.setattr(audio, "import_sounddevice", lambda: NoDevices)
    assert main(["--no-ui", "--model", str(ckpt_garbage)]) != 0
    assert "no audio input device" in err_line(capsys)

    def missing():
        raise audio.AudioError("PortAudio is not installed: run apt-get install libportaudio2")

    monkeypatch.setattr(audio, "import_sounddevice", missing)
    assert main(["--list-devices"]) == 2
    assert "libportaudio2" in err_line(capsys)


def test_collecting_wrapper_feeds_export(tmp_path):
    import argparse
    import threading

    from streamer.cli import Collecting, export_timeline
    from streamer.events import StatusEvent, UtteranceEvent

    class Fake:
        def describe(self):
            return {"model": "fake"}

        def run(self, emit, stop, paused):
            emit(StatusEvent("listening"))
            emit(UtteranceEvent(0, 0.5, 1.5, "A", "hello", "joy", 0.9, {"joy": 0.9}, {}))

    seen = []
    tee = Collecting(Fake())
    tee.run(seen.append, threading.Event(), threading.Event())
    assert len(seen) == 2 and [e.text for e in tee.events] == ["hello"] and tee.describe() == {"model": "fake"}
    args = argparse.Namespace(export="srt", export_path=tmp_path / "t.srt", replay=None)
    assert "joy" in export_timeline(tee.events, args).read_text()


@pytest.mark.parametrize("given, expected", [(None, "1"), ("2", "2")])
def test_ser_live_runs_numpys_blas_on_one_thread_unless_told_otherwise(given, expected):
    """OpenBLAS's threads busy-wait after each call: ser-live's session keeps numpy's BLAS on one
    thread, and importing the command's module changes nothing (same-seed training stays exact)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    code = (
        "import streamer.cli as cli; from threadpoolctl import threadpool_info\n"
        "def blas():\n"
        "    return ','.join(sorted({str(i['num_threads']) for i in threadpool_info() if i['user_api'] == 'blas'}))\n"
        "before = blas(); seen = []\n"
        "cli._main = lambda argv: seen.append(blas()) or 0\n"
        "assert cli.main([]) == 0\n"
        "print(before, seen[0], blas())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    before, inside, after = out.stdout.split()
    assert inside == expected and after == before
    if not given:  # importing the module left numpy's default (one thread per core) alone
        assert before != "1" or (os.cpu_count() or 1) == 1


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_ser_live_makes_idle_worker_threads_sleep_unless_told_otherwise(given, expected):
    """libgomp reads OMP_WAIT_POLICY once, when torch or CTranslate2 loads: ser-live sets it first."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, sys, streamer.cli; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_whisper_gets_half_the_cores_by_default(monkeypatch):
    """On 2 cores one Whisper thread measured best (docs/benchmarks.md, session 18): half the cores, 1 to 4."""
    import streamer.options as options

    got = []
    for cores in (1, 2, 3, 4, 16):
        monkeypatch.setattr(options.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        got.append(options.check_asr_threads(None))
    assert got == [1, 1, 1, 2, 4]
    assert options.check_asr_threads(0) == 0 and options.check_asr_threads(3) == 3  # 0: CTranslate2's own default
