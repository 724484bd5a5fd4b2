"""`tiny`: a ~0.4 M-parameter semantic world model trained from scratch, the CPU default.

Sequence (one per (row, question)), bidirectional like a VLM prefix:

    [image tokens (grid x grid, 4x4)] [one token per action step] [question word tokens] [<answer>]

- image tokens: a strided conv encoder on the 64x64 image, plus learned 2-D positions;
- action tokens: `Linear(ACTION_DIM -> d)` per step plus a learned step-position embedding,
  as in the paper's action projector; padded steps are masked out of attention;
- question tokens: word embeddings (`text.Tokenizer`) plus word positions; padding masked;
- optionally (`dense_grid` > 0) a finer map of image tokens (16x16 from the encoder's middle)
  that every stream token reads through cross-attention in the first `cross_layers` blocks:
  a colour word can then find its block in one hop instead of decoding it out of a coarse
  token that mixes several blocks (the late-fusion model stayed at chance on colour binding);
- a pre-norm transformer; the hidden state at the final `<answer>` position goes through the
  language head (tied to the word embeddings) and the logits of the words "no" and "yes"
  are the answer, as the paper reads p(yes) vs p(no) from the LM head.

No data-dependent control flow in the forward pass (masks, not indexing), so it traces and
exports; the answer sits at a fixed last position.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.base import WorldModel, frames_to_tensor
from swm_ros.models.text import Tokenizer


@dataclass
class TinyConfig:
    image_size: int = 64             # images are resized to this (square) before encoding
    grid: int = 4                    # image tokens per side (64x64 -> 4x4 = 16 tokens)
    conv_channels: list[int] = dataclasses.field(default_factory=lambda: [16, 32, 64])
    d_model: int = 96
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    max_steps: int = 64              # longest action chunk (step-position embeddings)
    max_question_len: int = 24       # words per question (longer ones are truncated)
    action_dim: int = ACTION_DIM
    # two extra input channels holding each pixel's (x, y) in [-1, 1] ("CoordConv"): where a
    # block is becomes a feature, not only a token position, which relative questions need
    coord_channels: bool = False
    # > 0: a training-only head that points the image tokens at each of this many block
    # colours (swm_ros/models/localisation.py); 0: none
    aux_colours: int = 0
    # > 0: also keep the encoder's feature map at this resolution (dense_grid x dense_grid
    # tokens, read by cross-attention, never attended by themselves); 0: coarse tokens only
    dense_grid: int = 0
    cross_layers: int = 2            # how many of the first blocks read the dense map

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} is not a multiple of grid {self.grid}")
        down = self.image_size // self.grid
        if down & (down - 1) or down < 2:
            raise ValueError(f"image_size / grid = {down} must be a power of two >= 2")
        if self.dense_grid:
            ratio = self.dense_grid // self.grid
            if self.dense_grid % self.grid or ratio & (ratio - 1) or ratio < 2 or self.image_size % self.dense_grid:
                raise ValueError(f"dense_grid {self.dense_grid} must be grid {self.grid} times a power of two "
                                 f">= 2 and divide image_size {self.image_size}")
            if not 0 < self.cross_layers <= self.layers:
                raise ValueError(f"cross_layers {self.cross_layers} must be in 1..layers ({self.layers})")


class Block(nn.Module):
    """Pre-norm transformer block; attention through scaled_dot_product_attention with a boolean mask."""

    def __init__(self, d: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        # x (N, S, d); attend (N, 1, 1, S) bool, True = key may be attended to
        n, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=drop)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(n, s, d)), drop, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), drop, self.training)


class CrossAttention(nn.Module):
    """Stream tokens read a fixed memory (the dense image map). Keys and values are computed
    once per image (`memory`), not once per question and candidate: a planner scoring 64
    chunks x Q questions against one frame projects the map once."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)

    def memory(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B_img, M, d) -> keys, values (B_img, heads, M, d/heads)."""
        n, m, d = mem.shape
        k, v = self.kv(mem).reshape(n, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: int) -> torch.Tensor:
        # x (b * q, S, d): the q questions of one batch row share its image's memory, so they are
        # laid side by side as one (b, q * S) query sequence; k, v (1 or b, heads, M, dh) broadcast
        n, s, d = x.shape
        q = self.q(self.norm(x)).reshape(b, -1, self.heads, d // self.heads).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, dim=-1)
        out = (att @ v).transpose(1, 2).reshape(n, s, d)
        return x + self.proj(out)


class LateFusionWorldModel(WorldModel):
    """What the from-scratch-transformer backends (`tiny`, `effnet`) share: everything after the
    image tokens. A subclass builds its image encoder, then calls `_build_fusion`, then
    `_init_weights`, and answers with `_answer_logits(image_tokens, ...)`. The config needs
    action_dim, max_steps, max_question_len, d_model, heads, mlp_ratio, dropout and layers."""

    def _build_fusion(self, c) -> None:
        d = c.d_model
        # actions: one token per step through a linear projection + step positions
        self.action_proj = nn.Linear(c.action_dim, d)
        self.step_pos = nn.Parameter(torch.zeros(1, c.max_steps, d))
        # text
        self.word_emb = nn.Embedding(len(self.tokenizer), d)
        self.word_pos = nn.Parameter(torch.zeros(1, c.max_question_len + 1, d))
        self.type_emb = nn.Parameter(torch.zeros(3, d))        # image, action, text
        self.blocks = nn.ModuleList([Block(d, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.layers)])
        n_cross = c.cross_layers if getattr(c, "dense_grid", 0) else 0
        self.cross = nn.ModuleList([CrossAttention(d, c.heads) for _ in range(n_cross)])
        self.final_norm = nn.LayerNorm(d)
        self.lm_bias = nn.Parameter(torch.zeros(len(self.tokenizer)))   # LM head = word_emb^T + bias (tied)
        self.register_buffer("answer_ids", torch.tensor([self.tokenizer.no_id, self.tokenizer.yes_id]),
                             persistent=False)

    def _init_weights(self, skip_prefix: str | None = None) -> None:
        """Small normal init of positions, embeddings and every Linear (but those under
        `skip_prefix`, e.g. a pretrained encoder)."""
        for p in (self.image_pos, self.step_pos, self.word_pos, self.type_emb):
            nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.word_emb.weight, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not (skip_prefix and name.startswith(skip_prefix)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # the action projection sees raw actions in [-1, 1]: a larger init lets them matter early
        nn.init.normal_(self.action_proj.weight, std=0.2)

    def _answer_logits(self, img_tokens: torch.Tensor, actions: torch.Tensor, question_tokens: torch.Tensor,
                       action_mask: torch.Tensor | None, dense: torch.Tensor | None = None) -> torch.Tensor:
        """image tokens (B or 1, N, d), actions (B, T, A), tokens (Q, L) or (B, Q, L) -> (B, Q, 2);
        `dense` (B or 1, M, d): the map the `cross` blocks read."""
        c = self.config
        actions = actions.to(img_tokens.dtype)
        if actions.dim() != 3 or actions.shape[-1] != c.action_dim:
            raise ValueError(f"actions must be (B, T, {c.action_dim}), got {tuple(actions.shape)}")
        b, t = actions.shape[0], actions.shape[1]
        if t > c.max_steps:
            raise ValueError(f"{t} action steps > max_steps {c.max_steps} of this model")
        if img_tokens.shape[0] not in (1, b):
            raise ValueError(f"features batch {img_tokens.shape[0]} does not match actions batch {b}")
        device = img_tokens.device
        tok = question_tokens.to(device, torch.int64)
        if tok.dim() == 2:
            tok = tok.unsqueeze(0).expand(b, -1, -1)
        if tok.dim() != 3 or tok.shape[0] != b:
            raise ValueError(f"question tokens must be (Q, L) or ({b}, Q, L), got {tuple(question_tokens.shape)}")
        q, length = tok.shape[1], tok.shape[2]
        if length > c.max_question_len:
            raise ValueError(f"question tokens have length {length} > max_question_len {c.max_question_len}")
        if action_mask is None:
            action_mask = torch.ones(b, t, dtype=torch.bool, device=device)
        action_mask = action_mask.to(device, torch.bool)
        n_img, d = img_tokens.shape[1], img_tokens.shape[2]

        img = img_tokens.expand(b, -1, -1).unsqueeze(1).expand(b, q, n_img, d)
        act = self.action_proj(actions) + self.step_pos[:, :t] + self.type_emb[1]          # (B, T, d)
        act = act.unsqueeze(1).expand(b, q, t, d)
        answer = torch.full((b, q, 1), self.tokenizer.answer_id, dtype=torch.int64, device=device)
        words = torch.cat([tok, answer], dim=2)                                             # (B, Q, L+1)
        txt = self.word_emb(words) + self.word_pos[:, :length + 1] + self.type_emb[2]
        x = torch.cat([img, act, txt], dim=2).reshape(b * q, n_img + t + length + 1, d)

        keep = torch.cat([
            torch.ones(b, q, n_img, dtype=torch.bool, device=device),
            action_mask.unsqueeze(1).expand(b, q, t),
            words != self.tokenizer.pad_id,
        ], dim=2).reshape(b * q, 1, 1, -1)
        if len(self.cross) and dense is None:
            raise ValueError("this model reads a dense image map: pass `dense`")
        memories = [cross.memory(dense) for cross in self.cross]
        for i, blk in enumerate(self.blocks):
            if i < len(self.cross):
                x = self.cross[i](x, *memories[i], b)
            x = blk(x, keep)
        h = self.final_norm(x[:, -1])                                                        # the <answer> position
        # language head restricted to the answer words: rows "no", "yes" of the tied embedding
        w = self.word_emb.weight[self.answer_ids]                                            # (2, d)
        logits = h @ w.t() + self.lm_bias[self.answer_ids]
        return logits.reshape(b, q, 2)


class TinyWorldModel(LateFusionWorldModel):
    backend = "tiny"

    def __init__(self, config: TinyConfig | None = None, tokenizer: Tokenizer | None = None):
        config = config or TinyConfig()
        tokenizer = tokenizer or Tokenizer.default()
        super().__init__(tokenizer, config.max_question_len)
        self.config = config
        self.action_dim = config.action_dim
        c, d = config, config.d_model
        # image encoder: stride-2 convs down to the grid, the last one to d channels
        n_down = (c.image_size // c.grid).bit_length() - 1
        chans = list(c.conv_channels[:max(n_down - 1, 0)])
        chans += [chans[-1] if chans else 32] * (n_down - 1 - len(chans))
        layers: list[nn.Module] = []
        cin = 5 if c.coord_channels else 3
        dense_at, dense_ch = -1, 0
        for i, ch in enumerate(chans):
            layers += [nn.Conv2d(cin, ch, 4, 2, 1), nn.GroupNorm(8 if ch % 8 == 0 else 1, ch), nn.GELU()]
            cin = ch
            if c.dense_grid and c.image_size >> (i + 1) == c.dense_grid:
                dense_at, dense_ch = len(layers), ch
        layers += [nn.Conv2d(cin, d, 4, 2, 1)]
        # image_encoder[:dense_at] gives the dense map, the rest continues to the coarse grid
        self.image_encoder = nn.Sequential(*layers)
        self.dense_at = dense_at
        self.image_pos = nn.Parameter(torch.zeros(1, c.grid * c.grid, d))
        self.image_norm = nn.LayerNorm(d)
        if c.dense_grid:
            self.dense_proj = nn.Linear(dense_ch, d)
            self.dense_pos = nn.Parameter(torch.zeros(1, c.dense_grid * c.dense_grid, d))
            self.dense_norm = nn.LayerNorm(d)
        self._build_fusion(c)
        if c.aux_colours > 0:
            self.locator = nn.Linear(d, c.aux_colours)
            ramp = (torch.arange(c.grid, dtype=torch.float32) + 0.5) / c.grid
            gy, gx = torch.meshgrid(ramp, ramp, indexing="ij")
            self.register_buffer("token_uv", torch.stack([gx.flatten(), gy.flatten()], -1), persistent=False)
        self._init_weights()
        if c.dense_grid:
            nn.init.normal_(self.dense_pos, std=0.02)

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    # ---- image ------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 / float in [0, 1] -> (B, 3 or 5, S, S) normalised float (+ coordinates)."""
        s = self.config.image_size
        x = (frames_to_tensor(images, s, self.image_pos.device, antialias=True) - 0.5) / 0.25
        if self.config.coord_channels:
            ramp = torch.linspace(-1.0, 1.0, s, device=x.device)
            coords = torch.stack(torch.meshgrid(ramp, ramp, indexing="xy"))          # (2, S, S): x, y
            x = torch.cat([x, coords.expand(x.shape[0], -1, -1, -1)], dim=1)
        return x

    def encode_image(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) -> (B, grid*grid [+ dense_grid**2], d): the coarse image tokens, then
        (with `dense_grid`) the dense map, in one tensor so callers cache a single thing."""
        x = self.preprocess(images)
        if not self.config.dense_grid:
            return self._coarse_tokens(self.image_encoder(x))
        mid = self.image_encoder[:self.dense_at](x)                                   # (B, C, G, G)
        dense = self.dense_norm(self.dense_proj(mid.flatten(2).transpose(1, 2)) + self.dense_pos)
        return torch.cat([self._coarse_tokens(self.image_encoder[self.dense_at:](mid)), dense], dim=1)

    def _coarse_tokens(self, f: torch.Tensor) -> torch.Tensor:
        f = f.flatten(2).transpose(1, 2) + self.image_pos + self.type_emb[0]          # (B, g*g, d)
        return self.image_norm(f)

    def locate(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, d) image features -> (B, aux_colours, 2) soft-argmax (u, v) in [0, 1] over the coarse tokens."""
        if self.config.aux_colours <= 0:
            raise RuntimeError("this model has no localisation head (aux_colours 0)")
        features = features[:, :self.config.grid ** 2]
        weights = self.locator(features).softmax(dim=1)                  # (B, N, C) over tokens
        return torch.einsum("bnc,nk->bck", weights, self.token_uv)

    # ---- joint ------------------------------------------------------------------------
    def answer_logits_from_features(self, features: torch.Tensor, actions: torch.Tensor,
                                    question_tokens: torch.Tensor,
                                    action_mask: torch.Tensor | None = None) -> torch.Tensor:
        n = self.config.grid ** 2
        if self.config.dense_grid:
            expect = n + self.config.dense_grid ** 2
            if features.dim() != 3 or features.shape[1] != expect:
                raise ValueError(f"features must be (B, {expect}, d) from encode_image, got {tuple(features.shape)}")
            return self._answer_logits(features[:, :n], actions, question_tokens, action_mask, features[:, n:])
        return self._answer_logits(features, actions, question_tokens, action_mask)
