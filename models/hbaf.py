"""HBAF: Heterogeneous Bimodal Attention Fusion (Luo et al.).

Blocks, named as in the paper (equation numbers in their docstrings):
audio context network, text context network, bimodal attention network,
dynamic filter gate, residual connection, and the classifier over
``h_m = [h_a; h_l]``. The inter-modal contrastive loss (eqs. 18-21) lives in
:mod:`training.losses`; this module exposes ``h_a``, ``h_l`` and ``h_m`` for it.

Deviations from the paper: the text vector is the bundled MiniLM's (384-d, mean of
the last 4 layers), not RoBERTa-large's; COMET is not available offline, so the
state GRUs get linear views of the text vector instead of commonsense relations
unless a provider supplies them (TextContextNetwork); eqs. 14-17 are Add & Norm
(ResidualConnection); the live default is ``online`` context over the last K
utterances, the paper's is the whole dialogue (``offline``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.base import ContextConfig, EmotionModel, ModelOutput
from models.batch import Batch
from models.blocks import FeedForward, ScaledDotAttention, fill_missing, run_packed

MODALITIES = ("both", "audio", "text")
ATTENTION_SCORES = ("query", "vector")


@dataclass(frozen=True)
class HBAFConfig:
    audio_dim: int = 512
    text_dim: int = 384
    num_classes: int = 7
    d_model: int = 512
    conv_filters: int = 64
    conv_kernel: int = 3
    lstm_hidden: int = 256
    lstm_layers: int = 2
    transformer_layers: int = 3
    transformer_heads: int = 8
    transformer_ff: int = 1024
    gru_hidden: int = 512
    #: Width of optional per-utterance commonsense vectors (0: not used; the GRUs
    #: then get the attentive context with the utterance's own text vector). The paper's
    #: COMET relations are not available offline: see TextContextNetwork.
    commonsense_dim: int = 0
    #: Eq. 2 leaves the score of u_i open: "query" scores u_i against the current
    #: utterance, "vector" against a learned vector.
    attention_score: str = "query"
    #: Per-speaker internal state (GRU_i, eq. 5), DialogueRNN-style: each participant's state
    #: carries over from their own previous turn. On by default; it takes effect wherever the
    #: batch knows speakers (a speaker column in the data, one stereo channel per speaker live).
    #: Data that cannot tell speakers apart give every utterance speaker 0, and one speaker's
    #: state is exactly the shared GRU_i. False: one GRU_i state shared by all speakers.
    #: (Checkpoints written before this default store False and load unchanged.)
    speaker_state: bool = True
    max_speakers: int = 8
    fusion_heads: int = 1
    ffn_dim: int = 1024
    dropout: float = 0.1
    # Ablation switches (each one removes its block).
    audio_context: bool = True
    fusion: bool = True
    bimodal_attention: bool = True
    filter_gate: bool = True
    residual: bool = True
    #: False drops the inter-modal contrastive loss (eqs. 18-21) and its projection head.
    contrastive: bool = True
    #: Contrastive temperature and weights (eqs. 18-23); the paper leaves tau and lambdas open.
    tau: float = 0.1
    lambda_am: float = 1.0
    lambda_lm: float = 1.0
    lambda_al: float = 1.0
    mu: float = 0.2
    modalities: str = "both"
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {MODALITIES}, got {self.modalities!r}")
        if self.attention_score not in ATTENTION_SCORES:
            raise ValueError(f"attention_score must be one of {ATTENTION_SCORES}")
        for name in (
            "audio_dim",
            "text_dim",
            "num_classes",
            "d_model",
            "gru_hidden",
            "max_speakers",
            "transformer_heads",
            "fusion_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.transformer_heads or self.d_model % self.fusion_heads:
            raise ValueError("d_model must be divisible by transformer_heads and fusion_heads")
        if self.tau <= 0 or self.mu < 0:
            raise ValueError("tau must be positive and mu non-negative")
        if 2 * self.lstm_hidden != self.d_model and self.audio_context:
            raise ValueError("the BiLSTM output (2 x lstm_hidden) must equal d_model")


class AudioContextNetwork(nn.Module):
    """Conv1d (k=3, 64 filters) -> 2 BiLSTM (256/direction) -> 3 Transformer layers (8 heads, 512)."""

    def __init__(self, cfg: HBAFConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cfg.audio_dim, cfg.conv_filters, cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.lstm = nn.LSTM(
            cfg.conv_filters,
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            bidirectional=True,
            batch_first=True,
            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
        )
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.transformer_heads, cfg.transformer_ff, cfg.dropout, batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)

    def forward(self, audio: Tensor, mask: Tensor) -> Tensor:
        """(B, U, Da), mask (B, U) -> H_a (B, U, D). Padding must be zero (conv boundary)."""
        x = torch.relu(self.conv(audio.transpose(1, 2))).transpose(1, 2)
        return self.transformer(run_packed(self.lstm, x, mask), src_key_padding_mask=~mask)


class SoftAttention(nn.Module):
    """Eqs. 1-3: attentive context l^c_t over the previous utterances 1..t-1."""

    def __init__(self, d: int, score: str) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)  # W_s, b_s
        self.score = score
        self.vector = nn.Parameter(torch.randn(d) / d**0.5) if score == "vector" else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, U, D) -> l^c (B, U, D); zero where an utterance has no predecessor."""
        u = torch.tanh(self.proj(x))  # eq. 1
        if self.vector is not None:
            scores = (u @ self.vector)[:, None, :].expand(-1, x.shape[1], -1)
        else:
            scores = x @ u.transpose(1, 2)  # row t: current utterance vs u_i
        n = x.shape[1]
        previous = torch.ones(n, n, dtype=torch.bool, device=x.device).tril(-1)
        allowed = previous[None] & mask[:, None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
        alpha = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # eq. 2; rows with no past -> 0
        return alpha @ x  # eq. 3


class TextContextNetwork(nn.Module):
    """Soft attention (eqs. 1-3) + external/internal/purpose GRUs (eqs. 4-6) -> H_l.

    Deviation: the paper feeds GRU_e, GRU_i and GRU_p the attentive context with one COMET
    commonsense relation each (external, internal, purpose). COMET is not available
    offline (no model download at run time, and none is bundled), so by default each GRU
    gets the attentive context concatenated with its own learned linear view of the
    utterance's text vector (``relations[k](text)``): three projections of one vector, no
    commonsense knowledge. With ``commonsense_dim`` > 0 the three relations come from
    per-utterance commonsense vectors a feature provider supplies instead, as the paper has.
    GRU_i is per speaker (``speaker_state``) where the batch carries speakers.
    """

    def __init__(self, cfg: HBAFConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.project = nn.Linear(cfg.text_dim, d)
        self.attention = SoftAttention(d, cfg.attention_score)
        rel_dim = cfg.commonsense_dim or cfg.text_dim
        self.relations = nn.ModuleList([nn.Linear(rel_dim, d) for _ in range(3)])
        # Whole-sequence GRUs: the input projections of all steps run as one matrix
        # product, which is what makes a 16-utterance window cheap on a CPU.
        self.gru_e = nn.GRU(2 * d, cfg.gru_hidden, batch_first=True)
        self.gru_i = nn.GRU(2 * d, cfg.gru_hidden, batch_first=True)
        self.gru_p = nn.GRU(2 * d, cfg.gru_hidden, batch_first=True)
        self.out = nn.Linear(3 * cfg.gru_hidden, d)

    def forward(
        self, text: Tensor, mask: Tensor, speaker: Tensor | None = None, commonsense: Tensor | None = None
    ) -> Tensor:
        """(B, U, Dt), mask (B, U) -> H_l (B, U, D). Padding must be on the right."""
        x = self.project(text)
        context = self.attention(x, mask)
        if self.cfg.commonsense_dim:
            if commonsense is None:
                raise ValueError("this HBAF was configured with commonsense inputs; the batch has none")
            rel = [proj(commonsense[:, :, k]) for k, proj in enumerate(self.relations)]
        else:
            rel = [proj(text) for proj in self.relations]
        l_e, _ = self.gru_e(torch.cat([context, rel[0]], -1))  # eq. 4
        l_p, _ = self.gru_p(torch.cat([context, rel[2]], -1))  # eq. 6
        inputs_i = torch.cat([context, rel[1]], -1)
        if self.cfg.speaker_state and speaker is not None:
            l_i = self._per_speaker_gru(inputs_i, speaker)
        else:
            l_i, _ = self.gru_i(inputs_i)  # eq. 5
        return self.out(torch.cat([l_e, l_i, l_p], -1))

    def _per_speaker_gru(self, inputs: Tensor, speaker: Tensor) -> Tensor:
        """Eq. 5 with one internal state per participant (DialogueRNN-style).

        Same weights as ``gru_i``; the state carried into step t is that speaker's
        state after their previous turn. (B, U, 2D), (B, U) -> (B, U, H).
        """
        w_ih, w_hh = self.gru_i.weight_ih_l0, self.gru_i.weight_hh_l0
        b_ih, b_hh = self.gru_i.bias_ih_l0, self.gru_i.bias_hh_l0
        gi = (inputs @ w_ih.T + b_ih).chunk(3, -1)  # all steps at once
        b, n, _ = inputs.shape
        slots = self.cfg.max_speakers
        state = inputs.new_zeros(b, slots, self.cfg.gru_hidden)
        rows = torch.arange(b, device=inputs.device)
        spk = speaker.clamp(0, slots - 1)
        outputs = []
        for t in range(n):
            h = state[rows, spk[:, t]]
            gh = (h @ w_hh.T + b_hh).chunk(3, -1)
            r = torch.sigmoid(gi[0][:, t] + gh[0])
            z = torch.sigmoid(gi[1][:, t] + gh[1])
            cand = torch.tanh(gi[2][:, t] + r * gh[2])
            h = (1 - z) * cand + z * h
            state = state.index_put((rows, spk[:, t]), h)
            outputs.append(h)
        return torch.stack(outputs, 1)


class BimodalAttentionNetwork(nn.Module):
    """Eqs. 7-9: self attention per modality and cross attention both ways."""

    def __init__(self, cfg: HBAFConfig) -> None:
        super().__init__()
        args = (cfg.d_model, cfg.fusion_heads, cfg.dropout)
        self.self_a, self.self_l = ScaledDotAttention(*args), ScaledDotAttention(*args)
        self.cross_al, self.cross_la = ScaledDotAttention(*args), ScaledDotAttention(*args)

    def forward(self, h_a: Tensor, h_l: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, U, D) x2 -> zeta H_a, zeta H_l, zeta H_{a-l}, zeta H_{l-a}, each (B, U, D)."""
        return (
            self.self_a(h_a, h_a, mask),  # eq. 7, m = a
            self.self_l(h_l, h_l, mask),  # eq. 7, m = l
            self.cross_al(h_a, h_l, mask),  # eq. 8: Q_a, K_l, V_l
            self.cross_la(h_l, h_a, mask),  # eq. 9: Q_l, K_a, V_a
        )


class DynamicFilterGate(nn.Module):
    """Eqs. 10-13: G = sigmoid(own W_s + cross W_c + b); H* = G * own + (1 - G) * cross."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w_self = nn.Linear(d, d)  # W_s., with b.
        self.w_cross = nn.Linear(d, d, bias=False)  # W_c.

    def forward(self, own: Tensor, cross: Tensor) -> Tensor:
        """(B, U, D) x2 -> H* (B, U, D)."""
        gate = torch.sigmoid(self.w_self(own) + self.w_cross(cross))
        return gate * own + (1 - gate) * cross


class ResidualConnection(nn.Module):
    """Eqs. 14-17: H^LN = LN(H + H*); h = LN(H^LN + FFN(H^LN)) (Add & Norm, see NOTES)."""

    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, d_ff, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, h_star: Tensor) -> Tensor:
        """(B, U, D) x2 -> (B, U, D)."""
        x = self.norm1(h + self.dropout(h_star))
        return self.norm2(x + self.dropout(self.ffn(x)))


class MultimodalFusion(nn.Module):
    """Bimodal attention -> dynamic filter gate -> residual connection, each switchable.

    Which content each stream carries (eqs. 9-11): the audio gate mixes the self-attended
    audio with eq. 9's cross attention, whose values are audio (text only chooses the
    weights); the text gate likewise mixes text with text. So the full model has no path
    that moves text *content* into h_a or audio content into h_l.

    ``bimodal_attention=False`` removes the four attentions and nothing else: each one is
    replaced by its value sequence at the same position, so the audio gate sees H_a for
    both its own and its cross input, and the text gate H_l for both. A gate over two
    equal inputs is the identity (G x + (1 - G) x = x), so it is not built; each stream
    goes straight to its residual block, and h_a stays a function of audio alone. (An
    earlier version fed raw H_l into the audio gate here, a text content path the full
    model never has, so that ablation did not measure the attention alone.)
    """

    def __init__(self, cfg: HBAFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.attention = BimodalAttentionNetwork(cfg) if cfg.bimodal_attention else None
        gated = cfg.filter_gate and cfg.bimodal_attention
        self.gate_a = DynamicFilterGate(d) if gated else None
        self.gate_l = DynamicFilterGate(d) if gated else None
        self.residual_a = ResidualConnection(d, cfg.ffn_dim, cfg.dropout) if cfg.residual else None
        self.residual_l = ResidualConnection(d, cfg.ffn_dim, cfg.dropout) if cfg.residual else None

    def forward(self, h_a: Tensor, h_l: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """H_a, H_l (B, U, D) -> h_a, h_l (B, U, D)."""
        if self.attention is None:  # each attention -> its values: own and cross input are the stream itself
            star_a, star_l = h_a, h_l
        else:
            star_a, star_l = self._gate(*self.attention(h_a, h_l, mask))
        if self.residual_a is not None:
            return self.residual_a(h_a, star_a), self.residual_l(h_l, star_l)
        return star_a, star_l

    def _gate(self, z_a: Tensor, z_l: Tensor, z_al: Tensor, z_la: Tensor) -> tuple[Tensor, Tensor]:
        """Eqs. 10-13 on the attention outputs: audio with eq. 9's audio values, text with eq. 8's text values."""
        if self.gate_a is not None:
            star_a = self.gate_a(z_a, z_la)  # eqs. 10-11
            star_l = self.gate_l(z_l, z_al)  # eqs. 12-13
        else:  # without the gate: unweighted mean of own and cross information
            star_a, star_l = (z_a + z_la) / 2, (z_l + z_al) / 2
        return star_a, star_l


class HBAF(EmotionModel):
    name = "hbaf"

    def __init__(self, cfg: HBAFConfig) -> None:
        super().__init__(cfg)
        d = cfg.d_model
        self.use_audio = cfg.modalities in ("both", "audio")
        self.use_text = cfg.modalities in ("both", "text")
        if self.use_audio:
            self.audio_context = AudioContextNetwork(cfg) if cfg.audio_context else None
            self.audio_project = None if cfg.audio_context else nn.Linear(cfg.audio_dim, d)
            self.audio_missing = nn.Parameter(torch.zeros(cfg.audio_dim))
        if self.use_text:
            self.text_context = TextContextNetwork(cfg)
            self.text_missing = nn.Parameter(torch.zeros(cfg.text_dim))
        bimodal = cfg.modalities == "both"
        self.fusion = MultimodalFusion(cfg) if bimodal and cfg.fusion else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d * (2 if bimodal else 1), cfg.num_classes)
        # h_m = [h_a; h_l] is 2D wide; the cosine similarities of eqs. 18-19 compare it
        # with D-wide h_a / h_l, so a linear head maps it to D first.
        self.contrastive_head = nn.Linear(2 * d, d) if bimodal and cfg.contrastive else None

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(m for m, on in (("audio", self.use_audio), ("text", self.use_text)) if on)

    def forward_context(self, batch: Batch) -> ModelOutput:
        """(B, U, Da), (B, U, Dt) -> logits (B, U, C); reps h_a, h_l, h_m (B, U, D or 2D)."""
        mask = batch.mask
        parts, reps = [], {}
        if self.use_audio:
            audio = fill_missing(batch.audio, batch.audio_present, mask, self.audio_missing)
            h_a = self.audio_context(audio, mask) if self.audio_context is not None else self.audio_project(audio)
        if self.use_text:
            text = fill_missing(batch.text, batch.text_present, mask, self.text_missing)
            h_l = self.text_context(text, mask, batch.speaker, batch.commonsense)
        if self.fusion is not None:
            h_a, h_l = self.fusion(h_a, h_l, mask)
        if self.use_audio:
            parts.append(h_a)
            reps["h_a"] = h_a
        if self.use_text:
            parts.append(h_l)
            reps["h_l"] = h_l
        h_m = torch.cat(parts, -1)
        reps["h_m"] = h_m
        if self.contrastive_head is not None:
            reps["z_m"] = self.contrastive_head(h_m)
        return ModelOutput(self.classifier(self.dropout(h_m)), reps)
