"""Model options shared by the Python API and the command line, checked before anything loads.

Light on purpose (no torch, no Whisper): ``ser-live --help`` and option errors must be instant.
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

#: The HBAF checkpoint shipped in the package (see docs/model-card.md).
BUNDLED_MODEL = Path(__file__).parent / "assets" / "default.pt"
#: What runs the text encoder (:class:`streamer.text_encoder.TextEncoder`): ONNX Runtime, torch, or auto.
TEXT_RUNTIMES = ("auto", "onnx", "torch")

#: Audio blocks of 100 ms. One VAD frame (30 ms) was measured and dropped (docs/benchmarks.md,
#: session 17): it gives every speculative guess the same 360 ms head start (100 ms blocks: 400 ms,
#: or 300 ms for a third of the lines), but it also starts a guess at every pause the block would
#: have hidden, and the extra stale guesses cost more CPU (real-time factor 0.299 -> 0.325) than the
#: head start won back (long turns' p95 264 -> 263 ms).
DEFAULT_BLOCK_MS = 100
#: What CTranslate2 accepts as a compute type (``auto``: ser-live's choice, int8 on CPU).
COMPUTE_TYPES = (
    "auto",
    "default",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)


def sleeping_threads() -> None:
    """Worker threads that wait for work sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    Whisper (CTranslate2) and torch share libgomp, whose idle threads spin for a while after
    each parallel region; on 2 cores that spin takes CPU from the stage running beside it (the
    text encoder, the UI). Measured on the long-turns replay in real time: CPU 0.308 -> 0.272-0.290 s
    per audio second, end-of-speech latency within run-to-run noise (docs/benchmarks.md). libgomp
    reads the variable once, when it loads, so this must run before torch or CTranslate2 is
    imported; a value the user set is kept. ONNX Runtime's own pool follows the same setting
    (:mod:`streamer.text_onnx`).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def sequential_blas() -> AbstractContextManager:
    """numpy's BLAS (OpenBLAS) on one thread inside the returned context, unless the user set
    ``OPENBLAS_NUM_THREADS``; the previous limit comes back on exit.

    The live path asks little of it (Whisper's mel filter bank per utterance, the speaker back
    end's small projection), and OpenBLAS's worker threads busy-wait after each call, taking the
    second core from the stage beside it. Measured per Whisper transcription (tiny.en, 46
    dialogue lines, 2 cores, ``bench/asr_threads.py``): 424-429 -> 309-341 ms of CPU per line,
    280-313 -> 211-264 ms wall (p50; docs/benchmarks.md, session 18). torch and CTranslate2
    keep their own pools (libgomp: :func:`sleeping_threads`); only numpy's is touched. ``ser-live``
    runs inside it; a context rather than a setting at import, so that importing the command's
    module (tests, benchmarks, ``python -m training``) leaves numpy as it was: a thread count that
    changes halfway through a process changes the last bits of some sums, and with them
    same-seed reproducibility. numpy is already loaded by then, hence ``threadpoolctl`` rather
    than the environment.
    """
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return nullcontext()
    import numpy  # noqa: F401 - the BLAS to limit is numpy's, loaded with it
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def threads_sleep() -> bool:
    """Whether idle worker threads should sleep (see :func:`sleeping_threads`)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def check_uncertain_below(value: float, name: str = "uncertain_below") -> float:
    """The ``--uncertain-below`` threshold, or one sentence naming ``name`` (NaN fails too)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a confidence from 0 to below 1 (0: always the model's answer), got {value}")
    return float(value)


def default_asr_threads() -> int:
    """Whisper's CPU threads when none are asked for: half the cores this process may use, at most 4.

    Whisper shares the CPU with the text encoder, the voice encoder, the segmenter and the UI;
    CTranslate2's own default (up to 4 threads) takes every core of a small machine. On this
    project's 2 cores, one thread measured best on every count in back-to-back real-time
    replays (docs/benchmarks.md, session 18): CPU real-time factor 0.233 -> 0.212, and 0.28
    with interim words on; end-of-speech latency lower too, since the stage beside Whisper
    keeps a core. Larger machines were not measured: half the cores is the same split there.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(1, min(4, cores // 2))


def check_asr_threads(value: int | None, name: str = "asr_threads") -> int:
    """Whisper's CPU threads (None: :func:`default_asr_threads`; 0: CTranslate2's own default),
    or one sentence naming ``name``."""
    if value is None:
        return default_asr_threads()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be 0 (CTranslate2's default) or a number of threads, got {value!r}")
    return value


#: The CLI flags behind :func:`check_model_options`' arguments, so its messages name what was typed.
CLI_MODEL_FLAGS = {"asr_model": "--asr-model", "device": "--compute-device", "compute_type": "--compute-type"}


def check_cli_model_options(args) -> None:
    """:func:`check_model_options` on parsed ``ser-live`` arguments, naming their flags."""
    check_model_options(args.asr_model, args.compute_device, args.compute_type, names=CLI_MODEL_FLAGS)


def check_model_options(asr_model: str, device: str, compute_type: str, names: dict[str, str] | None = None) -> None:
    """Model options that would otherwise fail deep inside CTranslate2 or torch, as one sentence.

    ``names`` maps ``asr_model``, ``device`` and ``compute_type`` to what the caller typed
    (the CLI passes its flags), so the message names the thing to fix."""
    n = {"asr_model": "asr_model", "device": "device", "compute_type": "compute_type", **(names or {})}
    if compute_type not in COMPUTE_TYPES:
        raise ValueError(
            f"{n['compute_type']} {compute_type!r} is not a CTranslate2 compute type; use one of "
            f"{', '.join(COMPUTE_TYPES)}"
        )
    if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"{n['device']} {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"{n['device']} {device} asks for a CUDA GPU but none is available; use {n['device']} auto or cpu"
            )
    if Path(asr_model).expanduser().is_file():
        raise ValueError(
            f"{n['asr_model']} {asr_model} is a file; give a faster-whisper model folder (holding model.bin) or tiny.en"
        )
