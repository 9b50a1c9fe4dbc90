"""``ser-live --replay FILES_OR_FOLDERS --out-dir OUT``: the command-line side of :mod:`streamer.batch`.

Options are checked and every output path is known to be free before the models load, so a
typo costs a second, not a model load; then one line per recording on stdout (errors on
stderr, one sentence each), ``summary.csv`` last. Exit status: 0 when every recording was
analysed, 1 when any failed, 2 for bad options, 128 + N after signal N.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from streamer.guards import stop_on_signals

#: Options that name one file: with --out-dir every recording has its own.
_SINGLE_FILE_FLAGS = {
    "jsonl": "--jsonl",
    "record": "--record",
    "export_path": "--export-path",
    "report": "--report",
    "plot": "--plot",
}


def check_batch_options(args) -> None:
    """The options of a batch, as one sentence naming the flag when one does not fit."""
    from streamer.options import check_cli_model_options
    from streamer.speakers import speaker_config

    if not args.replays:
        raise ValueError("--out-dir is for --replay recordings; give the files or folders to replay with --replay")
    for attr, flag in _SINGLE_FILE_FLAGS.items():
        if getattr(args, attr, None) is not None:
            raise ValueError(
                f"{flag} names one file; with --out-dir every recording gets its own outputs in {args.out_dir}"
            )
    if args.block_ms <= 0:
        raise ValueError(f"--block-ms must be a positive number of milliseconds, got {args.block_ms}")
    check_cli_model_options(args)
    speaker_config(args)


def run_many(args, make_tracker: Callable) -> int:
    """Replay every recording with one tracker; see the module docstring for the exit status."""
    from streamer.batch import SUMMARY_NAME, BatchOutputs, collect_inputs, output_names, run_batch
    from streamer.cli import _say, _segmenter_config, _sentence

    check_batch_options(args)
    segmenter = _segmenter_config(args)
    inputs = collect_inputs(args.replays)
    outputs = BatchOutputs(args.out_dir, args.export, args.overwrite, getattr(args, "second_pass", False))
    outputs.check(output_names(inputs))
    _say(f"# {len(inputs)} recordings -> {args.out_dir}; loading the models", sys.stderr)
    tracker = make_tracker(args, segmenter)

    def say(line: str, error: bool) -> None:
        if error:
            _say(f"ser-live: error: {_sentence(line)}", sys.stderr)
        else:
            _say(_sentence(line))

    stop = threading.Event()
    results = []
    try:
        with stop_on_signals(stop) as received:
            results = run_batch(tracker, inputs, outputs, say, stop)
    except KeyboardInterrupt:  # a second signal: the summary of the files done is already written
        return 130
    failed = [r for r in results if r.error]
    done = len(results) - len(failed)
    _say(
        f"# {done} of {len(inputs)} recordings analysed"
        + (f", {len(failed)} failed" if failed else "")
        + f"; summary in {outputs.out_dir / SUMMARY_NAME}",
        sys.stderr,
    )
    if received:
        return 128 + received[0]
    return 1 if failed or len(results) < len(inputs) else 0
