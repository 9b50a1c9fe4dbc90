"""``python -m training text-tune``: fine-tune (or, with ``--frozen``, probe) the text encoder.

Examples::

    python -m training text-tune --name minilm-ctx4 --seeds 0 1 2
    python -m training text-tune --name minilm-ctx0 --context-turns 0
    python -m training text-tune --name minilm-frozen-ctx4 --frozen
    python -m training text-tune --name minilm-ctx4-oof --folds 5   # out-of-fold adapters for the fusion
    python -m training asr-text --split validation   # tiny.en transcripts of rendered lines (first)

Scores (weighted F1) on the validation split (selection) and MELD dev (report only), each
with MELD's transcripts (clean) and with tiny.en's transcripts of the lines read by
synthetic voices (asr: validation voices for validation, held-out engines for dev), go to
``<runs-dir>/<name>-s<seed>/result.json``; the adapter (the checkpoint's delta) beside it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

from training.asr_text import ErrorRates
from training.asr_text import load as load_asr
from training.data.shared import DEFAULT_ROOT, meld_dialogues
from training.text_tune import (
    AsrNoise,
    TuneConfig,
    examples,
    fingerprint,
    recorded_config,
    save_adapter,
    tune,
    weighted_f1,
)
from training.trainer import RESUME_FILE, Resume

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    tt = sub.add_parser("text-tune", help="fine-tune the text encoder on MELD train with dialogue context")
    tt.add_argument("--name", required=True)
    tt.add_argument("--runs-dir", type=Path, default=Path("runs/text"))
    tt.add_argument("--encoder", default=None, help="base encoder (default: the bundled MiniLM)")
    tt.add_argument("--context-turns", type=int, default=4, help="past turns in the input (0: the line alone)")
    tt.add_argument("--lora-layers", type=int, default=3, help="LoRA on the top N layers")
    tt.add_argument("--lora-rank", type=int, default=16)
    tt.add_argument("--epochs", type=int, default=4)
    tt.add_argument("--lr", type=float, default=5e-4)
    tt.add_argument("--noise-p", type=float, default=0.5, help="P(a line is replaced by ASR-like text) in training")
    tt.add_argument(
        "--spoken-p",
        type=float,
        default=0.0,
        help="P(a training line is read without exclamation marks, as tiny.en writes speech)",
    )
    tt.add_argument("--class-weight-power", type=float, default=0.5, help="0: plain cross-entropy")
    tt.add_argument("--untagged-p", type=float, default=0.5, help="P(a dialogue's speakers are hidden) in training")
    tt.add_argument("--seeds", type=int, nargs="+", default=[0])
    tt.add_argument("--folds", type=int, default=0, help="also train K out-of-fold adapters (by dialogue)")
    tt.add_argument(
        "--only-folds",
        action="store_true",
        help="with --folds: keep the run's trained adapter.pt and train only the fold adapters beside it",
    )
    tt.add_argument("--frozen", action="store_true", help="no fine-tuning: logistic regression on frozen vectors")
    tt.add_argument("--max-dialogues", type=int, default=None, help="first N training dialogues (quick runs)")
    tt.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted fine-tuning from its last finished epoch (each run and fold keeps resume.pt "
        "while it trains) and keep adapters that finished with the same settings",
    )
    tt.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    tt.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")


def add_asr_parser(sub) -> None:
    at = sub.add_parser("asr-text", help="tiny.en transcripts of MELD lines read by a split's synthetic voices")
    at.add_argument("--split", required=True, choices=("train", "validation", "test"))
    at.add_argument("--dialogues", type=int, default=None, help="first N dialogues of the split (default: all)")
    at.add_argument("--engines", nargs="+", default=["espeak-ng"], help="speech engines of the voices")
    at.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)


def run_asr(args) -> int:
    from training.asr_text import collect

    pairs = collect(args.split, Path(args.data_root), args.dialogues, tuple(args.engines))
    rates = ErrorRates.measure(pairs)
    print(
        f"{args.split}: {len(pairs)} lines, {rates.words} words; WER {rates.wer:.3f} (substitutions "
        f"{rates.substitution:.3f}, deletions {rates.deletion:.3f}, insertions {rates.insertion:.3f})"
    )
    return 0


def _asr_map(split: str) -> dict[tuple[str, int], str]:
    return {(p.dialogue, p.turn): p.asr for p in load_asr(split)}


def _eval_sets(root: Path, context_turns: int) -> dict:
    _, val = meld_dialogues("validation", root)
    _, dev = meld_dialogues("test", root)  # MELD dev: reported, never selected on
    sets = {"validation": examples(val, context_turns), "dev": examples(dev, context_turns)}
    for name, split, dialogues in (("validation_asr", "validation", val), ("dev_asr", "test", dev)):
        asr = _asr_map(split)
        if asr:  # only the dialogues whose every line has a transcript
            keep = [d for d in dialogues if all((d.id, u.turn) in asr for u in d.utterances)]
            sets[name] = examples(keep, context_turns, asr, speakers=False)  # as live: no speakers yet
    return sets


def _noise(train) -> AsrNoise:
    pairs = load_asr("train")
    rates = ErrorRates.measure(pairs) if pairs else ErrorRates(0.08, 0.04, 0.02, 0)
    vocab = sorted({w.strip(".,!?\"'").lower() for d in train for u in d.utterances for w in (u.text or "").split()})
    log.info(
        "ASR noise: %d real tiny.en pairs; rates sub %.3f del %.3f ins %.3f",
        len(pairs),
        rates.substitution,
        rates.deletion,
        rates.insertion,
    )
    return AsrNoise(pairs, rates, [w for w in vocab if w])


def _frozen(args, train, sets) -> dict:
    """Logistic regression on the frozen encoder's vectors, C and class weights chosen on validation."""
    from sklearn.linear_model import LogisticRegression

    from streamer.text_encoder import TextEncoder

    pooling = "utterance_last4" if args.context_turns else "mean_last4"
    enc = TextEncoder(args.encoder, 128, "cpu", pooling=pooling)
    tr = examples(train, args.context_turns)
    X = {name: enc.embed(t, c) for name, (t, c, _) in {"train": tr, **sets}.items()}
    best = None
    for C in (0.1, 0.3, 1.0, 3.0):
        for cw in (None, "balanced"):
            clf = LogisticRegression(C=C, class_weight=cw, max_iter=2000).fit(X["train"], tr[2])
            f1 = weighted_f1(sets["validation"][2], clf.predict(X["validation"]))
            if best is None or f1 > best[0]:
                best = (f1, C, cw, clf)
    f1, C, cw, clf = best
    scores = {name: weighted_f1(y, clf.predict(X[name])) for name, (_, _, y) in sets.items()}
    return {
        "config": {
            "encoder": enc.name,
            "pooling": pooling,
            "context_turns": args.context_turns,
            "C": C,
            "class_weight": cw,
            "frozen": True,
        },
        "validation_wf1": f1,
        "scores": scores,
    }


def run(args) -> int:
    # the settings are checked before anything is read or written
    if not 0 <= args.spoken_p <= 1:
        raise ValueError(f"--spoken-p is a probability: give a number from 0 to 1, not {args.spoken_p}")
    base = TuneConfig(
        encoder=args.encoder,
        context_turns=args.context_turns,
        lora_layers=args.lora_layers,
        lora_rank=args.lora_rank,
        epochs=args.epochs,
        lr=args.lr,
        noise_p=args.noise_p,
        spoken_p=args.spoken_p,
        untagged_p=args.untagged_p,
        class_weight_power=args.class_weight_power,
    )
    from models.base import resolve_device

    try:  # an unknown device, or CUDA asked for where there is none, is said before anything is read
        resolve_device(args.device)
    except ValueError as exc:
        raise ValueError(f"--device: {exc}") from exc
    if args.only_folds:
        if args.frozen or args.folds < 2:
            raise ValueError("--only-folds trains fold adapters: give it --folds K (K >= 2) and no --frozen")
        for seed in args.seeds:
            _check_trained(base, seed, args.runs_dir / f"{args.name}-s{seed}")
    root = Path(args.data_root)
    _, train = meld_dialogues("train", root)
    train = train[: args.max_dialogues]
    _, val = meld_dialogues("validation", root)
    sets = {} if args.only_folds else _eval_sets(root, args.context_turns)
    # stateless (each run passes its own seeded rng): built once for every seed
    noise = _noise(train) if base.noise_p > 0 and not args.frozen else None
    for seed in args.seeds:
        out = args.runs_dir / f"{args.name}-s{seed}"
        if args.only_folds:
            seeded = dataclasses.replace(base, seed=seed)
            _train_folds(seeded, out, train, val, noise, args.folds, args.resume, args.device)
            continue
        out.mkdir(parents=True, exist_ok=True)
        if args.frozen:
            result = _frozen(args, train, sets)
            (out / "result.json").write_text(json.dumps(result, indent=1))
        else:
            cfg = dataclasses.replace(base, seed=seed)
            result = _finished(cfg, out) if args.resume else None
            if result is None:
                model, result = tune(cfg, train, val, noise, sets, _state(cfg, out, args.resume), args.device)
                save_adapter(model, cfg, result, out / "adapter.pt")
                (out / "result.json").write_text(json.dumps(result, indent=1))
                (out / RESUME_FILE).unlink(missing_ok=True)
            _train_folds(cfg, out, train, val, noise, args.folds, args.resume, args.device)
        log.info("%s: %s", out, json.dumps(result["scores"]))
        print(f"{out}: " + " ".join(f"{k} {v:.4f}" for k, v in result["scores"].items()))
    return 0


def _state(cfg: TuneConfig, out: Path, resume: bool) -> Resume:
    return Resume(out / RESUME_FILE, fingerprint(cfg), load=resume)


def _finished(cfg: TuneConfig, out: Path, held: set[str] | None = None) -> dict | None:
    """The result of a fine-tuning of exactly ``cfg`` (a fold: holding out ``held``) that completed in
    ``out`` with no state left behind, else None."""
    from training.text_features import read_adapter_file

    if (out / RESUME_FILE).exists() or not (out / "adapter.pt").is_file():
        return None
    try:
        result = read_adapter_file(out / "adapter.pt")["result"]
    except (ValueError, KeyError):  # unreadable or foreign: train it again
        return None
    if json.loads(json.dumps(recorded_config(cfg))) != result.get("config"):
        return None
    if held is not None and result.get("held_dialogues") != sorted(held):
        return None
    log.info("%s finished earlier with the same settings: kept", out)
    return result


def _train_folds(
    cfg: TuneConfig, out: Path, train, val, noise, k: int, resume: bool = False, device: str = "cpu"
) -> None:
    for i, held in enumerate(folds(train, k, cfg.seed)):
        keep = tuple(d.id for d in train if d.id not in held)
        fold_cfg = dataclasses.replace(cfg, only_dialogues=keep)
        fold_out = out / f"fold-{i}"
        if resume and _finished(fold_cfg, fold_out, held) is not None:
            continue
        fold_model, fold_result = tune(fold_cfg, train, val, noise, {}, _state(fold_cfg, fold_out, resume), device)
        fold_result["held_dialogues"] = sorted(held)
        save_adapter(fold_model, fold_cfg, fold_result, fold_out / "adapter.pt")
        (fold_out / RESUME_FILE).unlink(missing_ok=True)


def _check_trained(base: TuneConfig, seed: int, out: Path) -> None:
    """``--only-folds`` adds fold adapters to a trained run: the flags must repeat its recipe."""
    done = out / "result.json"
    if not (out / "adapter.pt").is_file() or not done.is_file():
        raise ValueError(f"--only-folds: {out} holds no trained adapter.pt and result.json; run without --only-folds")
    cfg = dataclasses.asdict(dataclasses.replace(base, seed=seed))
    trained = json.loads(done.read_text()).get("config", {})
    differ = sorted(f for f, v in cfg.items() if f in trained and trained[f] != v)
    if differ:
        raise ValueError(f"--only-folds: {out} was trained with other settings ({', '.join(differ)}); give its flags")


def folds(train, k: int, seed: int) -> list[set[str]]:
    """K disjoint sets of training dialogue ids (seeded), each held out by one fold adapter."""
    if k <= 1:
        return []
    ids = sorted(d.id for d in train)
    random.Random(f"text-folds:{seed}").shuffle(ids)
    return [set(ids[i::k]) for i in range(k)]


def fold_of(dialogue_id: str, held: list[set[str]]) -> int | None:
    for i, ids in enumerate(held):
        if dialogue_id in ids:
            return i
    return None
