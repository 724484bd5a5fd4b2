"""`tiny`: a ~0.4 M-parameter semantic world model trained from scratch, the CPU default.

Sequence (one per (row, question)), bidirectional like a VLM prefix:

    [image tokens (grid x grid, 4x4)] [one token per action step] [question word tokens] [<answer>]

- image tokens: a strided conv encoder on the 64x64 image, plus learned 2-D positions;
- action tokens: `Linear(ACTION_DIM -> d)` per step plus a learned step-position embedding,
  as in the paper's action projector; padded steps are masked out of attention; with
  `action_sums`, plus a linear projection of the running sum of the actions so far, and the
  question words get one of the whole (unmasked) chunk's sum;
- question tokens: word embeddings (`text.Tokenizer`) plus word positions; padding masked;
- optionally (`grounding`) each question word gets the image position of what it names
  (models/grounding.py): a colour word finds its block in one hop instead of the transformer
  having to learn that binding (late fusion alone stayed at chance on colour questions);
- a pre-norm transformer; the hidden state at the final `<answer>` position goes through the
  language head (tied to the word embeddings) and the logits of the words "no" and "yes"
  are the answer, as the paper reads p(yes) vs p(no) from the LM head.

No data-dependent control flow in the forward pass (masks, not indexing), so it traces and
exports; the answer sits at a fixed last position.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.base import WorldModel, frames_to_tensor
from swm_ros.models.grounding import WordGrounding
from swm_ros.models.hand_paths import HandPaths
from swm_ros.models.text import Tokenizer


class ProprioEmbedding(nn.Module):
    """Proprioception (B, P) -> (B, d): standardised with the training data's mean and std
    (buffers, saved with the weights), then a linear map that starts at zero, so a model grown
    from one without it answers the same until trained."""

    def __init__(self, dim: int, d_model: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.proj = nn.Linear(dim, d_model)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def set_statistics(self, samples: np.ndarray) -> None:
        """Mean and std per entry from (N, P) samples; constant entries get std 1."""
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        if x.dim() != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"proprio samples must be (N, {self.mean.shape[0]}), got {tuple(x.shape)}")
        std = x.std(0)
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        if proprio.dim() != 2 or proprio.shape[1] != self.mean.shape[0]:
            raise ValueError(f"proprio must be (B, {self.mean.shape[0]}), got {tuple(proprio.shape)}")
        if not torch.isfinite(proprio).all():
            raise ValueError("proprio has NaN or infinite values")
        return self.proj((proprio - self.mean) / self.std)


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
    # each action token also gets its running sum (where the commanded effector has got to, as
    # actions are displacements) and every question word the whole prefix's sum: motion over
    # a long horizon is one token away instead of a sum attention has to assemble
    action_sums: bool = False
    # two extra input channels holding each pixel's (x, y) in [-1, 1] ("CoordConv"): where a
    # block is becomes a feature, not only a token position, which relative questions need
    coord_channels: bool = False
    # words look up what they name in a `grounding_cells` x `grounding_cells` colour map of
    # the frame (models/grounding.py); `locate` then gives named blocks' image positions
    grounding: bool = True
    grounding_cells: int = 32
    # words that are entities without being colours: they ground through a learned query and
    # are supervised with the effector's image position (models/grounding.py)
    grounding_entities: list[str] = dataclasses.field(default_factory=lambda: ["gripper", "hand"])
    # length of the robot's proprioception vector (the episodes' /proprio: joints, effector
    # pose, gripper opening) added to every action and question token; 0: images and actions
    # only, as in the paper. What the overhead frame shows worst is the gripper's own state
    proprio_dim: int = 0
    # every action token also learns where that step sends the hand relative to the blocks
    # each question names (models/hand_paths.py); needs grounding with "gripper" an entity
    hand_paths: bool = False

    def __post_init__(self) -> None:
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")
        if self.hand_paths and not (self.grounding and "gripper" in self.grounding_entities):
            raise ValueError("hand_paths needs grounding with 'gripper' among grounding_entities")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} is not a multiple of grid {self.grid}")
        down = self.image_size // self.grid
        if down & (down - 1) or down < 2:
            raise ValueError(f"image_size / grid = {down} must be a power of two >= 2")
        if self.grounding and not 1 <= self.grounding_cells <= self.image_size:
            raise ValueError(f"grounding_cells {self.grounding_cells} must be in 1..image_size ({self.image_size})")


class EmbeddedQuestions(NamedTuple):
    """Questions embedded for one frame (`prepare_questions`): reusable while only the actions change."""

    embeddings: torch.Tensor        # (B or 1, Q, L', d): words + positions + grounding, <answer> last
    keep: torch.Tensor              # (B or 1, Q, L') bool: False for padding
    anchors: torch.Tensor | None = None   # (B or 1, Q, 8) for hand paths (HandPaths.anchors)


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

    def forward(self, x: torch.Tensor, attend: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x (N, S, d); attend (N, 1, 1, S) bool, True = key may be attended to. `last_only`:
        every position is still a key, but only the last one queries and goes through the
        MLP, and (N, 1, d) comes back: in the final block only the <answer> position is read,
        and the other positions' outputs would be two thirds of that block's work."""
        n, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, x = q[:, :, -1:], x[:, -1:]
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=drop)
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(n, x.shape[1], d)), drop, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), drop, self.training)


class LateFusionWorldModel(WorldModel):
    """What the from-scratch-transformer backends (`tiny`, `effnet`) share: everything after the
    image tokens. A subclass builds its image encoder, then calls `_build_fusion`, then
    `_init_weights`, and answers with `_answer_logits(image_tokens, ...)`. The config needs
    action_dim, max_steps, max_question_len, d_model, heads, mlp_ratio, dropout, layers,
    grounding, grounding_cells, grounding_entities and action_sums."""

    # parts with a zero init that a checkpoint without them may start from (train `init_from`)
    ZERO_INIT_PARTS = ("action_sums", "proprio", "hand_paths")
    # parameters with one row per vocabulary word (a checkpoint with fewer words may seed them)
    VOCABULARY_PARTS = ("word_emb.weight", "lm_bias")

    def _build_fusion(self, c) -> None:
        d = c.d_model
        # actions: one token per step through a linear projection + step positions
        self.action_proj = nn.Linear(c.action_dim, d)
        self.step_pos = nn.Parameter(torch.zeros(1, c.max_steps, d))
        # zero-initialised (`_init_weights`): a model without them loads and answers the same
        self.action_sums = (nn.ModuleDict({"step": nn.Linear(c.action_dim, d), "total": nn.Linear(c.action_dim, d)})
                            if c.action_sums else None)
        proprio_dim = getattr(c, "proprio_dim", 0)
        self.proprio = ProprioEmbedding(proprio_dim, d) if proprio_dim else None      # zero-initialised too
        self.hand_paths = HandPaths(c.action_dim, d) if getattr(c, "hand_paths", False) else None   # and this
        # text
        self.word_emb = nn.Embedding(len(self.tokenizer), d)
        self.word_pos = nn.Parameter(torch.zeros(1, c.max_question_len + 1, d))
        self.type_emb = nn.Parameter(torch.zeros(3, d))        # image, action, text
        self.blocks = nn.ModuleList([Block(d, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.layers)])
        self.final_norm = nn.LayerNorm(d)
        self.lm_bias = nn.Parameter(torch.zeros(len(self.tokenizer)))   # LM head = word_emb^T + bias (tied)
        self.register_buffer("answer_ids", torch.tensor([self.tokenizer.no_id, self.tokenizer.yes_id]),
                             persistent=False)
        # with grounding, `answer_logits_from_features` passes the colour map as `cells`
        self.grounding = (WordGrounding(d, c.grounding_cells, self.tokenizer.vocabulary,
                                        entity_words=c.grounding_entities) if c.grounding else None)

    def _init_weights(self, skip_prefix: str | None = None) -> None:
        """Small normal init of positions, embeddings and every Linear (but those under
        `skip_prefix`, e.g. a pretrained encoder)."""
        for p in (self.image_pos, self.step_pos, self.word_pos, self.type_emb):
            nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.word_emb.weight, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not (skip_prefix and name.startswith(skip_prefix)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # the action projection sees raw actions in [-1, 1]: a larger init lets them matter early
        nn.init.normal_(self.action_proj.weight, std=0.2)
        if self.action_sums is not None:
            for m in self.action_sums.values():
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        if self.proprio is not None:
            self.proprio.reset_parameters()
        if self.hand_paths is not None:
            self.hand_paths.reset_parameters()
        if self.grounding is not None:
            self.grounding.reset_parameters()      # its own init (see WordGrounding.reset_parameters)

    def make_blocks_identity(self, indices: Sequence[int]) -> None:
        """Zero the residual outputs (attention projection, last MLP layer) of these blocks: each
        then passes its input through unchanged, so a deeper model grown from a shallower
        checkpoint (train `init_from`) answers exactly as the checkpoint did, and learns from there."""
        for i in indices:
            for m in (self.blocks[i].proj, self.blocks[i].mlp[-1]):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def _answer_logits(self, img_tokens: torch.Tensor, actions: torch.Tensor,
                       questions: torch.Tensor | EmbeddedQuestions, action_mask: torch.Tensor | None,
                       cells: torch.Tensor | None = None, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """image tokens (B or 1, N, d), actions (B, T, A), questions as tokens (Q, L) or (B, Q, L)
        or from `_embed_questions` -> (B, Q, 2); `cells` (B or 1, M, 3): the grounding's colour
        map (mean RGB per cell), when the model has one; `proprio` (B or 1, P) with proprio_dim."""
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
        if not isinstance(questions, EmbeddedQuestions):
            questions = self._embed_questions(questions, cells, b)
        txt, keep_words = questions.embeddings, questions.keep
        if txt.shape[0] not in (1, b):
            raise ValueError(f"embedded questions batch {txt.shape[0]} does not match actions batch {b}")
        q = txt.shape[1]
        txt, keep_words = txt.expand(b, -1, -1, -1), keep_words.expand(b, -1, -1)
        if action_mask is None:
            action_mask = torch.ones(b, t, dtype=torch.bool, device=device)
        action_mask = action_mask.to(device, torch.bool)
        n_img, d = img_tokens.shape[1], img_tokens.shape[2]

        img = img_tokens.expand(b, -1, -1).unsqueeze(1).expand(b, q, n_img, d)
        act = self.action_proj(actions) + self.step_pos[:, :t] + self.type_emb[1]          # (B, T, d)
        # a running sum only looks back, so a prefix's tokens are the same padded or cut
        kept = actions * action_mask.unsqueeze(-1).to(actions.dtype)
        sums = torch.cumsum(kept, dim=1)
        if self.action_sums is not None:
            act = act + self.action_sums["step"](sums)
            txt = txt + self.action_sums["total"](kept.sum(1))[:, None, None, :]
        if self.proprio is not None:
            if proprio is None:
                raise ValueError(f"this model reads the robot's proprioception: pass proprio (B, {c.proprio_dim})")
            state = self.proprio(proprio.to(img_tokens.device, act.dtype))                   # (B or 1, d)
            act = act + state[:, None, :]
            txt = txt + state[:, None, None, :]
        act = act.unsqueeze(1).expand(b, q, t, d)
        if self.hand_paths is not None:
            act = act + self.hand_paths(sums, questions.anchors)
        x = torch.cat([img, act, txt], dim=2).reshape(b * q, n_img + t + txt.shape[2], d)

        keep = torch.cat([
            torch.ones(b, q, n_img, dtype=torch.bool, device=device),
            action_mask.unsqueeze(1).expand(b, q, t),
            keep_words,
        ], dim=2).reshape(b * q, 1, 1, -1)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            x = blk(x, keep, last_only=i == last)
        h = self.final_norm(x[:, -1])                                                        # the <answer> position
        # language head restricted to the answer words: rows "no", "yes" of the tied embedding
        w = self.word_emb.weight[self.answer_ids]                                            # (2, d)
        logits = h @ w.t() + self.lm_bias[self.answer_ids]
        return logits.reshape(b, q, 2)

    def _embed_questions(self, question_tokens: torch.Tensor, cells: torch.Tensor | None,
                         b: int) -> EmbeddedQuestions:
        """Tokens (Q, L) (the same questions for every row) or (B, Q, L) -> word + position +
        grounding embeddings with the <answer> token last, and which of them attention may see."""
        c = self.config
        tok = question_tokens.to(self.word_emb.weight.device, torch.int64)
        shared_questions = tok.dim() == 2
        if shared_questions:
            tok = tok.unsqueeze(0).expand(b, -1, -1)
        if tok.dim() != 3 or tok.shape[0] != b:
            raise ValueError(f"question tokens must be (Q, L) or ({b}, Q, L), got {tuple(question_tokens.shape)}")
        q, length = tok.shape[1], tok.shape[2]
        if length > c.max_question_len:
            raise ValueError(f"question tokens have length {length} > max_question_len {c.max_question_len}")
        answer = torch.full((b, q, 1), self.tokenizer.answer_id, dtype=torch.int64, device=tok.device)
        words = torch.cat([tok, answer], dim=2)                                             # (B, Q, L+1)
        # <answer> always takes the last position embedding, so trailing padding can be cut
        # from the tokens without changing an answer (training pads to max_question_len)
        pos = torch.cat([self.word_pos[:, :length], self.word_pos[:, c.max_question_len:]], dim=1)
        txt = self.word_emb(words) + pos + self.type_emb[2]
        if self.grounding is None:
            return EmbeddedQuestions(txt, words != self.tokenizer.pad_id)
        if cells is None:
            raise ValueError("this model grounds words in the image: pass the colour map `cells`")
        phi = self.grounding.phi(cells)                      # once per image, for the words and the gripper
        grounded, entities = self._grounded(words, phi, b, q, shared_questions)
        anchors = None
        if self.hand_paths is not None:
            anchors = HandPaths.anchors(self._gripper_uv(phi), entities)
        return EmbeddedQuestions(txt + grounded, words != self.tokenizer.pad_id, anchors)

    def prepare_questions(self, features: torch.Tensor, question_tokens: torch.Tensor) -> EmbeddedQuestions:
        """Questions (Q, L) embedded and grounded once for these features (batch 1: one frame),
        for a planner that asks them again and again while only the actions change. Trailing
        padding is cut first: attention never sees it, so the answers are the same, from a
        shorter sequence."""
        tokens, cells = self._split_cells(features, self.config.grid ** 2)
        question_tokens = question_tokens.to(tokens.device, torch.int64)
        if question_tokens.dim() != 2:
            raise ValueError(f"question tokens must be (Q, L), got {tuple(question_tokens.shape)}")
        words = (question_tokens != self.tokenizer.pad_id).any(0).nonzero()
        length = int(words.max()) + 1 if len(words) else 0
        return self._embed_questions(question_tokens[:, :length], cells, features.shape[0])

    # ---- grounding (models/grounding.py): the colour map travels behind the image features
    def _append_cells(self, features: torch.Tensor, rgb01: torch.Tensor) -> torch.Tensor:
        """(B, N, C) image features + (B, 3, S, S) frame in [0, 1] -> (B, N + cells**2, C): the
        colour map's mean RGB rows (zero-padded to C channels) after the features, so callers
        cache one tensor per frame."""
        cells = self.grounding.cell_colours(rgb01)
        return torch.cat([features, F.pad(cells, (0, features.shape[-1] - cells.shape[-1]))], dim=1)

    def _split_cells(self, features: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.grounding is None:
            return features, None
        expect = n_tokens + self.grounding.cells ** 2
        if features.dim() != 3 or features.shape[1] != expect:
            raise ValueError(f"features must be (B, {expect}, C) from encode_image, got {tuple(features.shape)}")
        return features[:, :n_tokens], features[:, n_tokens:, :3]

    def locate(self, features: torch.Tensor, names: list[str]) -> torch.Tensor:
        """(B, N, C) image features, C words (colour names, entity words) -> (B, C, 2) where in
        the frame (u, v in [0, 1]) the grounding finds each; what the auxiliary localisation
        loss trains."""
        if self.grounding is None:
            raise RuntimeError("this model has no word grounding (grounding: false)")
        _, cells = self._split_cells(features, self.config.grid ** 2)
        ids = torch.tensor([self.tokenizer.encode_one(w)[0] for w in names], device=features.device)
        ids = ids.unsqueeze(0).expand(features.shape[0], -1)
        return self.grounding.locate(ids, self.word_emb(ids), cells)

    def _gripper_uv(self, cells: torch.Tensor) -> torch.Tensor:
        """Cell features phi(colours) (B, M, f) -> (B, 2): where the grounding finds "gripper",
        uv in [-1, 1]."""
        ids = torch.full((cells.shape[0], 1), self.tokenizer.ids["gripper"], dtype=torch.int64,
                         device=cells.device)
        uv, _ = self.grounding.locations(ids, self.word_emb(ids), cells)
        return uv[:, 0]

    def _grounded(self, words: torch.Tensor, cells: torch.Tensor, b: int, q: int,
                  shared_questions: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Q, L+1) word ids and cell features phi(colours) (B or 1, M, f) -> what grounding
        adds to their embeddings (B, Q, L+1, d), and each question's entities (rows, Q, 8;
        rows = 1 or B). With the same questions for every row it is computed per image (once,
        for a planner scoring candidates against one frame) and broadcast; no branch on sizes,
        so it traces."""
        if shared_questions:
            words = words[:cells.shape[0]]
        rows, length = words.shape[0], words.shape[2]
        ids = words.reshape(rows * q, length)
        if cells.shape[0] == 1 and rows > 1 and not torch.jit.is_tracing():
            # one frame, many different questions (bag evaluation): ground each word once
            g, entities = self.grounding.forward_one_image(ids, self.word_emb, cells)
            return (g.reshape(rows, q, length, g.shape[-1]).expand(b, -1, -1, -1),
                    entities.reshape(rows, q, -1))
        cells = cells.expand(rows, -1, -1).unsqueeze(1).expand(rows, q, -1, -1)
        per_question = cells.reshape(rows * q, *cells.shape[2:])
        g, entities = self.grounding(ids, self.word_emb(ids), per_question)
        return g.reshape(rows, q, length, g.shape[-1]).expand(b, -1, -1, -1), entities.reshape(rows, q, -1)


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
        for ch in chans:
            layers += [nn.Conv2d(cin, ch, 4, 2, 1), nn.GroupNorm(8 if ch % 8 == 0 else 1, ch), nn.GELU()]
            cin = ch
        layers += [nn.Conv2d(cin, d, 4, 2, 1)]
        self.image_encoder = nn.Sequential(*layers)
        self.image_pos = nn.Parameter(torch.zeros(1, c.grid * c.grid, d))
        self.image_norm = nn.LayerNorm(d)
        self._build_fusion(c)
        self._init_weights()

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
        """(B, H, W, 3) -> (B, grid*grid, d) image tokens [+ the grounding's colour map]."""
        x = self.preprocess(images)
        f = self.image_encoder(x)                                            # (B, d, g, g)
        tokens = self.image_norm(f.flatten(2).transpose(1, 2) + self.image_pos + self.type_emb[0])
        if self.grounding is None:
            return tokens
        return self._append_cells(tokens, x[:, :3] * 0.25 + 0.5)           # back to [0, 1] RGB

    # ---- joint ------------------------------------------------------------------------
    def answer_logits_from_features(self, features: torch.Tensor, actions: torch.Tensor,
                                    question_tokens: torch.Tensor | EmbeddedQuestions,
                                    action_mask: torch.Tensor | None = None,
                                    proprio: torch.Tensor | None = None) -> torch.Tensor:
        tokens, cells = self._split_cells(features, self.config.grid ** 2)
        return self._answer_logits(tokens, actions, question_tokens, action_mask, cells, proprio)
