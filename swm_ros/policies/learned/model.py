"""A small flow-matching action-chunk policy (rectified flow), sized for a CPU.

    observation (image 64x64, proprio) + task features ──▶ conditioning c
    noise x_0 ~ N(0, I) of shape (chunk_length, action_dim) ──Euler, K steps of v(x_t, t, c)──▶ chunk

Image encoder: 3x3 convolutions (GroupNorm, SiLU; all but the last with stride 2) over RGB
plus two coordinate channels, FiLM-modulated by the task features from the second layer on,
so the features can follow the block the task names (RT-1 conditions its image encoder on
language the same way), then a spatial softmax: each channel becomes the expected (x, y) of
its activation (Levine et al. 2016; Diffusion Policy's encoder), the block and gripper
positions the actions depend on, which a CPU-sized model learns far faster than from a
flattened map.
With `position_roles` > 0 a linear head reads the task blocks' world positions from the
image features; training supervises it with privileged state (an auxiliary loss, as the
world model's grounding loss), which teaches the encoder to find the named block far faster
than the flow loss alone. Acting never uses the head.
Velocity network: an MLP over the flattened chunk with residual blocks, each FiLM-modulated
by c + an embedding of the flow time t.

Training (rectified flow, Liu et al. 2022; the flow-matching objective of pi0):
x_t = (1 - t) x_0 + t x_1 with x_1 a normalised expert chunk, target v = x_1 - x_0, MSE.
Inference integrates dx/dt = v from t = 0 to 1 in `inference_steps` Euler steps; different
noise draws give different, plausible chunks (`sample(..., n)`).
All inputs arrive normalised (processors.py); this module knows nothing about episodes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class FlowPolicyConfig:
    image_size: int = 64
    proprio_dim: int = 14
    task_dim: int = 13
    action_dim: int = 5
    chunk_length: int = 16
    conv_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])   # each halves the size
    image_features: int = 256
    cond_dim: int = 256
    hidden: int = 256
    blocks: int = 3
    time_features: int = 64
    inference_steps: int = 8
    position_roles: int = 0          # > 0: a head predicting this many task blocks' xyz (training aid)

    def __post_init__(self) -> None:
        if not self.conv_channels or self.image_size % (2 ** (len(self.conv_channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^{len(self.conv_channels) - 1}")
        for name in ("proprio_dim", "task_dim", "action_dim", "chunk_length", "image_features", "cond_dim",
                     "hidden", "blocks", "time_features", "inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.position_roles < 0:
            raise ValueError(f"position_roles must be >= 0, got {self.position_roles}")
        if self.time_features % 2:
            raise ValueError("time_features must be even")

    def to_dict(self) -> dict:
        return asdict(self)


def _coords(size: int) -> torch.Tensor:
    lin = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xx, yy])[None]            # (1, 2, size, size)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: FlowPolicyConfig) -> None:
        super().__init__()
        chans = [5, *cfg.conv_channels]
        last = len(cfg.conv_channels) - 1
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=1 if i == last else 2, padding=1)
                                   for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])))
        self.norms = nn.ModuleList(nn.GroupNorm(min(8, c), c) for c in cfg.conv_channels)
        self.films = nn.ModuleList(nn.Linear(cfg.task_dim, 2 * c) for c in cfg.conv_channels[1:])
        side = cfg.image_size // 2 ** last
        self.out = nn.Linear(2 * cfg.conv_channels[-1], cfg.image_features)
        self.register_buffer("coords", _coords(cfg.image_size), persistent=False)
        self.register_buffer("grid", _coords(side).flatten(2)[0], persistent=False)     # (2, side * side)

    def forward(self, images: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """images (B, H, W, 3) uint8 or float in [0, 255]; task (B, task_dim)."""
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], 1)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            if i > 0:
                scale, shift = self.films[i - 1](task)[:, :, None, None].chunk(2, 1)
                x = x * (1 + scale) + shift
            if i < len(self.convs) - 1:
                x = F.silu(x)
        attention = torch.softmax(x.flatten(2), -1)                      # (B, C, side * side)
        keypoints = torch.einsum("bcn,dn->bcd", attention, self.grid)    # expected (x, y) per channel
        return F.silu(self.out(keypoints.flatten(1)))


class FiLMBlock(nn.Module):
    def __init__(self, hidden: int, cond: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(cond, 2 * hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.fc2.weight)          # each block starts as the identity
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c).chunk(2, -1)
        x = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(F.silu(self.fc1(x)))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of flow time t in [0, 1], (B,) -> (B, dim)."""
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), dim // 2, device=t.device))   # 1 .. 1000 rad per unit t
    arg = t[:, None].float() * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], -1)


class FlowChunkPolicy(nn.Module):
    """Conditioning network + velocity network; see the module docstring."""

    def __init__(self, cfg: FlowPolicyConfig) -> None:
        super().__init__()
        self.config = cfg
        self.image = ImageEncoder(cfg)
        self.cond = nn.Sequential(
            nn.Linear(cfg.image_features + cfg.proprio_dim + cfg.task_dim, cfg.cond_dim), nn.SiLU(),
            nn.Linear(cfg.cond_dim, cfg.cond_dim))
        self.time = nn.Sequential(nn.Linear(cfg.time_features, cfg.cond_dim), nn.SiLU(),
                                  nn.Linear(cfg.cond_dim, cfg.cond_dim))
        flat = cfg.chunk_length * cfg.action_dim
        self.inp = nn.Linear(flat, cfg.hidden)
        self.blocks = nn.ModuleList(FiLMBlock(cfg.hidden, cfg.cond_dim) for _ in range(cfg.blocks))
        self.head = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.Linear(cfg.hidden, flat))
        self.positions = nn.Linear(cfg.image_features, 3 * cfg.position_roles) if cfg.position_roles else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def condition(self, images: torch.Tensor, proprio: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3), (B, proprio_dim), (B, task_dim) -> (B, cond_dim)."""
        return self.condition_and_positions(images, proprio, task)[0]

    def condition_and_positions(self, images: torch.Tensor, proprio: torch.Tensor, task: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The conditioning and, with a position head, the predicted (normalised) block
        positions (B, position_roles, 3); None without one."""
        features = self.image(images, task)
        cond = self.cond(torch.cat([features, proprio, task], -1))
        if self.positions is None:
            return cond, None
        return cond, self.positions(features).view(features.shape[0], -1, 3)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, chunk_length, action_dim) at flow time t (B,) -> dx/dt, same shape."""
        c = F.silu(cond + self.time(time_embedding(t, self.config.time_features)))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, c)
        return self.head(h).view_as(x)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None,
             samples_per_cond: int = 1) -> torch.Tensor:
        """Flow-matching MSE of normalised chunks `actions` (B, T, A); each conditioning is
        paired with `samples_per_cond` noise draws and flow times (cheap: the image is encoded once)."""
        k = int(samples_per_cond)
        cond, x1 = cond.repeat_interleave(k, 0), actions.repeat_interleave(k, 0)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device)
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
        return F.mse_loss(self.velocity(xt, t, cond), x1 - x0)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, n: int, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        """n chunks per conditioning row: cond (B, cond_dim) -> (B, n, T, A), normalised units."""
        steps = int(steps or self.config.inference_steps)
        b = cond.shape[0]
        c = cond.repeat_interleave(n, 0)
        x = torch.randn((b * n, self.config.chunk_length, self.config.action_dim), generator=generator,
                        device=cond.device)
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((b * n,), i * dt, device=cond.device)
            x = x + dt * self.velocity(x, t, c)
        return x.view(b, n, self.config.chunk_length, self.config.action_dim)
