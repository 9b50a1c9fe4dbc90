"""The training loop: mini-batches of dialogues, modality dropout, early stopping
on validation loss, optional DistributedDataParallel (``torchrun``), and a state saved
after every epoch so that an interrupted run continues where it stopped (:class:`Resume`).

Data arrive as :class:`FeatureDialogue` lists (per-utterance feature dicts as
:func:`models.batch.collate` takes them, plus label indices), so the loop knows
nothing about corpora or extractors.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models.base import EmotionModel, resolve_device
from models.batch import Batch, collate
from training.losses import IGNORE, compute_loss

log = logging.getLogger(__name__)


@dataclass
class FeatureDialogue:
    dialogue_id: str
    utterances: list[dict]
    labels: list[int]  # IGNORE (-100) where an utterance has no label


@dataclass(frozen=True)
class TrainConfig:
    """Defaults from the HBAF paper: Adam 1e-4, L2 3e-4, 32 dialogues a batch, patience 15."""

    max_epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 3e-4
    patience: int = 15
    seed: int = 0
    device: str = "auto"
    #: Probability of hiding one modality of an utterance at training time.
    audio_dropout: float = 0.0
    text_dropout: float = 0.0
    grad_clip: float = 5.0
    #: Cross-entropy class weights (n / (C * n_c)) ** power from the training labels: 0 is plain
    #: cross-entropy (the papers'); 1 weighs every class equally, so a label prior learned from
    #: neutral-heavy dialogue data does not decide for voices whose emotions are balanced.
    class_weight_power: float = 0.0

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be at least 1")
        if not (0 <= self.audio_dropout < 1 and 0 <= self.text_dropout < 1):
            raise ValueError("modality dropout probabilities must lie in [0, 1)")
        if self.audio_dropout + self.text_dropout >= 1:
            raise ValueError("audio_dropout + text_dropout must stay below 1 (one modality must remain)")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive and weight_decay non-negative")
        if not 0 <= self.class_weight_power <= 1:
            raise ValueError(f"--class-weight-power must lie in [0, 1], got {self.class_weight_power}")


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    #: Seconds the loop spent before this process (a resumed run's earlier parts).
    seconds_before: float = 0.0


#: The file, in a run's folder, that holds its training state until the run is written.
RESUME_FILE = "resume.pt"


@dataclass(frozen=True)
class Resume:
    """Where the loop saves its whole state after every epoch, and whether to continue from it.

    CPU runs under a paper's recipe take hours; a killed process then loses only the epoch in
    progress. The state holds the weights, Adam's moments, the best epoch's weights, the history
    and every random generator the loop draws from, so a resumed run takes exactly the steps the
    uninterrupted one would have taken (on one process; under ``torchrun`` every rank continues
    with rank 0's modality-dropout generator). ``fingerprint`` names the run's configuration: a state
    written under another refuses to load rather than mixing two runs.
    """

    path: Path
    fingerprint: str
    load: bool = False


def make_batch(dialogues: list[FeatureDialogue]) -> tuple[Batch, torch.Tensor]:
    batch = collate([d.utterances for d in dialogues])
    labels = torch.full(batch.mask.shape, IGNORE, dtype=torch.long)
    for i, d in enumerate(dialogues):
        labels[i, : len(d.labels)] = torch.as_tensor(d.labels, dtype=torch.long)
    return batch, labels


def modality_dropout(batch: Batch, p_audio: float, p_text: float, gen: torch.Generator) -> Batch:
    """Hide audio or text (never both) of random utterances: present flag False, features zeroed.

    The model then learns to classify from whichever modality is left, which the
    live tracker needs when the words are neutral or the voice is unlike training.
    """
    if p_audio == 0 and p_text == 0:
        return batch
    u = torch.rand(batch.mask.shape, generator=gen)
    drop_audio = u < p_audio
    drop_text = (u >= p_audio) & (u < p_audio + p_text)
    values = {}
    for name, drop in (("audio", drop_audio), ("text", drop_text)):
        x = getattr(batch, name)
        present = getattr(batch, f"{name}_present")
        keep = ~drop if present is None else present & ~drop
        values[f"{name}_present"] = keep
        if x is not None:
            values[name] = x * keep[..., None].to(x.dtype)
    return Batch(**{**batch.__dict__, **values})


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def class_weights(data: list[FeatureDialogue], num_classes: int, power: float) -> torch.Tensor | None:
    """Cross-entropy weights ``(n / (C * n_c)) ** power`` from the labels of ``data`` (None at power 0).

    A class absent from ``data`` gets the largest weight of the present ones: it cannot
    contribute to the training loss, and a validation utterance of it should not be free.
    """
    if power == 0:
        return None
    counts = np.zeros(num_classes)
    for d in data:
        for y in d.labels:
            if 0 <= y < num_classes:
                counts[y] += 1
    if not counts.any():
        return None
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = (counts.sum() / (present.sum() * counts[present])) ** power
    w[~present] = w[present].max()
    return torch.tensor(w, dtype=torch.float32)


def evaluate_loss(
    model: EmotionModel, data: list[FeatureDialogue], batch_size: int, device, class_weight: torch.Tensor | None = None
) -> tuple[float, int]:
    """Mean validation loss per labelled utterance (summed over ranks under DDP) and the count."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch, labels = make_batch(data[i : i + batch_size])
            batch, labels = batch.to(device), labels.to(device)
            n = int((labels != IGNORE).sum())
            if n:
                total += float(compute_loss(model, model(batch), labels, batch, class_weight)["total"]) * n
                count += n
    if dist.is_initialized():
        t = torch.tensor([total, count], dtype=torch.float64)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return (total / count if count else math.inf), count


#: Training batches whose statistics BatchNorm's running estimates are recomputed from after each epoch.
RECALIBRATION_BATCHES = 64


def recalibrate_batchnorm(model: EmotionModel, data: list[FeatureDialogue], batch_size: int, device) -> bool:
    """Recompute every BatchNorm's running statistics with the epoch's final weights ("precise BN").

    During an epoch the running estimates average statistics of weights that keep changing; MCFN's
    speech encoder drifted so far from them that its validation loss in eval mode jumped from 4 to
    30 (and to thousands later) while the same weights with batch statistics kept improving
    (``experiments/mcfn_loss_parts.py``, docs/results.md), so early stopping kept the first epoch.
    Here the estimates are reset and averaged (cumulatively, no momentum) over up to
    :data:`RECALIBRATION_BATCHES` training batches in order, without gradients. Models without
    BatchNorm are untouched (returns False).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or not data:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for k in range(min(RECALIBRATION_BATCHES, math.ceil(len(data) / batch_size))):
            batch, _ = make_batch(data[k * batch_size : (k + 1) * batch_size])
            model(batch.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return True


def predict(model: EmotionModel, data: list[FeatureDialogue], batch_size: int = 32, device="cpu"):
    """Logits (N, C) and labels (N,) of every labelled utterance, in data order."""
    model.eval()
    logits, ys = [], []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch, labels = make_batch(data[i : i + batch_size])
            out = model(batch.to(device)).logits.cpu()
            keep = labels != IGNORE
            logits.append(out[keep].float().numpy())
            ys.append(labels[keep].numpy())
    if not logits:
        return np.zeros((0, model.num_classes), np.float32), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(ys)


def save_state(resume: Resume, state: dict) -> None:
    """Write a loop's state (tensors and plain types only) in place of the previous one, atomically."""
    tmp = resume.path.with_name(resume.path.name + ".tmp")
    resume.path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    os.replace(tmp, resume.path)  # a kill while writing leaves the previous epoch's state whole


def load_state(resume: Resume, device: torch.device | str) -> dict | None:
    """The saved state to continue from (None: start over), or a ValueError naming what to do."""
    if not resume.load:
        if resume.path.is_file():
            log.warning("%s holds an unfinished run: starting over (--resume continues it)", resume.path)
        return None
    if not resume.path.is_file():
        log.info("no saved state at %s: starting from the first epoch", resume.path)
        return None
    try:
        state = torch.load(resume.path, map_location=device, weights_only=True)
    except Exception as exc:  # torch's own message runs to paragraphs (and suggests weights_only=False)
        log.debug("unreadable training state %s: %s", resume.path, exc)
        raise ValueError(f"{resume.path} is not a readable training state; delete it to start over") from None
    if state.get("fingerprint") != resume.fingerprint:
        raise ValueError(
            f"{resume.path} was saved by a run with other settings; train with the same flags to continue it, "
            "or delete it (or drop --resume) to start over"
        )
    log.info("resuming from %s after epoch %d", resume.path, state["epoch"])
    return state


def train(
    model: EmotionModel,
    train_set: list[FeatureDialogue],
    val_set: list[FeatureDialogue],
    cfg: TrainConfig,
    resume: Resume | None = None,
) -> TrainResult:
    """Train in place; on return ``model`` holds the weights of the best validation epoch.

    With ``resume``, the loop's state is saved after every epoch and, with ``resume.load``,
    continued from (see :class:`Resume`)."""
    if not train_set or not val_set:
        raise ValueError("training needs at least one training and one validation dialogue")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")  # one GPU per rank
        torch.cuda.set_device(device)
    init_distributed(device)
    rank, world = _distributed()
    torch.manual_seed(cfg.seed)
    model.to(device)
    net = model
    if world > 1:
        net = DistributedDataParallel(model, find_unused_parameters=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    order_rng = np.random.default_rng(cfg.seed)
    shard_val = val_set[rank::world]
    best = TrainResult(best_epoch=-1, best_val_loss=math.inf)
    weight = class_weights(train_set, model.num_classes, cfg.class_weight_power)
    if weight is not None:
        log.info("class weights %s", [round(float(x), 3) for x in weight])
        weight = weight.to(device)
    best_state = copy.deepcopy(model.state_dict())
    start, done, t0 = 0, False, time.time()
    state = load_state(resume, device) if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best_state = state["best_model"]
        best = TrainResult(state["best_epoch"], state["best_val_loss"], list(state["history"]), state["seconds"])
        torch.set_rng_state(state["torch_rng"].cpu())
        gen.set_state(state["gen_rng"].cpu())
        order_rng.bit_generator.state = state["order_rng"]
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        start, done = state["epoch"] + 1, state["done"]
    for epoch in range(start, cfg.max_epochs):
        if done:
            break
        model.train()
        order = order_rng.permutation(len(train_set))  # same on every rank, then sharded
        mine = order[rank::world]
        steps = max(1, math.ceil(len(order) / world / cfg.batch_size))
        running, seen = 0.0, 0
        for step in range(steps):
            idx = mine[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if len(idx) == 0:  # uneven shards: every rank must still take part in each step
                idx = mine[:1] if len(mine) else order[:1]
            batch, labels = make_batch([train_set[i] for i in idx])
            batch = modality_dropout(batch, cfg.audio_dropout, cfg.text_dropout, gen).to(device)
            labels = labels.to(device)
            loss = compute_loss(model, net(batch), labels, batch, weight)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        recalibrate_batchnorm(model, train_set, cfg.batch_size, device)
        val_loss, _ = evaluate_loss(model, shard_val, cfg.batch_size, device, weight)
        best.history.append({"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val_loss})
        if rank == 0:
            log.info("epoch %d train %.4f val %.4f", epoch, running / max(seen, 1), val_loss)
        if val_loss < best.best_val_loss - 1e-6:
            best.best_val_loss, best.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best.best_epoch >= cfg.patience:
            done = True
        if resume is not None and rank == 0:
            save_state(
                resume,
                {
                    "fingerprint": resume.fingerprint,
                    "epoch": epoch,
                    "done": done or epoch == cfg.max_epochs - 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "best_model": best_state,
                    "best_epoch": best.best_epoch,
                    "best_val_loss": best.best_val_loss,
                    "history": best.history,
                    "seconds": best.seconds_before + time.time() - t0,
                    "torch_rng": torch.get_rng_state(),
                    "gen_rng": gen.get_state(),
                    "order_rng": order_rng.bit_generator.state,
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            )
    model.load_state_dict(best_state)
    model.eval()
    return best
