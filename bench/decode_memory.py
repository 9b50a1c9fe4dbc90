"""Peak memory of replaying a long file: streaming decode (FileSource) against a whole-file decode.

    python bench/decode_memory.py --minutes 60 [--rate 48000] [--channels 2] [--suffix .wav|.flac|.mka]

Writes a long noise-and-tone file into a temporary folder (block by block, so the writer
itself stays small), then measures in a fresh process each: the peak resident set
(``ru_maxrss``) of importing the audio stack and opening the file (the floor), of
replaying it through :class:`streamer.audio.FileSource` at ``--speed max`` (what
``ser-live --replay`` does), and of ``load_audio`` on the whole file (what replay did
before it decoded as a stream). ``.mka`` (PCM in Matroska) takes the PyAV/ffmpeg path,
the others libsndfile. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent

MEASURE = """
import resource, sys, time
sys.path.insert(0, {root!r})
from streamer.audio import FileSource, load_audio
path, mode = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "floor":
    FileSource(path, speed="max")
    n = 0
elif mode == "stream":
    n = sum(block.shape[-1] for block in FileSource(path, speed="max"))
else:
    n = load_audio(path).shape[-1]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, n / 16000, time.perf_counter() - t)
"""


def write_long(path: Path, minutes: float, rate: int, channels: int) -> None:
    """Noise plus a tone, one minute at a time."""
    rng = np.random.default_rng(0)
    block = rate * 60
    t = np.arange(block) / rate
    total = round(minutes * 60 * rate)
    if path.suffix == ".mka":
        import av

        layout = "stereo" if channels == 2 else "mono"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("pcm_s16le", rate=rate, layout=layout)
            for start in range(0, total, block):
                n = min(block, total - start)
                x = (0.05 * rng.standard_normal((channels, n)) + 0.2 * np.sin(2 * np.pi * 220 * t[:n])).astype(
                    np.float32
                )
                frame = av.AudioFrame.from_ndarray((x * 32767).astype(np.int16).T.reshape(1, -1), "s16", layout)
                frame.sample_rate, frame.pts = rate, start
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return
    import soundfile as sf

    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            x = 0.05 * rng.standard_normal((n, channels)) + 0.2 * np.sin(2 * np.pi * 220 * t[:n])[:, None]
            f.write(x.astype(np.float32))


def measure(path: Path, mode: str) -> tuple[float, float, float]:
    code = MEASURE.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code, str(path), mode], capture_output=True, text=True, check=True)
    peak_mb, seconds, wall_s = map(float, out.stdout.split())
    return peak_mb, seconds, wall_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, default=2, choices=(1, 2))
    ap.add_argument("--suffix", default=".wav", choices=(".wav", ".flac", ".mka"))
    ap.add_argument("--skip-whole", action="store_true", help="do not measure the whole-file decode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"long{args.suffix}"
        t = time.perf_counter()
        write_long(path, args.minutes, args.rate, args.channels)
        size_mb = path.stat().st_size / 1e6
        print(
            f"{args.minutes:g} min, {args.rate} Hz, {args.channels} ch, {args.suffix}: {size_mb:.0f} MB on disk "
            f"(written in {time.perf_counter() - t:.0f} s)"
        )
        print("| what | peak RSS (MB) | audio (s) | wall (s) |")
        print("|---|---:|---:|---:|")
        modes = ["floor", "stream"] + ([] if args.skip_whole else ["whole"])
        names = {
            "floor": "imports + open (floor)",
            "stream": "FileSource replay (streaming)",
            "whole": "load_audio (whole file)",
        }
        for mode in modes:
            peak, seconds, wall = measure(path, mode)
            print(f"| {names[mode]} | {peak:.0f} | {seconds:.0f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
