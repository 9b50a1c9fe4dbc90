"""BCAF: Bimodal Connection Attention Fusion (Luo, Phan, Wang, Reiss).

Blocks, named as in the paper (equation numbers in their docstrings): the
interactive connection network (per-modality encoder/decoder, eqs. 1-2), the
bimodal attention network (self and cross attention, eqs. 4-12), the
correlative attention network (joint attention, eqs. 13-14, and the bimodal
correlation evaluation, eqs. 15-16), the concatenation of eq. 17 and the audio,
text and bimodal heads (eqs. 19, 21, 23). The connection loss (eq. 3) and the
total loss (eq. 18) live in :mod:`training.losses.bcaf`; this module exposes the
per-head logits, latent codes and reconstructions for them in ``reps``.

The attention runs over the utterances of the dialogue (the paper's context), so
the base class's ``online`` windows bound what each prediction sees.

Deviations from the paper: the audio input is HBAF's 512 selected openSMILE
functionals, not wav2vec-large, and the text input the bundled MiniLM's sentence
vector, not RoBERTa (both projected to ``d_model``); the paper's training (Adam 1e-4,
L2 1e-4, dropout 0.3, patience 15) is ``--recipe paper`` (the default), its batch size
is not given (32 here). Choices the paper leaves open are config fields, named below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.base import ContextConfig, EmotionModel, ModelOutput
from models.batch import Batch
from models.blocks import FeedForward, ScaledDotAttention, fill_missing

DECISIONS = ("bimodal", "sum")
CONNECTION_GRAMS = ("feature", "utterance")
CONNECTION_REDUCTIONS = ("mean", "sum")
DECODER_TERMS = ("add", "subtract", "none")


@dataclass(frozen=True)
class BCAFConfig:
    audio_dim: int = 512
    text_dim: int = 384
    num_classes: int = 7
    #: Width of the attention streams H_a, H_l (the paper's 1024 is its encoders' width;
    #: here both inputs are first projected to this common width).
    d_model: int = 512
    #: Width of the latent codes e_m (Section III-B1: 512).
    latent_dim: int = 512
    heads: int = 8
    ffn_dim: int = 1024
    #: Stacked self/cross attention layers (Table II: 3 to 5 are best for BAN).
    attention_layers: int = 3
    #: Section IV-C: dropout p = 0.3.
    dropout: float = 0.3
    #: Initial value of the learnable lambda of eq. 14.
    lambda_init: float = 0.5
    #: Section III-B1 says every decoder layer ends in a ReLU, but the inputs it must
    #: reconstruct (standardised features) are signed: False keeps the last layer linear.
    decoder_output_relu: bool = False
    #: Eq. 23 is one linear layer on h_m^*; Section III-B3 says "four fully connected layers".
    bimodal_head_layers: int = 1
    #: "bimodal": the logits are eq. 23's; "sum": the three heads' log-probabilities are
    #: added (Section III-C: the predictions "are then combined to make a final decision").
    decision: str = "bimodal"
    # Ablation switches (Section V-B and Table II), each one removes its block.
    #: False: no encoder/decoder and no connection loss; the latent codes the correlation
    #: evaluation needs come from one linear layer per modality.
    connection: bool = True
    #: False: h_m^s = H_m (BAN-CA keeps only cross attention).
    self_attention: bool = True
    #: False: h_a^c, h_l^c leave eq. 17 (BAN-SA keeps only self attention).
    cross_attention: bool = True
    #: False: no joint attention and no correlation; h_a^*, h_l^* leave eq. 17.
    correlative: bool = True
    # Loss weights of eq. 18 (alpha, beta) and eq. 3 (mu); the paper gives no values.
    alpha: float = 1.0
    beta: float = 1.0
    mu: float = 0.1
    #: Eq. 3 writes e_a^T e_l against an identity. "feature": rows are utterances, so the
    #: product is (latent x latent) against I_e (and (Da x Dl) against a rectangular I_d);
    #: "utterance": e_a e_l^T is (N x N), pairing each utterance's audio with its own text.
    connection_gram: str = "feature"
    #: Eq. 3 sums squared Frobenius norms ("sum"), which grows with the batch; "mean" divides
    #: each norm by its number of entries and, in "feature" mode, the Gram matrices by N.
    connection_reduction: str = "mean"
    #: Sign of mu * ||I_d - d_a^T d_l||^2 in eq. 3. The printed equation subtracts it
    #: ("subtract"), which is unbounded below (scaling d_a, d_l up lowers it without limit);
    #: the text says the term aligns the reconstructions, hence "add" by default.
    decoder_term: str = "add"
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        for name in ("audio_dim", "text_dim", "num_classes", "d_model", "latent_dim", "heads", "ffn_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by heads {self.heads}")
        if self.attention_layers < 1 or self.bimodal_head_layers < 1:
            raise ValueError("attention_layers and bimodal_head_layers must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.alpha, self.beta, self.mu) < 0:
            raise ValueError("the loss weights alpha, beta and mu must be non-negative")
        if not (self.cross_attention or self.correlative):
            raise ValueError("eq. 17 needs cross_attention or correlative: switch at least one on")
        if self.connection_gram == "utterance" and self.decoder_term != "none" and self.audio_dim != self.text_dim:
            raise ValueError(
                "connection_gram='utterance' compares d_a with d_l row by row, which needs audio_dim == text_dim: "
                "use connection_gram='feature' or decoder_term='none'"
            )
        for name, allowed in (
            ("decision", DECISIONS),
            ("connection_gram", CONNECTION_GRAMS),
            ("connection_reduction", CONNECTION_REDUCTIONS),
            ("decoder_term", DECODER_TERMS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


def progressive_widths(start: int, end: int, layers: int = 3) -> list[int]:
    """Layer widths going evenly from ``start`` to ``end`` ("progressively reduce", III-B1)."""
    return [round(start + (end - start) * k / layers) for k in range(layers + 1)]


class ModalityEncoder(nn.Module):
    """Eq. 1: e_m = E_m(H_m), three FC + ReLU layers narrowing D_m -> latent, then dropout."""

    def __init__(self, d_in: int, latent: int, dropout: float) -> None:
        super().__init__()
        w = progressive_widths(d_in, latent)
        self.layers = nn.ModuleList([nn.Linear(w[i], w[i + 1]) for i in range(3)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        """(B, U, D_m) -> e_m (B, U, latent)."""
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.dropout(h)


class ModalityDecoder(nn.Module):
    """Eq. 2: d_m = D_m(e_m), three FC layers widening latent -> D_m.

    Dropout sits before the last layer so the reconstruction itself is not zeroed.
    """

    def __init__(self, latent: int, d_out: int, dropout: float, output_relu: bool) -> None:
        super().__init__()
        w = progressive_widths(latent, d_out)
        self.layers = nn.ModuleList([nn.Linear(w[i], w[i + 1]) for i in range(3)])
        self.dropout = nn.Dropout(dropout)
        self.output_relu = output_relu

    def forward(self, e: Tensor) -> Tensor:
        """(B, U, latent) -> d_m (B, U, D_m)."""
        h = torch.relu(self.layers[0](e))
        h = self.dropout(torch.relu(self.layers[1](h)))
        h = self.layers[2](h)
        return torch.relu(h) if self.output_relu else h


class InteractiveConnectionNetwork(nn.Module):
    """Eqs. 1-2 for m in {a, l}: encoders to the latent codes and decoders back."""

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__()
        self.encoder_a = ModalityEncoder(cfg.audio_dim, cfg.latent_dim, cfg.dropout)
        self.encoder_l = ModalityEncoder(cfg.text_dim, cfg.latent_dim, cfg.dropout)
        self.decoder_a = ModalityDecoder(cfg.latent_dim, cfg.audio_dim, cfg.dropout, cfg.decoder_output_relu)
        self.decoder_l = ModalityDecoder(cfg.latent_dim, cfg.text_dim, cfg.dropout, cfg.decoder_output_relu)

    def forward(self, h_a: Tensor, h_l: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, U, Da), (B, U, Dl) -> e_a, e_l (B, U, latent), d_a (B, U, Da), d_l (B, U, Dl)."""
        e_a, e_l = self.encoder_a(h_a), self.encoder_l(h_l)
        return e_a, e_l, self.decoder_a(e_a), self.decoder_l(e_l)


class AttentionLayer(nn.Module):
    """Eqs. 4-6 (self) or 7-9 / 10-12 (cross): zeta = Attn(Q from query; K, V from source),
    H = LayerNorm(residual + zeta), h = AddNorm(H + FeedForward(H))."""

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__()
        self.attention = ScaledDotAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, residual: Tensor, query: Tensor, source: Tensor, mask: Tensor) -> Tensor:
        """(B, U, D) x3, key mask (B, U) -> (B, U, D)."""
        x = self.norm1(residual + self.dropout(self.attention(query, source, mask)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class BimodalAttentionNetwork(nn.Module):
    """Eqs. 4-12: stacked self attention per modality and cross attention both ways.

    Eq. 7 takes the query from text and key/value from audio and adds it to H_a
    (eq. 8); eq. 10 the reverse. Each stack feeds its own outputs to its next layer.
    """

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__()
        n = cfg.attention_layers
        self.self_a = nn.ModuleList([AttentionLayer(cfg) for _ in range(n)]) if cfg.self_attention else None
        self.self_l = nn.ModuleList([AttentionLayer(cfg) for _ in range(n)]) if cfg.self_attention else None
        self.cross_a = nn.ModuleList([AttentionLayer(cfg) for _ in range(n)]) if cfg.cross_attention else None
        self.cross_l = nn.ModuleList([AttentionLayer(cfg) for _ in range(n)]) if cfg.cross_attention else None

    def forward(self, h_a: Tensor, h_l: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """H_a, H_l (B, U, D) -> h_a^s, h_l^s, h_a^c, h_l^c (B, U, D); the cross pair is None when off."""
        s_a, s_l = h_a, h_l  # without self attention h^s = H (BAN-CA)
        if self.self_a is not None:
            for layer_a, layer_l in zip(self.self_a, self.self_l):
                s_a, s_l = layer_a(s_a, s_a, s_a, mask), layer_l(s_l, s_l, s_l, mask)  # eqs. 4-6
        c_a = c_l = None
        if self.cross_a is not None:
            c_a, c_l = h_a, h_l
            for layer_a, layer_l in zip(self.cross_a, self.cross_l):
                # eqs. 7-9: Q_l, K_a, V_a onto H_a; eqs. 10-12: Q_a, K_l, V_l onto H_l
                c_a, c_l = layer_a(c_a, c_l, c_a, mask), layer_l(c_l, c_a, c_l, mask)
        return s_a, s_l, c_a, c_l


class JointAttention(nn.Module):
    """Eqs. 13-14: h* = (softmax((Q_a K_a^T + Q_l K_l^T)/sqrt(d_k)) - lambda softmax(Q_a K_l^T/sqrt(d_k))) V,
    with V the mean of V_a and V_l and lambda a learnable scalar."""

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.heads
        self.q_a, self.k_a, self.v_a = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.q_l, self.k_l, self.v_l = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.lam = nn.Parameter(torch.tensor(float(cfg.lambda_init)))
        self.dropout = nn.Dropout(cfg.dropout)

    def _split(self, x: Tensor) -> Tensor:
        b, u, d = x.shape
        return x.view(b, u, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, h_a: Tensor, h_l: Tensor, mask: Tensor) -> Tensor:
        """h_a^s, h_l^s (B, U, D), key mask (B, U) -> h* (B, U, D)."""
        b, u, d = h_a.shape
        q_a, k_a, v_a = self._split(self.q_a(h_a)), self._split(self.k_a(h_a)), self._split(self.v_a(h_a))
        q_l, k_l, v_l = self._split(self.q_l(h_l)), self._split(self.k_l(h_l)), self._split(self.v_l(h_l))
        scale = math.sqrt(d // self.heads)
        pad = ~mask[:, None, None, :]
        joint = ((q_a @ k_a.transpose(-1, -2) + q_l @ k_l.transpose(-1, -2)) / scale).masked_fill(pad, float("-inf"))
        cross = (q_a @ k_l.transpose(-1, -2) / scale).masked_fill(pad, float("-inf"))
        attn = torch.softmax(joint, dim=-1) - self.lam * torch.softmax(cross, dim=-1)
        out = self.dropout(attn) @ ((v_a + v_l) / 2)
        return out.transpose(1, 2).reshape(b, u, d)


class BimodalCorrelationEvaluation(nn.Module):
    """Eqs. 15-16: h^b = Linear(h*); cor_{m-b} = cos(e_m, h^b); h_m^* = h_m^s x cor_{m-b}."""

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__()
        self.reduce = nn.Linear(cfg.d_model, cfg.latent_dim)

    def forward(
        self, h_star: Tensor, e_a: Tensor, e_l: Tensor, s_a: Tensor, s_l: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """h* (B, U, D), e_a, e_l (B, U, latent), h^s (B, U, D) x2 -> h_a^*, h_l^* (B, U, D), cor (B, U) x2."""
        h_b = self.reduce(h_star)
        cor_a = F.cosine_similarity(e_a, h_b, dim=-1, eps=1e-8)  # eq. 15
        cor_l = F.cosine_similarity(e_l, h_b, dim=-1, eps=1e-8)
        return s_a * cor_a[..., None], s_l * cor_l[..., None], cor_a, cor_l  # eq. 16


class CorrelativeAttentionNetwork(nn.Module):
    """Joint attention network (eqs. 13-14) followed by the bimodal correlation evaluation (eqs. 15-16)."""

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__()
        self.joint = JointAttention(cfg)
        self.evaluation = BimodalCorrelationEvaluation(cfg)

    def forward(
        self, s_a: Tensor, s_l: Tensor, e_a: Tensor, e_l: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """h_a^s, h_l^s (B, U, D), e_a, e_l (B, U, latent) -> h_a^*, h_l^* (B, U, D), cor_a, cor_l (B, U)."""
        return self.evaluation(self.joint(s_a, s_l, mask), e_a, e_l, s_a, s_l)


class BCAF(EmotionModel):
    name = "bcaf"
    inputs = ("audio", "text")

    def __init__(self, cfg: BCAFConfig) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.audio_missing = nn.Parameter(torch.zeros(cfg.audio_dim))
        self.text_missing = nn.Parameter(torch.zeros(cfg.text_dim))
        self.connection = InteractiveConnectionNetwork(cfg) if cfg.connection else None
        latent_only = cfg.correlative and not cfg.connection
        self.latent_a = nn.Linear(cfg.audio_dim, cfg.latent_dim) if latent_only else None
        self.latent_l = nn.Linear(cfg.text_dim, cfg.latent_dim) if latent_only else None
        # The inputs differ in width (openSMILE vs the text encoder) while eqs. 5, 8 and 11 add
        # them to attention outputs: one linear map each gives H_a, H_l a common width.
        self.audio_project = nn.Linear(cfg.audio_dim, d)
        self.text_project = nn.Linear(cfg.text_dim, d)
        self.bimodal_attention = BimodalAttentionNetwork(cfg)
        self.correlative = CorrelativeAttentionNetwork(cfg) if cfg.correlative else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.audio_head = nn.Linear(d, cfg.num_classes)  # eq. 19
        self.text_head = nn.Linear(d, cfg.num_classes)  # eq. 21
        width = d * (2 * cfg.cross_attention + 2 * cfg.correlative)  # eq. 17
        layers: list[nn.Module] = []
        for _ in range(cfg.bimodal_head_layers - 1):
            layers += [nn.Linear(width, d), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = d
        self.bimodal_head = nn.Sequential(*layers, nn.Linear(width, cfg.num_classes))  # eq. 23

    def forward_context(self, batch: Batch) -> ModelOutput:
        """(B, U, Da), (B, U, Dl) -> logits (B, U, C); reps: per-head logits (B, U, C), e_m, d_m, cor_m."""
        cfg, mask = self.config, batch.mask
        audio = fill_missing(batch.audio, batch.audio_present, mask, self.audio_missing)
        text = fill_missing(batch.text, batch.text_present, mask, self.text_missing)
        reps: dict[str, Tensor] = {}
        e_a = e_l = None
        if self.connection is not None:
            e_a, e_l, d_a, d_l = self.connection(audio, text)
            reps.update(e_a=e_a, e_l=e_l, d_a=d_a, d_l=d_l)
        elif self.latent_a is not None:
            e_a, e_l = self.latent_a(audio), self.latent_l(text)
        s_a, s_l, c_a, c_l = self.bimodal_attention(self.audio_project(audio), self.text_project(text), mask)
        parts = [c_a, c_l] if c_a is not None else []
        if self.correlative is not None:
            star_a, star_l, cor_a, cor_l = self.correlative(s_a, s_l, e_a, e_l, mask)
            parts += [star_a, star_l]
            reps.update(cor_a=cor_a, cor_l=cor_l)
        h_m = torch.cat(parts, -1)  # eq. 17
        logits_a = self.audio_head(self.dropout(s_a))
        logits_l = self.text_head(self.dropout(s_l))
        logits_m = self.bimodal_head(self.dropout(h_m))
        reps.update(logits_a=logits_a, logits_l=logits_l, logits_m=logits_m)
        if cfg.decision == "bimodal":
            logits = logits_m
        else:  # product of the three heads' probabilities, as logits
            logits = sum(torch.log_softmax(x, -1) for x in (logits_a, logits_l, logits_m))
        return ModelOutput(logits, reps)
