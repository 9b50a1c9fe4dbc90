"""``python -m training``: extract | train | evaluate | arbiter | prior | e2e | make-recordings | lvo | text-tune |
compare.

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
import dataclasses
import json
import logging
import re
import sys
import typing
from pathlib import Path

from models import ContextConfig
from models.base import CONTEXT_MODES
from training.compare import compare_table
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


def _dataset_options(args) -> dict:
    """``--option`` values, plus ``--labels`` (a manifest's declared label set) when given."""
    options = _parse_set(args.option)
    if getattr(args, "labels", None):
        options["labels"] = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    return options


def _kind_fits(value, kind) -> bool:
    """Whether a ``--set`` value fits a config field's annotation (int, float, bool, str, tuple)."""
    origin = typing.get_origin(kind) or kind
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin is tuple:
        inner = [a for a in typing.get_args(kind) if a is not Ellipsis]
        return isinstance(value, tuple) and all(_kind_fits(v, inner[0]) for v in value) if inner else True
    return True  # anything else (a nested config): the config's own checks decide


_KIND_WORDS = {int: "an integer", float: "a number", bool: "True or False", str: "a text", tuple: "a tuple like (8, 8)"}


def _model_options(args) -> dict:
    """``--set`` and ``--ablate`` checked against the model's config before any data is loaded."""
    from models.registry import lookup

    options = _parse_set(args.set)
    _, config_cls = lookup(args.model)
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls) if f.name != "context"]
    for key, value in options.items():
        if key not in names:
            raise ValueError(f"--set {key}: model {args.model!r} has no setting {key!r}; it has {', '.join(names)}")
        if not _kind_fits(value, hints[key]):
            origin = typing.get_origin(hints[key]) or hints[key]
            kind = _KIND_WORDS.get(origin, getattr(origin, "__name__", str(origin)))
            default = next(f.default for f in dataclasses.fields(config_cls) if f.name == key)
            raise ValueError(f"--set {key}={value!r}: {key} takes {kind} (default {default!r})")
    for block in args.ablate:
        options[block] = False
    try:
        config_cls(**options)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"--set/--ablate: {exc}") from exc
    return options


#: Library messages speak Python (``root=``); on the command line the user typed flags.
_CLI_WORDS = (
    (r"\bpass root= ", "pass --data-root "),
    (r"\bneeds root= ", "needs --data-root "),
    (r"\bpoint root at\b", "point --data-root at"),
    (r"\(labels= in Python\)", ""),
    (r"\bpass (\w+)=(False|True)\b", r"pass --option \1=\2"),
)


def _as_typed(message: str) -> str:
    for pattern, flag in _CLI_WORDS:
        message = re.sub(pattern, flag, message)
    return " ".join(message.split())


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="paired", choices=dataset_names())
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's own default)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="dataset option")
    p.add_argument(
        "--labels", default=None, metavar="A,B,C", help="a manifest's label set, in order (default: inferred)"
    )
    p.add_argument("--text-encoder", default=None, help="HF encoder path or cached name (default: bundled MiniLM)")
    p.add_argument(
        "--text-adapter",
        type=Path,
        default=None,
        help="fine-tuned text encoder (adapter.pt from text-tune); its fold adapters give the training split's vectors",
    )
    p.add_argument(
        "--text-context-turns",
        type=int,
        default=0,
        help="the (frozen) text encoder reads each line with this many past turns",
    )
    p.add_argument(
        "--in-sample-text",
        action="store_true",
        help="with --text-adapter: training-split vectors from the full adapter too, not out of fold",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel openSMILE workers")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/features"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--whole-clips",
        action="store_true",
        help="features of whole clips with their silences, not the segmenter's cut the live tracker analyses",
    )
    p.add_argument("--whisper-window-s", type=float, default=15.0, help="Whisper encode policy: minimum window")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training", description="Offline training and evaluation")
    sub = ap.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("extract", help="extract and cache features of a dataset's splits")
    _common(ex)
    ex.add_argument("--splits", nargs="+", default=None)
    ex.add_argument("--frames", action="store_true")
    ex.add_argument("--tokens", action="store_true")
    ex.add_argument("--whisper", action="store_true", help="pooled Whisper encoder states too")
    ex.add_argument("--no-opensmile", action="store_true", help="skip the openSMILE functionals")

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
    tr.add_argument(
        "--class-weight-power",
        type=float,
        default=0.0,
        help="weigh each class's cross-entropy by (n / (classes * n_class)) ** POWER: 0 plain (default), "
        "1 every class alike (a neutral-heavy label prior then stops deciding for balanced voices)",
    )
    tr.add_argument("--audio-features", type=int, default=512, help="openSMILE features kept by the SVM selector")
    tr.add_argument("--device", default="auto")
    tr.add_argument(
        "--audio-kind",
        default="opensmile",
        choices=("opensmile", "whisper", "both"),
        help="the audio vector's features",
    )
    tr.add_argument(
        "--speaker-norm",
        default="none",
        choices=("none", "speaker", "session", "mixed"),
        help="causal per-speaker normalisation of the audio vector (mixed: per speaker or per session)",
    )
    tr.add_argument("--skip-test", action="store_true", help="train and validate only (score the test split later)")
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted runs from their last finished epoch (each run keeps RUNS_DIR/NAME-sSEED/"
        "resume.pt while it trains) and skip seeds whose run with the same settings already finished",
    )
    tr.add_argument("--norm-prior-weight", type=float, default=4.0, help="utterances' worth of trust in the prior")
    tr.add_argument(
        "--nuisance-dims",
        type=int,
        default=0,
        help="remove this many directions of the words-only voices' within-speaker variation (what is said, "
        "not how) from the audio vector before speaker normalisation (0: none; needs --dataset mixed)",
    )

    ev = sub.add_parser("evaluate", help="score a checkpoint on a dataset split")
    _common(ev)
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--output", type=Path, default=None, help="write the metrics JSON here")
    ev.add_argument("--hide", choices=("audio", "text"), default=None, help="withhold one modality")

    ar = sub.add_parser(
        "arbiter", help="fit a bimodal checkpoint's channel arbiter on its validation split (scored on test)"
    )
    _common(ar)
    ar.add_argument("checkpoint", type=Path)
    ar.add_argument(
        "--out", type=Path, default=None, help="write the checkpoint with its arbiter here (default: in place)"
    )
    ar.add_argument("--skip-test", action="store_true", help="fit and report validation only")

    pr = sub.add_parser(
        "prior", help="fit a checkpoint's session-prior correction on its validation split (scored on test)"
    )
    _common(pr)
    pr.add_argument("checkpoint", type=Path)
    pr.add_argument("--out", type=Path, default=None, help="write the checkpoint with it here (default: in place)")
    pr.add_argument("--weights", nargs="+", type=float, default=None, metavar="N", help="utterances of trust to try")
    pr.add_argument("--skip-test", action="store_true", help="fit and report validation only")

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

    lv = sub.add_parser("lvo", help="leave-voices-out end-to-end evaluation on rendered held-out conversations")
    lv.add_argument("--out", type=Path, required=True, help="folder for the rendered recordings and results")
    lv.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled model)")
    lv.add_argument("--sets", nargs="+", default=None, help="which sets (default: all)")
    lv.add_argument("--dialogues", type=int, default=8, help="recordings per set")
    lv.add_argument("--asr-model", default="tiny.en")
    lv.add_argument("--data-root", default=None)

    from training import text_cli

    text_cli.add_parser(sub)
    text_cli.add_asr_parser(sub)

    from training.speakers import add_parser as add_speakers_parser

    add_speakers_parser(sub)

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
        whisper=getattr(args, "whisper", False),
        audio=not getattr(args, "no_opensmile", False),
        live_cut=not args.whole_clips,
        whisper_min_window_s=args.whisper_window_s,
        text_adapter=args.text_adapter,
        text_out_of_fold=not args.in_sample_text,
        text_context_turns=args.text_context_turns,
    )


def cmd_extract(args) -> int:
    from training.data import dataset_splits, load_dataset
    from training.extract import extract_split

    options = _dataset_options(args)
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
    from training.experiment import RunConfig, finished_metrics, run

    model_options = _model_options(args)
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
            dataset_options=_dataset_options(args),
            model_options=model_options,
            context=ContextConfig(args.context, args.window),
            recipe=recipe,
            train=TrainConfig(
                **train_settings,
                seed=seed,
                device=args.device,
                audio_dropout=args.audio_dropout,
                text_dropout=args.text_dropout,
                class_weight_power=args.class_weight_power,
            ),
            extract=_extract_config(args),
            audio_features=args.audio_features,
            audio_kind=args.audio_kind,
            speaker_norm=args.speaker_norm,
            norm_prior_weight=args.norm_prior_weight,
            nuisance_dims=args.nuisance_dims,
            runs_dir=args.runs_dir,
            splits=_roles_without_test(args.dataset) if args.skip_test else None,
        )
        m = finished_metrics(cfg) if args.resume else None
        if m is not None:
            log.info("%s finished earlier with the same settings: kept", cfg.name)
        else:
            m = run(cfg, resume=args.resume)
        v = m["validation"]
        rows.append(m)
        print(
            f"{cfg.name}: validation weighted F1 {v['weighted_f1']:.4f} acc {v['accuracy']:.4f} "
            f"(epoch {m['best_epoch']}, {m['seconds']} s) -> {args.runs_dir / cfg.name}"
        )
    return 0


def _roles_without_test(dataset: str) -> tuple[str | None, str | None, None]:
    from training.experiment import SPLIT_ROLES

    train, val, _ = SPLIT_ROLES.get(dataset, ("train", "validation", "test"))
    return train, val, None


def cmd_evaluate(args) -> int:
    from training.evaluate import evaluate_checkpoint

    if not args.checkpoint.is_file():
        raise ValueError(f"no checkpoint at {args.checkpoint}; check the CHECKPOINT path given to evaluate")

    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.dataset,
        args.split,
        args.data_root,
        _dataset_options(args),
        _extract_config(args),
        hide=args.hide,
    )
    print(
        f"{args.checkpoint} on {args.dataset}/{args.split}: weighted F1 {metrics['weighted_f1']:.4f} "
        f"accuracy {metrics['accuracy']:.4f} macro F1 {metrics['macro_f1']:.4f} ECE {metrics['ece']:.4f}"
    )
    for name, m in metrics.get("by_part", {}).items():
        print(f"  {name} ({m['n']}): weighted F1 {m['weighted_f1']:.4f} macro F1 {m['macro_f1']:.4f}")
    if args.output:
        args.output.write_text(json.dumps(metrics, indent=2))
    return 0


def _fit_on_validation(args, command: str, check=None):
    """The checkpoint of a fit-after-training command, its validation dialogues and its test ones (or None);
    ``check(ck)`` runs before the minutes of feature extraction."""
    import models
    from training.evaluate import checkpoint_dialogues
    from training.experiment import SPLIT_ROLES

    if not args.checkpoint.is_file():
        raise ValueError(f"no checkpoint at {args.checkpoint}; check the CHECKPOINT path given to {command}")
    ck = models.load(args.checkpoint, device="cpu")
    if check is not None:
        check(ck)
    _, val_split, test_split = SPLIT_ROLES.get(args.dataset, ("train", "validation", "test"))

    def load(split: str) -> list:
        options, extract = _dataset_options(args), _extract_config(args)
        return checkpoint_dialogues(ck, args.dataset, split, args.data_root, options, extract)

    test = None if args.skip_test or test_split is None else load(test_split)
    return ck, load(val_split), test


def cmd_arbiter(args) -> int:
    from training.arbiter import run


    def no_prior(ck) -> None:  # evaluate and the live classifier would then disagree on the order
        if ck.prior_shift is not None:
            raise ValueError(f"{args.checkpoint} has a session prior: fit the arbiter on one without it")

    ck, val, test = _fit_on_validation(args, "arbiter", no_prior)
    print(run(ck, args.out or args.checkpoint, val, test))
    return 0


def cmd_prior(args) -> int:
    from training.prior_fit import WEIGHTS, run

    if args.weights is not None and not all(w > 0 for w in args.weights):
        raise ValueError(f"--weights must be positive numbers of utterances, got {args.weights}")

    def no_arbiter(ck) -> None:
        if ck.arbiter is not None:
            raise ValueError(f"{args.checkpoint} has a channel arbiter: fit the session prior on one without it")

    ck, val, test = _fit_on_validation(args, "prior", no_arbiter)
    mixed = args.dataset == "mixed"
    print(run(ck, args.out or args.checkpoint, val, test, mixed, tuple(args.weights or WEIGHTS)))
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

    split = load_dataset(args.dataset, args.split, args.data_root, **_dataset_options(args))
    paths = write_recordings(split, args.out, args.limit)
    print(f"wrote {len(paths)} recordings with ground truth to {args.out}")
    return 0


def cmd_lvo(args) -> int:
    from training.lvo import LVO_SETS, evaluate_sets, table

    if args.dialogues < 1:
        raise ValueError(f"--dialogues must be at least 1, got {args.dialogues}")
    results = evaluate_sets(
        args.out, args.model, args.sets or list(LVO_SETS), args.dialogues, args.asr_model, args.data_root
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.model.parent.name if args.model is not None else "bundled"
    path = args.out / f"results-{name}.json"
    # scoring some sets again keeps the model's other sets' results
    merged = {**(json.loads(path.read_text()) if path.is_file() else {}), **results}
    path.write_text(json.dumps(merged, indent=2))
    print(table(results))
    return 0


def cmd_speakers(args) -> int:
    from training.speakers import run

    print(run(args))
    return 0


def cmd_compare(args) -> int:
    print(compare_table(args.runs, args.split))
    return 0



COMMANDS = {
    "extract": cmd_extract,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "e2e": cmd_e2e,
    "make-recordings": cmd_make_recordings,
    "compare": cmd_compare,
    "lvo": cmd_lvo,
    "arbiter": cmd_arbiter,
    "prior": cmd_prior,
    "text-tune": lambda args: __import__("training.text_cli", fromlist=["run"]).run(args),
    "asr-text": lambda args: __import__("training.text_cli", fromlist=["run_asr"]).run_asr(args),

    "speakers": cmd_speakers,
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
        print(f"error: {_as_typed(str(exc))}", file=sys.stderr)
        return 2
