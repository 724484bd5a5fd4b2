"""Word grounding for the `tiny` world model: every question word looks for what it names.

A from-scratch transformer has to discover that the word "red" refers to the reddish pixels
before it can answer anything about the red block, and with late fusion on a 64x64 frame it
did not within hours of CPU training (relative-position and touching questions stayed at
chance). Grounding gives each word that one hop directly:

    cells    = the frame average-pooled to `cells x cells`, each cell's RGB through phi
    query(w) = phi(rgb(w)) for a colour word, a learned projection of its embedding otherwise
    a(w, c)  = softmax over cells of -scale * |query(w) - cells(c)|^2
    word w  += Linear([u, v, peak])    (u, v) = sum_c a(w, c) * centre(c),
                                       peak = log(M max_c a(w, c)) / log(M) (0: nowhere, 1: one cell)

`phi(rgb) = [rgb, mlp(rgb)]` is shared by words and pixels, so matching is a distance in
colour space, smallest where the colours agree: untrained (mlp ~0) it is plain RGB distance,
so a word finds its colour from the first step; training reshapes it (lighting, shading). rgb(w) is the CSS colour of the name (matplotlib's table, general knowledge
as a pretrained language model would have it, not the simulator's colours): a colour word
never seen in training ("purple") still queries purple-ish pixels, which is what the OOD
split with unseen block colours asks for.

Relations ("is A left of B", "are A and B touching") need the two named positions side by
side, and a from-scratch transformer's uniform attention at the start averages them (u_a +
u_b says nothing about left-of): the question stalls on a plateau. So, as relation-
classification models mark their two entities, the first two colour words of a question
are its entities, and every word also gets [uv_1, uv_2, uv_1 - uv_2, |uv_1 - uv_2|, peak_1,
peak_2] through a linear layer; the transformer then only has to combine that with the
relation word ("left", "touch", ...).

Not every entity is a colour: "the gripper" (or "the robot's hand") is one too. Such
`entity_words` query the map through their learned projection, count as entities for the
relation features ("is the gripper touching the red block" relates the gripper to the red
block), and the auxiliary loss points them at the effector's projected position.

`locate` reads the same soft-argmax for named things, so an auxiliary loss on block and
effector positions from the simulator's privileged state trains exactly the path the
answers use.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn


def colour_prior(vocabulary: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) RGB in [0, 1] for the words that are CSS colour names, and a (V,) is-colour mask."""
    from matplotlib.colors import CSS4_COLORS, to_rgb

    rgb = np.zeros((len(vocabulary), 3), np.float32)
    is_colour = np.zeros(len(vocabulary), bool)
    for i, w in enumerate(vocabulary):
        if w in CSS4_COLORS:
            rgb[i] = to_rgb(CSS4_COLORS[w])
            is_colour[i] = True
    return rgb, is_colour


class WordGrounding(nn.Module):
    # softmax sharpness at the start: exp(3) = 20 per unit of squared RGB distance, so a block
    # whose colour is 0.3 closer than the grey table stands out by e^1.8 per cell and more
    INIT_LOG_SCALE = 3.0

    def __init__(self, d: int, cells: int, vocabulary: list[str], hidden: int = 32,
                 entity_words: Sequence[str] = ()):
        super().__init__()
        self.cells = cells
        rgb, is_colour = colour_prior(vocabulary)
        is_entity = is_colour | np.isin(np.array(vocabulary, dtype=object), list(entity_words))
        self.register_buffer("word_rgb", torch.from_numpy(rgb), persistent=False)
        self.register_buffer("word_is_colour", torch.from_numpy(is_colour), persistent=False)
        self.register_buffer("word_is_entity", torch.from_numpy(is_entity), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.features = 3 + hidden
        self.word_query = nn.Linear(d, self.features)        # for words that are not colour names
        self.log_scale = nn.Parameter(torch.tensor(self.INIT_LOG_SCALE))
        self.out = nn.Linear(3, d)
        self.relation = nn.Linear(10, d)
        ramp = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
        gy, gx = torch.meshgrid(ramp, ramp, indexing="ij")
        self.register_buffer("cell_uv", torch.stack([gx.flatten(), gy.flatten()], -1), persistent=False)

    def reset_parameters(self) -> None:
        """The colour side gets PyTorch's default init, its MLP output zero (plain RGB
        distance) and the scale INIT_LOG_SCALE (the model's small transformer init would make
        every word's attention uniform: no position, and no gradient to learn one). What is
        added to the words stays at the word embeddings' scale (std 0.02), so a word's
        identity is not drowned by its position."""
        for m in (*self.mlp, self.word_query):
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        for m in (self.out, self.relation):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        nn.init.constant_(self.log_scale, self.INIT_LOG_SCALE)

    def phi(self, rgb: torch.Tensor) -> torch.Tensor:
        return torch.cat([rgb, self.mlp(rgb)], dim=-1)

    def cell_colours(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) image in [0, 1] -> (B, cells * cells, 3) mean RGB per cell. No learned
        part: what a model caches per frame stays a fixed function of the image."""
        pooled = nn.functional.adaptive_avg_pool2d(rgb01, self.cells)             # (B, 3, c, c)
        return pooled.flatten(2).transpose(1, 2)

    def attention(self, word_ids: torch.Tensor, word_vecs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """word ids (N, L), embeddings (N, L, d), cell features phi(colours) (N, M, f) -> weights (N, L, M)."""
        colour = self.word_is_colour[word_ids].unsqueeze(-1)
        query = torch.where(colour, self.phi(self.word_rgb[word_ids]), self.word_query(word_vecs))
        # -|q - k|^2 up to the per-query |q|^2, which the softmax ignores
        logits = 2 * query @ cells.transpose(1, 2) - (cells * cells).sum(-1).unsqueeze(1)
        return torch.softmax(logits * self.log_scale.exp(), dim=-1)

    def locations(self, word_ids: torch.Tensor, word_vecs: torch.Tensor,
                  cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each word's attention lands: uv (N, L, 2) in [-1, 1] and peak (N, L, 1)."""
        a = self.attention(word_ids, word_vecs, cells)
        uv = (a @ self.cell_uv) * 2 - 1
        m = a.shape[-1]
        peak = torch.log(a.amax(dim=-1, keepdim=True) * m) / math.log(m)          # is it there at all?
        return uv, peak

    def forward(self, word_ids: torch.Tensor, word_vecs: torch.Tensor,
                cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One question per row, its last position the <answer>: word ids (N, L), embeddings
        (N, L, d), cell features phi(colours) (N, M, f) -> what to add to each position
        (N, L, d), and the question's two entities (N, ENTITY_FEATURES; `entities`)."""
        uv, peak = self.locations(word_ids, word_vecs, cells)
        return self._combine(word_ids, uv, peak)

    def forward_one_image(self, word_ids: torch.Tensor, embedding: nn.Embedding,
                          cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` for rows that all see one image (cells (1, M, f)), e.g. a recorded frame's
        many questions: a word's position depends only on the word and the image, so each
        distinct word is grounded once and gathered (same values, a fraction of the work)."""
        unique, inverse = torch.unique(word_ids, return_inverse=True)
        uv, peak = self.locations(unique[None], embedding(unique)[None], cells)
        return self._combine(word_ids, uv[0][inverse], peak[0][inverse])

    # what `entities` gives per question: uv_1, uv_2, peak_1, peak_2, named_1, named_2
    ENTITY_FEATURES = 8

    def entities(self, word_ids: torch.Tensor, uv: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        """Word ids (N, L), their uv (N, L, 2) and peak (N, L, 1) -> (N, 8): the first and
        second entity words' positions (0 where a question names fewer), peaks and whether
        they are named at all (masks, no indexing, so it traces)."""
        entity = self.word_is_entity[word_ids].to(uv.dtype)                        # (N, L)
        rank = torch.cumsum(entity, dim=1) * entity
        first, second = (rank == 1).to(uv.dtype).unsqueeze(-1), (rank == 2).to(uv.dtype).unsqueeze(-1)
        return torch.cat([(first * uv).sum(1), (second * uv).sum(1), (first * peak).sum(1),
                          (second * peak).sum(1), first.sum(1), second.sum(1)], dim=-1)

    def _combine(self, word_ids: torch.Tensor, uv: torch.Tensor,
                 peak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_word = self.out(torch.cat([uv, peak], dim=-1))
        # the first and second entity words are the question's entities
        entities = self.entities(word_ids, uv, peak)
        e1, e2, p1, p2 = entities[:, 0:2], entities[:, 2:4], entities[:, 4:5], entities[:, 5:6]
        rel = self.relation(torch.cat([e1, e2, e1 - e2, (e1 - e2).abs(), p1, p2], dim=-1))
        # to every word, not only the <answer>: the answer depends on the product of the
        # relation word and these features, which a word's own MLP forms in one step ("left"
        # + (u_1 - u_2)); the answer's first, uniform attention then already carries it
        return per_word + rel.unsqueeze(1), entities

    def locate(self, word_ids: torch.Tensor, word_vecs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(N, C) word ids, cell colours (N, M, 3) -> (N, C, 2) soft-argmax (u, v) in [0, 1] of
        what each word names."""
        return self.attention(word_ids, word_vecs, self.phi(cells)) @ self.cell_uv
