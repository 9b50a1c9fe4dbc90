"""Fine-tune the text encoder on MELD train with the dialogue in its input (``python -m training text-tune``).

The encoder (MiniLM or mpnet) reads the current line plus its past turns
(:mod:`streamer.text_context`), LoRA adapters on its top layers learn the emotion
(:mod:`streamer.text_adapter`), and a linear head on the pooled utterance tokens gives
the 7 MELD classes. Selection is on the validation split (the seeded 10% of MELD train
dialogues that ``paired`` holds out), never on MELD dev, which is only reported.

Live transcripts are tiny.en's, not MELD's: with probability ``noise_p`` a training line
(and each context turn) is replaced by what tiny.en wrote for it read by a synthetic
voice (:mod:`training.asr_text`), or, where no such pair exists, corrupted with word
substitutions, deletions and insertions at the rates measured on those pairs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamer.text_context import Turn, dialogue_contexts
from training.asr_text import AsrPair, ErrorRates, spoken_punctuation
from training.data.records import MELD_LABELS, Dialogue
from training.trainer import Resume, load_state, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneConfig:
    encoder: str | None = None  # None: the bundled MiniLM
    context_turns: int = 4
    lora_layers: int = 3  # the top n layers get LoRA
    lora_rank: int = 16
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-4
    head_dropout: float = 0.1
    noise_p: float = 0.5
    #: P(a training turn is read with the punctuation tiny.en writes for speech: no "!"); live
    #: transcripts seldom have one, so "no !" must not read as "calm" (asr_text.spoken_punctuation).
    spoken_p: float = 0.0
    #: Loss weight of a class: (share of the majority / share of the class) ** power (0: plain CE,
    #: which weighted F1, MELD's metric, favours).
    class_weight_power: float = 0.5
    #: P(a dialogue's speakers are hidden): live input has no speakers until they are tracked.
    untagged_p: float = 0.5
    max_tokens: int = 128
    seed: int = 0
    #: Train on these MELD train dialogue ids only (k-fold runs); None: every training dialogue.
    only_dialogues: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lora_layers < 1 or self.lora_rank < 1:
            raise ValueError("epochs, batch_size, lora_layers and lora_rank must be >= 1")
        if not 0 <= self.noise_p <= 1:
            raise ValueError(f"noise_p must be in [0, 1], got {self.noise_p}")
        if not 0 <= self.spoken_p <= 1:
            raise ValueError(f"spoken_p must be in [0, 1], got {self.spoken_p}")
        if not 0 <= self.context_turns <= 16:
            raise ValueError(f"context_turns must be 0..16, got {self.context_turns}")


class AsrNoise:
    """Turns a MELD line into something tiny.en could have written for it."""

    def __init__(self, pairs: list[AsrPair], rates: ErrorRates, vocabulary: list[str]) -> None:
        self.by_text: dict[str, list[str]] = {}
        for p in pairs:
            self.by_text.setdefault(p.text, []).append(p.asr)
        self.rates = rates
        self.vocabulary = vocabulary or ["uh"]

    def __call__(self, text: str, rng: random.Random) -> str:
        if text in self.by_text:
            return rng.choice(self.by_text[text])
        out = []
        for w in text.split():
            r = rng.random()
            if r < self.rates.deletion:
                continue
            out.append(rng.choice(self.vocabulary) if r < self.rates.deletion + self.rates.substitution else w)
            if rng.random() < self.rates.insertion:
                out.append(rng.choice(self.vocabulary))
        return " ".join(out)


def dialogue_turns(d: Dialogue, asr: dict[tuple[str, int], str] | None = None, speakers: bool = True) -> list[Turn]:
    """A dialogue's turns (MELD text, or tiny.en's transcript where ``asr`` has one)."""
    return [Turn(u.speaker if speakers else None, (asr or {}).get((d.id, u.turn), u.text or "")) for u in d.utterances]


def examples(
    dialogues: list[Dialogue], context_turns: int, asr=None, speakers: bool = True
) -> tuple[list[str], list, np.ndarray]:
    """(lines, their contexts, labels) of every labelled utterance, each context from its past.
    ``asr``: tiny.en's transcripts by (dialogue, turn); ``speakers=False``: untagged, as live mono."""
    return labelled([(d, dialogue_turns(d, asr, speakers)) for d in dialogues], context_turns)


def labelled(dialogues: list[tuple[Dialogue, list[Turn]]], context_turns: int) -> tuple[list[str], list, np.ndarray]:
    """(lines, contexts, labels) of the labelled utterances of dialogues given with the turns to read."""
    texts, contexts, labels = [], [], []
    for d, turns in dialogues:
        for u, t, c in zip(d.utterances, turns, dialogue_contexts(turns, context_turns)):
            if u.label in MELD_LABELS:
                texts.append(t.text)
                contexts.append(c)
                labels.append(MELD_LABELS.index(u.label))
    return texts, contexts, np.asarray(labels, np.int64)


class Tuner(nn.Module):
    """The encoder with LoRA and a linear head over the pooled utterance tokens."""

    def __init__(self, cfg: TuneConfig, device: str = "cpu") -> None:
        super().__init__()
        from streamer.text_adapter import attach_lora, base_fingerprint, family_of, lora_config
        from streamer.text_encoder import TextEncoder

        self.encoder = TextEncoder(cfg.encoder, cfg.max_tokens, device, pooling="utterance_last", runtime="torch")
        base = self.encoder.model
        self.fingerprint = base_fingerprint(base)
        n = base.config.num_hidden_layers
        self.lora = lora_config(family_of(base), list(range(n - cfg.lora_layers, n)), r=cfg.lora_rank)
        self.backbone = attach_lora(base, self.lora)  # a submodule, so its LoRA weights train and save
        self.encoder.model = self.backbone
        self.head = nn.Sequential(nn.Dropout(cfg.head_dropout), nn.Linear(self.encoder.dim, len(MELD_LABELS)))
        self.head.to(self.encoder.device)

    def forward(self, texts: list[str], contexts: list) -> torch.Tensor:
        """n lines -> (n, 7) logits."""
        batch, mask = self.encoder.tokenize(texts, contexts)
        return self.head(self.encoder.pooled(batch.to(self.encoder.device), mask))

    def adapter(self):
        from streamer.text_adapter import extract_adapter

        return extract_adapter(self.encoder.model, self.lora, self.fingerprint)


def weighted_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="weighted", labels=list(range(len(MELD_LABELS))), zero_division=0))


@torch.no_grad()
def predict(model: Tuner, texts: list[str], contexts: list, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = np.zeros((len(texts), len(MELD_LABELS)), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(contexts[i] or ""))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        out[idx] = model([texts[i] for i in idx], [contexts[i] for i in idx]).float().cpu().numpy()
    return out


def _noised_examples(dialogues, cfg: TuneConfig, noise: AsrNoise | None, rng: random.Random):
    """One epoch's examples: a dialogue's speakers hidden with ``untagged_p``, each turn
    ASR-noised with ``noise_p`` and read with spoken punctuation with ``spoken_p`` (a turn is
    one string, as a live transcript is: the line and the later contexts it enters agree)."""

    def heard(text: str) -> str:
        if noise is not None and rng.random() < cfg.noise_p:
            text = noise(text, rng)
        if cfg.spoken_p and rng.random() < cfg.spoken_p:  # no draw at 0: older runs replay as they were
            text = spoken_punctuation(text)
        return text

    out = []
    for d in dialogues:
        hide = rng.random() < cfg.untagged_p
        out.append((d, [Turn(None if hide else t.speaker, heard(t.text)) for t in dialogue_turns(d)]))
    return labelled(out, cfg.context_turns)


def length_buckets(texts: list[str], contexts: list, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length inputs (less padding: each batch costs its longest
    input), drawn from shuffled pools of 50 batches so every epoch mixes differently."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    pool = 50 * batch_size
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: len(texts[i]) + len(contexts[i] or ""))
        batches += [chunk[s : s + batch_size] for s in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def wait_while_quiet() -> None:
    """Pause while another job on a shared machine takes timings: only when
    ``$SER_LIVE_PAUSE_FILE`` names a file and that file exists (benchmarks on a busy
    2-core box: ``touch`` it, measure, ``rm`` it). Unset, training never waits."""
    flag = os.environ.get("SER_LIVE_PAUSE_FILE")
    while flag and Path(flag).exists():
        time.sleep(2)


#: Settings added after runs were recorded, at the value those runs had: left out of the record
#: there, so a finished or interrupted run of an older recipe is still recognised by ``--resume``.
_ADDED_LATER = {"spoken_p": 0.0}


def _settings(cfg: TuneConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}


def recorded_config(cfg: TuneConfig) -> dict:
    """The settings a result and its adapter file record (fold ids aside: a fold records its held dialogues)."""
    return {k: v for k, v in _settings(cfg).items() if k != "only_dialogues"}


def fingerprint(cfg: TuneConfig) -> str:
    """The settings a saved fine-tuning state must have been made with (fold ids included)."""
    return json.dumps(_settings(cfg), sort_keys=True, default=str)


def tune(
    cfg: TuneConfig,
    train: list[Dialogue],
    validation: list[Dialogue],
    noise: AsrNoise | None,
    evals: dict[str, tuple[list[str], list, np.ndarray]],
    resume: Resume | None = None,
    device: str = "cpu",
) -> tuple[Tuner, dict]:
    """Fine-tune; keep the epoch with the best clean-validation weighted F1; score ``evals`` with it.

    With ``resume`` the state (LoRA and head weights, AdamW's moments, the schedule, the random
    generators, the best epoch so far) is saved after every epoch and, with ``resume.load``,
    continued from, to the same adapter as an uninterrupted run: an epoch of mpnet is ~25 min here.
    ``device`` (``auto``: CUDA when present) is where it trains: about 100 times faster on a GPU
    (docs/benchmarks.md); a run resumed on the other kind of device goes on from the same state,
    though dropout then draws other numbers than an uninterrupted run would."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(f"text-tune:{cfg.seed}")
    if cfg.only_dialogues is not None:
        keep = set(cfg.only_dialogues)
        train = [d for d in train if d.id in keep]
    model = Tuner(cfg, device)
    dev = model.encoder.device
    counts = np.bincount(examples(train, 0)[2], minlength=len(MELD_LABELS)).astype(np.float64)
    weights = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** cfg.class_weight_power, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=(weights / weights.mean()).to(dev))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    n_batches = cfg.epochs * -(-sum(len(d.utterances) for d in train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=n_batches + 1, pct_start=0.1)
    val = examples(validation, cfg.context_turns)
    best, best_state, history, start = -1.0, None, [], 0
    state = load_state(resume, "cpu") if resume is not None else None
    if state is not None:
        model.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        best, best_state, history = state["best"], state["best_state"], list(state["history"])
        start = state["epoch"] + 1
    for epoch in range(start, cfg.epochs):
        texts, contexts, labels = _noised_examples(train, cfg, noise, rng)
        batches = length_buckets(texts, contexts, cfg.batch_size, rng)
        model.train()
        total, seen, t0 = 0.0, 0, time.time()
        for b, idx in enumerate(batches):
            wait_while_quiet()
            logits = model([texts[i] for i in idx], [contexts[i] for i in idx])
            loss = loss_fn(logits, torch.from_numpy(labels[idx]).to(dev))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            if b % 50 == 49:
                log.info("epoch %d: %d/%d lines, %.0f s", epoch + 1, seen, len(texts), time.time() - t0)
        f1 = weighted_f1(val[2], predict(model, val[0], val[1]).argmax(1))
        history.append({"epoch": epoch + 1, "loss": total / seen, "val_wf1": f1, "s": round(time.time() - t0)})
        log.info("epoch %d loss %.4f val wF1 %.4f (%.0f s)", epoch + 1, total / seen, f1, time.time() - t0)
        if f1 > best:
            best = f1
            best_state = _trainable(model)
        if resume is not None:
            save_state(
                resume,
                {
                    "fingerprint": resume.fingerprint,
                    "epoch": epoch,
                    "trainable": _trainable(model),
                    "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(),
                    "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state(),
                    "best": best,
                    "best_state": best_state,
                    "history": history,
                },
            )
    model.load_state_dict(best_state, strict=False)
    scores = {name: weighted_f1(y, predict(model, t, c).argmax(1)) for name, (t, c, y) in evals.items()}
    result = {"config": recorded_config(cfg), "history": history}
    result["validation_wf1"] = best
    result["scores"] = scores
    return model, result


def _trainable(model: Tuner) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k or "head" in k}


def save_adapter(model: Tuner, cfg: TuneConfig, result: dict, path: Path) -> Path:
    """The adapter file ``--text-adapter`` takes: the delta, how to read it, and its scores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "ser-live/text-adapter",
        "encoder": model.encoder.name,
        "pooling": model.encoder.pooling,
        "max_tokens": cfg.max_tokens,
        "context_turns": cfg.context_turns,
        "adapter": model.adapter().to_dict(),
        "result": json.loads(json.dumps(result)),
    }
    torch.save(payload, path)
    return path
