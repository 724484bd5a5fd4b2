"""Hand paths for the `tiny` world model: where each action step sends the hand, relative to
the blocks a question names.

Most of what the model gets wrong is dynamics over long horizons ("closer", "grasped",
"moved" 40 steps ahead): whether the commanded path of the hand passes through the block the
question is about. The action tokens carry where the hand has been sent (`action_sums`, in
action units) and the question words where the blocks are (grounding, in frame coordinates);
relating the two is left to attention across tokens, which averages. The same comparison
decides a planner's choice between chunks proposed from one state, which differ only in that
path. So each action token also gets, per question,

    hand(t)   = gripper_uv + M sum_{s<=t} a_s[:3]         M (2x3): action units -> frame, learned
    rel_k(t)  = hand(t) - entity_k_uv                      k = the question's first two entities
    token    += mlp([sum_{s<=t} a_s, rel_1, rel_2, |rel_1|, |rel_2|, peaks, named])

with gripper_uv where the grounding finds "gripper" and the entities as the grounding finds
them (grounding.py). The MLP's output layer starts at zero, so a model grown from a
checkpoint without hand paths answers as that checkpoint did (train `init_from`).
"""
from __future__ import annotations

import torch
from torch import nn

from .grounding import WordGrounding


class HandPaths(nn.Module):
    def __init__(self, action_dim: int, d: int, hidden: int = 64):
        super().__init__()
        self.to_frame = nn.Linear(3, 2, bias=False)
        inputs = action_dim + 2 + 2 + 2 + (WordGrounding.ENTITY_FEATURES - 4)
        self.mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, d))

    def reset_parameters(self) -> None:
        """M at zero (the relative offsets start as the frame's gripper-to-block offsets), the
        hidden layer PyTorch's default, the output zero: adds nothing until trained."""
        nn.init.zeros_(self.to_frame.weight)
        self.mlp[0].reset_parameters()
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @staticmethod
    def anchors(gripper_uv: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        """Gripper position per frame (F, 2) and the questions' `WordGrounding.entities` (R, Q, 8),
        F = R or 1 -> (R, Q, 8): the gripper's offset from each entity, then the entities'
        peaks and named flags."""
        g = gripper_uv.unsqueeze(1).expand(entities.shape[0], entities.shape[1], 2)
        return torch.cat([g - entities[..., 0:2], g - entities[..., 2:4], entities[..., 4:]], dim=-1)

    def forward(self, sums: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Running action sums (B, T, A) and per-question anchors (B or 1, Q, 8) -> what to add
        to each question's action tokens (B, Q, T, d)."""
        return self.mlp(self.features(sums, anchors))

    def features(self, sums: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(B, T, A), (B or 1, Q, 8) -> the MLP's input (B, Q, T, A + 10): sums, rel_1, rel_2,
        |rel_1|, |rel_2|, peaks, named."""
        b, t = sums.shape[0], sums.shape[1]
        q = anchors.shape[1]
        hand = self.to_frame(sums[..., :3]).unsqueeze(1)                       # (B, 1, T, 2)
        anchors = anchors.unsqueeze(2)                                          # (B|1, Q, 1, 8)
        rel1, rel2 = anchors[..., 0:2] + hand, anchors[..., 2:4] + hand          # (B, Q, T, 2)
        # smooth at zero, where a path through the block's centre would make the norm's gradient NaN
        dist1 = torch.sqrt((rel1 * rel1).sum(-1, keepdim=True) + 1e-6)
        dist2 = torch.sqrt((rel2 * rel2).sum(-1, keepdim=True) + 1e-6)
        x = torch.cat([sums.unsqueeze(1).expand(b, q, t, -1), rel1, rel2, dist1, dist2,
                       anchors[..., 4:].expand(b, q, t, -1)], dim=-1)
        return x
