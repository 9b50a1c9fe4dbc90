"""MCFN: dual attention-based Modality-Collaborative Fusion Network (Zhang & Li).

An utterance-level model on frame-level audio and token-level text. Blocks, named
as in the paper (equation numbers in their docstrings): the intra-modal learning
module (dilated 1-D conv UFLBs for speech, a fully-connected layer for text, then
temporal and channel dual attention, eqs. 1-2), the modality-collaborative learning
module (co-attention alignment, eqs. 3-4, and cross-modal excitation, eqs. 5-6), the
mutual adjustment (eq. 7, its MSE lives in :mod:`training.losses.mcfn`) and the
decision fusion of three classifiers (eqs. 8-9).

Every sequence op is masked, so padded frames or tokens never change an output: the
streaming window pads an utterance differently from a training batch. An optional
GRU over the utterance vectors adds dialogue context (NOTES: "may be combined with
the context networks"); without it each utterance is classified on its own.

Deviations from the paper: no spectrogram augmentation (random time-frequency masks)
before the log-mel deltas; the text encoder is the bundled MiniLM's frozen token
states (384-d), not a fine-tuned RoBERTa (768-d); the operands of the mutual adjustment
are compared per utterance by default (``adjustment_level``, eq. 7 leaves it open).
Co-attention is the additive form with the paper's 4 heads and 128 hidden units
(``coattention_score``; eq. 3 taken literally is ``eq3``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import ContextConfig, EmotionModel, ModelOutput, last_valid
from models.batch import Batch, scatter_windows
from models.blocks import masked_mean, modality_masks, scatter, trim

MODALITIES = ("both", "audio", "text")
COATTENTION_SCORES = ("eq3", "additive")
ADJUSTMENT_LEVELS = ("utterance", "sequence")


@dataclass(frozen=True)
class MCFNConfig:
    frame_dim: int = 120
    token_dim: int = 384
    num_classes: int = 7
    #: Output widths and dilation rates of the UFLBs (paper: three blocks, dilation 2); q = conv_channels[-1].
    conv_channels: tuple[int, ...] = (256, 256, 256)
    conv_dilations: tuple[int, ...] = (2, 2, 2)
    conv_kernel: int = 3
    #: d: width of the fully-connected layer over the text encoder's token states (paper: 256).
    text_width: int = 256
    #: Width of the T1/T2 maps of the temporal attention branch (eq. 1).
    dual_qk_dim: int = 32
    #: Section 3: "the hidden units for multihead attention is set to 128 and the number of head is set to 4".
    coattention_heads: int = 4
    #: "additive" (default), a = w^T tanh(U s_i + V t_j + b) with ``coattention_hidden`` units split over the
    #: heads: the only reading of eq. 3 that has the paper's 128 hidden units. "eq3" is eq. 3 taken literally,
    #: one scalar tanh(u.s_i + v.t_j + b) per head, which ranks the frames the same way for every word (tanh is
    #: monotone in u.s_i) and keeps the weights within a factor e^2 of each other: close to fixed pooling.
    #: It stays as a switch (checkpoints written before the default changed store "eq3" and load as they were).
    #: The additive form costs a (words x frames x hidden) tensor per utterance.
    coattention_score: str = "additive"
    coattention_hidden: int = 128
    #: Eq. 7 subtracts and the adjustment adds S and S^c, but S has one column per frame and S^c one per
    #: word. "utterance": both are mean-pooled first; "sequence": S is taken on the word grid (S~, eq. 4).
    adjustment_level: str = "utterance"
    dropout: float = 0.1
    #: Decision weights alpha, beta, gamma of eq. 8 (speech, text, bimodal), constrained by eq. 9.
    alpha: float = 0.3
    beta: float = 0.3
    gamma: float = 0.4
    #: Classifier weights lambda_m and the mutual-adjustment weight omega of eq. 11 (not given in the paper).
    lambda_s: float = 1.0
    lambda_t: float = 1.0
    lambda_st: float = 1.0
    omega: float = 1.0
    # Ablation switches of Table 3 (each one removes its block).
    dual_attention: bool = True
    cross_modal_interaction: bool = True
    #: False removes eq. 7 and the adjustment addition (S^f = S^c, T^f = T^c).
    mutual_adjustment: bool = True
    #: A GRU over the dialogue's utterance vectors before the main classifier (not in the paper).
    utterance_context: bool = False
    modalities: str = "both"
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        # lists from a CLI or JSON would make equal configs compare unequal
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        object.__setattr__(self, "conv_dilations", tuple(self.conv_dilations))
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {self.modalities!r}")
        if self.coattention_score not in COATTENTION_SCORES:
            raise ValueError(f"coattention_score must be one of {COATTENTION_SCORES}, got {self.coattention_score!r}")
        if self.adjustment_level not in ADJUSTMENT_LEVELS:
            raise ValueError(f"adjustment_level must be one of {ADJUSTMENT_LEVELS}, got {self.adjustment_level!r}")
        for name in ("frame_dim", "token_dim", "num_classes", "text_width", "dual_qk_dim", "coattention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.conv_channels or len(self.conv_channels) != len(self.conv_dilations):
            raise ValueError("conv_channels and conv_dilations must be non-empty and of equal length (one per UFLB)")
        if min(self.conv_channels) < 1 or min(self.conv_dilations) < 1:
            raise ValueError("conv_channels and conv_dilations must be positive")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (same-length dilated convolution), got {self.conv_kernel}")
        if self.conv_channels[-1] % self.coattention_heads:
            raise ValueError("the last conv_channels width must be divisible by coattention_heads")
        if self.coattention_hidden < 1 or self.coattention_hidden % self.coattention_heads:
            raise ValueError("coattention_hidden must be positive and divisible by coattention_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        weights = (self.alpha, self.beta, self.gamma)
        if min(weights) < 0 or max(weights) > 1 or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"alpha, beta, gamma must lie in [0, 1] and sum to 1 (eq. 9), got {weights}")
        if min(self.lambda_s, self.lambda_t, self.lambda_st, self.omega) < 0:
            raise ValueError("lambda_s, lambda_t, lambda_st and omega must be non-negative")
        active = {"both": (self.lambda_s, self.lambda_t, self.lambda_st), "audio": (self.lambda_s,)}
        if not sum(active.get(self.modalities, (self.lambda_t,))) > 0:
            raise ValueError(f"with modalities={self.modalities!r} some active classifier needs a lambda > 0")


def masked_softmax(scores: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` where ``mask`` is True; a row with nothing valid gives zeros, not NaN."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim) * mask


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm whose training statistics count valid frames only, so padding never enters them."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        """(N, C, T), mask (N, T) -> (N, C, T)."""
        m = mask[:, None, :].to(x.dtype)
        count = m.sum()
        if not self.training or count < 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        mean = (x * m).sum((0, 2)) / count
        var = (((x - mean[None, :, None]) * m) ** 2).sum((0, 2)) / count
        with torch.no_grad():
            unbiased = var * count / (count - 1) if count > 1 else var
            # momentum None: the cumulative average over the batches seen (as nn.BatchNorm1d), what
            # the trainer's BatchNorm recalibration uses
            step = self.momentum if self.momentum is not None else 1.0 / (int(self.num_batches_tracked) + 1)
            self.running_mean.lerp_(mean.detach(), step)
            self.running_var.lerp_(unbiased.detach(), step)
            self.num_batches_tracked.add_(1)
        x = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return x * self.weight[None, :, None] + self.bias[None, :, None]


class UFLB(nn.Module):
    """Upgrade feature learning block: dilated conv -> BN -> Leaky-ReLU, plus a skip connection."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.norm = MaskedBatchNorm1d(c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(N, C_in, T), mask (N, T) -> (N, C_out, T), zero at padded frames.

        Re-zeroing padding after every block makes the next convolution see the same
        zeros past an utterance's end as its own boundary padding.
        """
        y = F.leaky_relu(self.norm(self.conv(x), mask))
        return (y + self.skip(x)) * mask[:, None, :].to(x.dtype)


class SpeechEncoder(nn.Module):
    """Intra-modal speech encoder: log-mel + deltas -> stacked UFLBs -> O_s."""

    def __init__(self, cfg: MCFNConfig) -> None:
        super().__init__()
        widths = (cfg.frame_dim, *cfg.conv_channels)
        self.blocks = nn.ModuleList(
            UFLB(c_in, c_out, cfg.conv_kernel, dil)
            for c_in, c_out, dil in zip(widths[:-1], widths[1:], cfg.conv_dilations)
        )

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        """(N, n, F), mask (N, n) -> O_s (N, n, q)."""
        x = (frames * mask[..., None].to(frames.dtype)).transpose(1, 2)
        for block in self.blocks:
            x = block(x, mask)
        return x.transpose(1, 2)


class TemporalAttentionBranch(nn.Module):
    """Eq. 1 (TAB): T_t[j] = O[j] + sum_i t_{j,i} T3[i], t_{j,i} = softmax_i(T1_i . T2_j).

    T1, T2, T3 are the paper's convolution layers with kernel 1 (position-wise linear
    maps). T1 has no bias: a key-side bias adds the same score to every i of a row,
    which the softmax cancels, so it could never learn.
    """

    def __init__(self, width: int, qk_dim: int) -> None:
        super().__init__()
        self.t1 = nn.Linear(width, qk_dim, bias=False)
        self.t2 = nn.Linear(width, qk_dim)
        self.t3 = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(N, L, C), mask (N, L) -> T_t (N, L, C)."""
        scores = self.t2(x) @ self.t1(x).transpose(1, 2)  # (N, j, i)
        return x + masked_softmax(scores, mask[:, None, :], -1) @ self.t3(x)


class ChannelAttentionBranch(nn.Module):
    """Eq. 2 (CAB): T_c[:, j] = O[:, j] + sum_i c_{j,i} O[:, i], c_{j,i} = softmax_i(O_i . O_j) over time."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(N, L, C), mask (N, L) -> T_c (N, L, C). Padded positions are zero, so they add nothing."""
        x = x * mask[..., None].to(x.dtype)
        attn = torch.softmax(x.transpose(1, 2) @ x, -1)  # (N, C_j, C_i)
        return x + x @ attn.transpose(1, 2)


class DualAttention(nn.Module):
    """Temporal and channel-wise dual attention: S = S_t + S_c (T = T_t + T_c)."""

    def __init__(self, width: int, qk_dim: int) -> None:
        super().__init__()
        self.tab = TemporalAttentionBranch(width, qk_dim)
        self.cab = ChannelAttentionBranch()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(N, L, C), mask (N, L) -> (N, L, C), zero at padded positions."""
        return (self.tab(x, mask) + self.cab(x, mask)) * mask[..., None].to(x.dtype)


class CoAttentionAlignment(nn.Module):
    """Eqs. 3-4: each word t_j (the query) attends over the frames; s~_j = sum_i alpha_{i,j} s_i per head.

    The heads split the channels of s_i (eq. 4 weights s_i itself, no value projection).
    Score form (see ``MCFNConfig.coattention_score``): by default the additive one with the
    paper's 4 heads and 128 hidden units, so each word can rank the frames its own way.
    """

    def __init__(self, q: int, d: int, cfg: MCFNConfig) -> None:
        super().__init__()
        self.heads = cfg.coattention_heads
        hidden = self.heads if cfg.coattention_score == "eq3" else cfg.coattention_hidden
        self.u = nn.Linear(q, hidden, bias=False)  # U
        self.v = nn.Linear(d, hidden)  # V, b
        per_head = hidden // self.heads
        additive = cfg.coattention_score == "additive"
        self.w = nn.Parameter(torch.randn(self.heads, per_head) / per_head**0.5) if additive else None

    def weights(self, s: Tensor, s_mask: Tensor, t: Tensor) -> Tensor:
        """S (N, n, q), frame mask (N, n), T (N, m, d) -> alpha (N, m, n, H): word j's weights over the frames."""
        n_utt, n, _ = s.shape
        m, h = t.shape[1], self.heads
        a = torch.tanh(self.v(t)[:, :, None, :] + self.u(s)[:, None, :, :])  # eq. 3: (N, m, n, hidden)
        if self.w is not None:
            a = (a.view(n_utt, m, n, h, -1) * self.w).sum(-1)
        return masked_softmax(a, s_mask[:, None, :, None], dim=2)  # eq. 4, over frames

    def forward(self, s: Tensor, s_mask: Tensor, t: Tensor) -> Tensor:
        """S (N, n, q), frame mask (N, n), T (N, m, d) -> S~ (N, m, q)."""
        n_utt, n, q = s.shape
        h = self.heads
        alpha = self.weights(s, s_mask, t)
        return torch.einsum("bjih,bihc->bjhc", alpha, s.view(n_utt, n, h, q // h)).reshape(n_utt, t.shape[1], q)


class CrossModalExcitation(nn.Module):
    """Eqs. 5-6: S^c = S~ + S~ * sigmoid(W_s T~), T^c = T~ + T~ * sigmoid(W_t S~)."""

    def __init__(self, q: int, d: int) -> None:
        super().__init__()
        self.w_s = nn.Linear(d, q)
        self.w_t = nn.Linear(q, d)

    def forward(self, s_al: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """S~ (N, m, q), T~ (N, m, d) -> S^c (N, m, q), T^c (N, m, d)."""
        return s_al + s_al * torch.sigmoid(self.w_s(t)), t + t * torch.sigmoid(self.w_t(s_al))


class UtteranceContext(nn.Module):
    """GRU over a dialogue's utterance vectors, Add & Norm. Causal: in ``online`` mode the window makes it exact."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.gru = nn.GRU(width, width, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, U, W) right-padded -> (B, U, W); position t depends on 0..t only."""
        return self.norm(x + self.dropout(self.gru(x)[0]))


class MCFN(EmotionModel):
    name = "mcfn"

    def __init__(self, cfg: MCFNConfig) -> None:
        super().__init__(cfg)
        q, d, c = cfg.conv_channels[-1], cfg.text_width, cfg.num_classes
        self.use_audio = cfg.modalities in ("both", "audio")
        self.use_text = cfg.modalities in ("both", "text")
        self.bimodal = cfg.modalities == "both"
        self.speech_encoder = SpeechEncoder(cfg) if self.use_audio else None
        self.speech_attention = DualAttention(q, cfg.dual_qk_dim) if self.use_audio and cfg.dual_attention else None
        self.speech_classifier = nn.Linear(q, c) if self.use_audio else None
        self.text_fc = nn.Linear(cfg.token_dim, d) if self.use_text else None
        self.text_attention = DualAttention(d, cfg.dual_qk_dim) if self.use_text and cfg.dual_attention else None
        self.text_classifier = nn.Linear(d, c) if self.use_text else None
        self.alignment = CoAttentionAlignment(q, d, cfg) if self.bimodal else None
        interact = self.bimodal and cfg.cross_modal_interaction
        self.excitation = CrossModalExcitation(q, d) if interact else None
        self.bimodal_classifier = nn.Linear(q + d, c) if self.bimodal else None
        width = q + d if self.bimodal else (q if self.use_audio else d)
        self.utterance_context = UtteranceContext(width, cfg.dropout) if cfg.utterance_context else None
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(m for m, on in (("frames", self.use_audio), ("tokens", self.use_text)) if on)

    @property
    def uses_context(self) -> bool:  # type: ignore[override]
        """Only the optional utterance context looks beyond the current utterance."""
        return self.utterance_context is not None

    def check_inputs(self, batch: Batch) -> None:
        super().check_inputs(batch)
        for name, key in (("frames", "frame_dim"), ("tokens", "token_dim")):
            x, width = getattr(batch, name), getattr(self.config, key)
            if name in self.inputs and getattr(batch, name[:-1] + "_mask") is None:
                raise ValueError(f"batch field {name!r} comes without {name[:-1]}_mask: build it with models.collate")
            if name in self.inputs and (x.dim() != 4 or x.shape[-1] != width):
                raise ValueError(f"MCFN expects {name} (B, U, T, {width}), got {tuple(x.shape)}: set {key} to match")

    def forward(self, batch: Batch) -> ModelOutput:
        """(B, U, T, F), (B, U, L, Dt) -> logits (B, U, C), under the configured context mode.

        In ``online`` mode with the utterance context, the per-utterance encoders run once
        and only their vectors are cut into windows: the same result as windowing the raw
        inputs (the encoders see one utterance at a time), for 1/K of the work.
        """
        if self.utterance_context is None or self.context.mode == "offline":
            return super().forward(batch)
        self.check_inputs(batch)
        batch = batch.masked()
        enc = self.encode(batch)
        # Batch is only the carrier that cuts windows exactly as the base class cuts raw inputs.
        windows, index = Batch(mask=batch.mask, audio=enc["main"]).windows(self.context.window)
        h = self.utterance_context(windows.audio)
        enc["main"] = scatter_windows(last_valid(h, windows.mask), index, batch.shape)
        out = self.decide(enc)
        # zero at padded utterances, as the base class's scatter leaves them
        m = batch.mask
        zero = {k: v * m.view(m.shape + (1,) * (v.dim() - 2)).to(v.dtype) for k, v in out.reps.items()}
        return ModelOutput(out.logits * m[..., None].to(out.logits.dtype), zero)

    def forward_context(self, batch: Batch) -> ModelOutput:
        """(B, U, T, F), (B, U, L, Dt) -> logits (B, U, C) = log of the fused decision (eq. 8)."""
        enc = self.encode(batch)
        if self.utterance_context is not None:
            enc["main"] = self.utterance_context(enc["main"])
        return self.decide(enc)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """Per-utterance part: ILM, MCLM and mutual adjustment -> (B, U, ...) vectors and eq. 7's operands."""
        sel, shape = batch.mask, batch.shape
        frame_mask, token_mask = modality_masks(batch)
        out: dict[str, Tensor] = {}
        if self.use_audio:
            fm = frame_mask[sel]
            frames, fm = trim(batch.frames[sel], fm)
            s = self.speech_encoder(frames, fm)  # O_s
            if self.speech_attention is not None:
                s = self.speech_attention(s, fm)  # S
        if self.use_text:
            full_len = token_mask.shape[-1]
            tm = token_mask[sel]
            tokens, tm = trim(batch.tokens[sel], tm)
            t = self.dropout(self.text_fc(tokens)) * tm[..., None].to(tokens.dtype)  # O_t
            if self.text_attention is not None:
                t = self.text_attention(t, tm)  # T
        if not self.bimodal:
            vec = masked_mean(s, fm, 1) if self.use_audio else masked_mean(t, tm, 1)
            return {"main": scatter(vec, sel, shape)}
        word = tm[..., None].to(t.dtype)
        s_al = self.alignment(s, fm, t) * word  # S~ (eq. 4), T~ = T
        s_c, t_c = self.excitation(s_al, t) if self.excitation is not None else (s_al, t)  # eqs. 5-6
        s_c, t_c = s_c * word, t_c * word
        if self.config.adjustment_level == "utterance":
            s_i, t_i = masked_mean(s, fm, 1), masked_mean(t, tm, 1)
            s_c, t_c = masked_mean(s_c, tm, 1), masked_mean(t_c, tm, 1)
        else:  # "sequence": compare on the word grid, pool afterwards
            s_i, t_i = s_al, t
        if self.config.mutual_adjustment:
            for key, v in (("s_intra", s_i), ("s_inter", s_c), ("t_intra", t_i), ("t_inter", t_c)):
                out[key] = scatter(v if v.dim() == 2 else pad_to(v, full_len), sel, shape)
            s_f, t_f = s_i + s_c, t_i + t_c  # the adjustment function: a simple addition
        else:
            s_f, t_f = s_c, t_c
        if self.config.adjustment_level == "sequence":
            s_f, t_f = masked_mean(s_f, tm, 1), masked_mean(t_f, tm, 1)
        out["s_f"], out["t_f"] = scatter(s_f, sel, shape), scatter(t_f, sel, shape)
        out["main"] = torch.cat([out["s_f"], out["t_f"]], -1)
        return out

    def decide(self, enc: dict[str, Tensor]) -> ModelOutput:
        """Classifiers and decision fusion (eqs. 8-9): (B, U, ...) vectors -> logits (B, U, C)."""
        reps = {k: v for k, v in enc.items() if k.endswith(("_intra", "_inter"))}
        if not self.bimodal:
            head = self.speech_classifier if self.use_audio else self.text_classifier
            z = head(self.dropout(enc["main"]))
            reps["logits_s" if self.use_audio else "logits_t"] = z
            return ModelOutput(F.log_softmax(z, -1), reps)
        reps["logits_s"] = self.speech_classifier(self.dropout(enc["s_f"]))
        reps["logits_t"] = self.text_classifier(self.dropout(enc["t_f"]))
        reps["logits_st"] = self.bimodal_classifier(self.dropout(enc["main"]))
        cfg = self.config
        logits = decision_fusion(
            (reps["logits_s"], reps["logits_t"], reps["logits_st"]), (cfg.alpha, cfg.beta, cfg.gamma)
        )
        return ModelOutput(logits, reps)


def decision_fusion(logits: tuple[Tensor, ...], weights: tuple[float, ...]) -> Tensor:
    """Eq. 8 in log space: log(sum_m w_m softmax(z_m)), so its softmax is the fused probability."""
    terms = [math.log(w) + F.log_softmax(z, -1) for z, w in zip(logits, weights) if w > 0]
    return torch.logsumexp(torch.stack(terms), 0)


def pad_to(x: Tensor, length: int) -> Tensor:
    """(N, m, D) -> (N, length, D) with zeros after position m."""
    return F.pad(x, (0, 0, 0, length - x.shape[1]))
