"""``python -m training``: extract | train | evaluate | compare.

Examples::

    python -m training train --model hbaf --dataset paired --context online --window 16 --name hbaf-s0
    python -m training train --model hbaf --ablate bimodal_attention --seeds 0 1 2 --name hbaf-no-bimodal
    python -m training train --model gca --recipe compact --seeds 0 1 2   # CPU settings instead of the paper's
    python -m training evaluate runs/hbaf-s0/model.pt --dataset paired --split test
    python -m training compare runs/*
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import statistics
import sys
from pathlib import Path

from models import ContextConfig
from models.base import CONTEXT_MODES
from training.data import dataset_names
from training.extract import ExtractConfig
from training.recipes import RECIPE_NAMES, label, resolve
from training.trainer import TrainConfig

log = logging.getLogger("training")


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            parsed = ast.literal_eval(value)
            out[key] = tuple(parsed) if isinstance(parsed, list) else parsed
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="paired", choices=dataset_names())
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's own default)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="dataset option")
    p.add_argument("--text-encoder", default=None, help="HF encoder path or cached name (default: bundled MiniLM)")
    p.add_argument("--workers", type=int, default=1, help="parallel openSMILE workers")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training", description="Offline training and evaluation")
    sub = ap.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("extract", help="extract and cache features of a dataset's splits")
    _common(ex)
    ex.add_argument("--splits", nargs="+", default=None)
    ex.add_argument("--frames", action="store_true")
    ex.add_argument("--tokens", action="store_true")

    tr = sub.add_parser("train", help="train (and evaluate) a model")
    _common(tr)
    from models import MODEL_NAMES

    tr.add_argument("--model", default="hbaf", choices=MODEL_NAMES)
    tr.add_argument("--name", default=None, help="run name (default: <model>-<dataset>); -s<seed> is appended")
    tr.add_argument("--runs-dir", type=Path, default=Path("runs"))
    tr.add_argument("--context", default="online", choices=CONTEXT_MODES)
    tr.add_argument("--window", type=int, default=16)
    tr.add_argument("--seeds", type=int, nargs="+", default=[0])
    tr.add_argument("--ablate", nargs="+", default=[], help="HBAF blocks to remove, e.g. bimodal_attention")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model config field")
    tr.add_argument(
        "--recipe",
        default="paper",
        choices=RECIPE_NAMES,
        help="paper: each model's own paper's training settings; compact: the CPU settings and widths of "
        "docs/results.md's paired table. The flags below and --set override it",
    )
    tr.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default: the recipe's)")
    tr.add_argument("--patience", type=int, default=None, help="default: the recipe's")
    tr.add_argument("--batch-size", type=int, default=None, help="dialogues per batch (default: the recipe's)")
    tr.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    tr.add_argument("--weight-decay", type=float, default=None, help="L2 (default: the recipe's)")
    tr.add_argument("--audio-dropout", type=float, default=0.0, help="modality dropout: P(hide audio)")
    tr.add_argument("--text-dropout", type=float, default=0.0, help="modality dropout: P(hide text)")
    tr.add_argument("--audio-features", type=int, default=512, help="openSMILE features kept by the SVM selector")
    tr.add_argument("--device", default="auto")

    ev = sub.add_parser("evaluate", help="score a checkpoint on a dataset split")
    _common(ev)
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--output", type=Path, default=None, help="write the metrics JSON here")
    ev.add_argument("--hide", choices=("audio", "text"), default=None, help="withhold one modality")

    e2 = sub.add_parser("e2e", help="replay recordings with ground truth through VAD + ASR + model and score them")
    e2.add_argument("recordings", nargs="+", type=Path, help="audio files, each with <name>.jsonl ground truth beside")
    e2.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled model)")
    e2.add_argument("--asr-model", default="tiny.en")
    e2.add_argument("--split-channels", action="store_true")
    e2.add_argument("--output", type=Path, default=None, help="write the results JSON here")

    mr = sub.add_parser("make-recordings", help="render a split's dialogues as recordings with ground truth")
    mr.add_argument("--dataset", default="voice-chains", choices=dataset_names())
    mr.add_argument("--data-root", default=None)
    mr.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    mr.add_argument("--split", default="validation")
    mr.add_argument("--limit", type=int, default=10)
    mr.add_argument("--out", type=Path, required=True)

    cp = sub.add_parser("compare", help="markdown table over runs (mean ± std across seeds)")
    cp.add_argument("runs", nargs="+", type=Path)
    cp.add_argument("--split", default="validation")
    return ap


def _extract_config(args) -> ExtractConfig:
    return ExtractConfig(
        cache_dir=args.cache_dir,
        text_encoder=args.text_encoder,
        workers=args.workers,
        progress=not args.quiet,
        frames=getattr(args, "frames", False),
        tokens=getattr(args, "tokens", False),
    )


def cmd_extract(args) -> int:
    from training.data import dataset_splits, load_dataset
    from training.extract import extract_split

    options = _parse_set(args.option)
    for split in args.splits or dataset_splits(args.dataset, args.data_root):
        data = load_dataset(args.dataset, split, args.data_root, **options)
        feats = extract_split(data, _extract_config(args))
        print(
            f"{args.dataset}/{split}: {len(feats.keys)} utterances, {int(feats.audio_ok.sum())} with audio, "
            f"{len(feats.failures)} failed"
        )
        print(data.report.summary())
    return 0


def cmd_train(args) -> int:
    from training.experiment import RunConfig, run

    model_options = _parse_set(args.set)
    for block in args.ablate:
        model_options[block] = False
    given = dict(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
    )
    train_settings, model_options, recipe = resolve(args.recipe, args.model, given, model_options)
    log.info("recipe %s for %s: %s", label(recipe), args.model, train_settings)
    base = args.name or f"{args.model}-{args.dataset}"
    rows = []
    for seed in args.seeds:
        cfg = RunConfig(
            name=f"{base}-s{seed}",
            model=args.model,
            dataset=args.dataset,
            data_root=args.data_root,
            dataset_options=_parse_set(args.option),
            model_options=model_options,
            context=ContextConfig(args.context, args.window),
            recipe=recipe,
            train=TrainConfig(
                **train_settings,
                seed=seed,
                device=args.device,
                audio_dropout=args.audio_dropout,
                text_dropout=args.text_dropout,
            ),
            extract=_extract_config(args),
            audio_features=args.audio_features,
            runs_dir=args.runs_dir,
        )
        m = run(cfg)
        v = m["validation"]
        rows.append(m)
        print(
            f"{cfg.name}: validation weighted F1 {v['weighted_f1']:.4f} acc {v['accuracy']:.4f} "
            f"(epoch {m['best_epoch']}, {m['seconds']} s) -> {args.runs_dir / cfg.name}"
        )
    return 0


def cmd_evaluate(args) -> int:
    from training.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.dataset,
        args.split,
        args.data_root,
        _parse_set(args.option),
        _extract_config(args),
        hide=args.hide,
    )
    print(
        f"{args.checkpoint} on {args.dataset}/{args.split}: weighted F1 {metrics['weighted_f1']:.4f} "
        f"accuracy {metrics['accuracy']:.4f} macro F1 {metrics['macro_f1']:.4f} ECE {metrics['ece']:.4f}"
    )
    if args.output:
        args.output.write_text(json.dumps(metrics, indent=2))
    return 0


def cmd_e2e(args) -> int:
    from training.e2e import evaluate_recording, truth_path

    results = []
    for rec in args.recordings:
        truth = truth_path(rec)
        if truth is None:
            expected = rec.with_name(rec.stem.removesuffix("-stereo") + ".jsonl")
            raise ValueError(f"no ground truth for {rec}: expected {expected}")
        r = evaluate_recording(rec, truth, args.model, asr_model=args.asr_model, split_channels=args.split_channels)
        results.append(r)
        print(
            f"{rec.name}: weighted F1 {r['weighted_f1']:.3f} accuracy {r['accuracy']:.3f} WER {r['wer']:.3f} "
            f"| truth {r['truth']} predicted {r['predicted']} missed {r['missed']} split {r['split']} "
            f"merged {r['merged']} false alarms {r['false_alarms']}"
        )
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


def cmd_make_recordings(args) -> int:
    from training.data import load_dataset
    from training.e2e import write_recordings

    split = load_dataset(args.dataset, args.split, args.data_root, **_parse_set(args.option))
    paths = write_recordings(split, args.out, args.limit)
    print(f"wrote {len(paths)} recordings with ground truth to {args.out}")
    return 0


def cmd_compare(args) -> int:
    print(compare_table(args.runs, args.split))
    return 0


def compare_table(run_dirs: list[Path], split: str = "validation") -> str:
    """Group runs by name without the ``-s<seed>`` suffix and by recipe; mean ± std of the main metrics.

    The last column names the training recipe each row ran under (``unrecorded`` for runs
    written before recipes were recorded); seeds of one name under different recipes are
    separate rows, never averaged together.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for d in run_dirs:
        f = Path(d) / "metrics.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        if split not in m:
            continue
        name = m["run"].rsplit("-s", 1)[0] if "-s" in m["run"] else m["run"]
        groups.setdefault((name, label(m.get("recipe"))), []).append(m[split])
    if not groups:
        raise ValueError(f"no run in {', '.join(map(str, run_dirs))} has {split} metrics: train some first")
    keys = ("weighted_f1", "accuracy", "macro_f1", "unweighted_accuracy", "ece")
    lines = ["| run | seeds | " + " | ".join(keys) + " | recipe |", "|---|---:|" + "---:|" * len(keys) + "---|"]
    for (name, recipe), ms in sorted(groups.items()):
        cells = []
        for k in keys:
            vals = [m[k] for m in ms]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f} ± {sd:.3f}")
        lines.append(f"| {name} | {len(ms)} | " + " | ".join(cells) + f" | {recipe} |")
    return "\n".join(lines)


COMMANDS = {
    "extract": cmd_extract,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "e2e": cmd_e2e,
    "make-recordings": cmd_make_recordings,
    "compare": cmd_compare,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not getattr(args, "quiet", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # else one line per decoded utterance
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
