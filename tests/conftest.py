"""Shared test helpers: one tiny config per model, random dialogues, labels and by-hand references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import models
from models import ContextConfig
from models.batch import collate

# One tiny config per registered model: every model test builds from here (dropout off, so outputs are exact).
TINY = {
    "hbaf": dict(
        audio_dim=10,
        text_dim=8,
        d_model=16,
        conv_filters=4,
        lstm_hidden=8,
        transformer_heads=2,
        transformer_ff=16,
        gru_hidden=12,
        ffn_dim=16,
        max_speakers=4,
        dropout=0.0,
        speaker_state=True,
    ),
    "bclstm": dict(audio_dim=10, text_dim=8, hidden=6, fusion_hidden=5, dropout=0.0),
    "text": dict(input_dim=8, hidden=6, dropout=0.0),
    "audio": dict(input_dim=10, hidden=6, dropout=0.0),
    "bcaf": dict(
        audio_dim=10, text_dim=8, d_model=16, latent_dim=16, heads=2, ffn_dim=24, attention_layers=2, dropout=0.0
    ),
    "gca": dict(
        audio_dim=10,
        text_dim=8,
        frame_dim=6,
        token_dim=8,
        d_model=16,
        heads=2,
        ffn_dim=24,
        layers=2,
        shared_dim=6,
        dropout=0.0,
    ),
    "mcfn": dict(
        frame_dim=6,
        token_dim=8,
        num_classes=3,
        conv_channels=(8, 6),
        conv_dilations=(1, 2),
        text_width=8,
        dual_qk_dim=4,
        coattention_heads=2,
        coattention_hidden=8,
        dropout=0.0,
    ),
}
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def tiny(name, mode="online", window=3, seed=0, **extra):
    """Model ``name`` at its tiny config with ``extra`` overrides, in eval mode, weights from ``seed``."""
    torch.manual_seed(seed)
    return models.build(name, context=ContextConfig(mode, window), **{**TINY[name], **extra}).eval()


def frames_and_tokens(g, frames, tokens, frame_dim=6, token_dim=8):
    """One utterance's frame-level audio (frames, frame_dim) and token-level text (tokens, token_dim)."""
    return {
        "frames": torch.randn(frames, frame_dim, generator=g),
        "tokens": torch.randn(tokens, token_dim, generator=g),
    }


def make_dialogues(
    lengths, audio_dim=10, text_dim=8, speakers=2, seed=0, present=False, sequences=False, frame_dim=6, token_dim=8
):
    """Random dialogues of ``lengths`` utterances; ``sequences`` adds variable-length ``frames`` and ``tokens``.

    The frames and tokens come from their own generator, so ``audio``/``text`` are the same with or without them.
    """
    g = torch.Generator().manual_seed(seed)
    gs = torch.Generator().manual_seed(10_000 + seed)
    out = []
    for i, n in enumerate(lengths):
        d = []
        for t in range(n):
            u = {
                "audio": torch.randn(audio_dim, generator=g),
                "text": torch.randn(text_dim, generator=g),
                "speaker": t % speakers,
            }
            if present:
                u["audio_present"] = bool(t % 3 != 1)
                u["text_present"] = bool(t % 4 != 2)
            if sequences:  # utterances differ in frame and token counts, within and across dialogues
                u.update(frames_and_tokens(gs, 2 + (3 * t + i) % 8, 1 + (t + 2 * i) % 5, frame_dim, token_dim))
            d.append(u)
        out.append(d)
    return out


def labels_for(batch, classes=7, seed=1, unlabelled=False):
    """Random labels at valid utterances, -100 at padding (and at turn (0, 0) when ``unlabelled``)."""
    y = torch.randint(0, classes, batch.mask.shape, generator=torch.Generator().manual_seed(seed))
    if unlabelled:
        y[0, 0] = -100
    return torch.where(batch.mask, y, torch.full_like(y, -100))


def param_shapes(m):
    return {(n, tuple(p.shape)) for n, p in m.named_parameters()}


def copy_shared_weights(src, dst):
    """Give ``dst`` every weight of ``src`` with the same name and shape, so outputs differ only by a switch."""
    own = dst.state_dict()
    own.update({k: v for k, v in src.state_dict().items() if k in own and own[k].shape == v.shape})
    dst.load_state_dict(own)


def assert_switch_changes_model(name, switch, batch, changes_params=True):
    """``switch`` changes the tiny offline model's parameter shapes (or keeps them: ``changes_params`` False) and,
    with every weight both models have copied across, its predictions. Returns both models and their outputs."""
    base, other = tiny(name, "offline"), tiny(name, "offline", seed=1, **switch)
    assert (param_shapes(base) != param_shapes(other)) == changes_params
    copy_shared_weights(base, other)
    out_base, out_other = base(batch), other(batch)
    assert not torch.allclose(out_base.logits[batch.mask], out_other.logits[batch.mask])
    return base, other, out_base, out_other


def np_ce(logits, labels):
    """Mean cross-entropy by hand over rows whose label is not -100."""
    total, count = 0.0, 0
    for row, y in zip(logits, labels):
        if y == -100:
            continue
        total += math.log(sum(math.exp(v) for v in row)) - row[y]
        count += 1
    return total / count


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A test that builds a live tracker sets torch's thread count (Whisper's, by design): give
    the next test the count it would have had, so results never depend on test order."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dialogues():
    return make_dialogues((6, 3, 1))


@pytest.fixture
def batch(dialogues):
    return collate(dialogues)


ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"


def read_16k(path: Path) -> np.ndarray:
    """A 16 kHz file as float32 samples (the fixtures and the shared data are 16 kHz)."""
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    return audio


def err_line(capsys) -> str:
    """The one stderr line a failing ``ser-live`` run printed (exactly one, with the CLI's prefix)."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("ser-live: error:")
    return err[0]


def killed_on_call(module, name: str, call: int, monkeypatch) -> None:
    """Replace ``module.name`` by the same function that raises KeyboardInterrupt on its ``call``-th
    call (a process killed mid-run), for the resume tests; ``monkeypatch.undo`` restores it."""
    real, calls = getattr(module, name), []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(module, name, dies)

