"""The world-model protocol: yes/no answers about the future from an image and an action chunk.

Every backend is a `WorldModel` (an `nn.Module`). The one call planners and evaluation use:

    logits = model.answer_logits(images, actions, questions)      # (B, Q, 2): [no, yes]

- images: (B, H, W, 3) uint8 (0..255) or float (0..1), tensor or numpy array, already
  processed: raw camera frames go through `model.process_frames` first (the crop + resize
  the training data went through, carried in the checkpoint);
- actions: (B, T, ACTION_DIM) float; T may be 0 ("now" questions); `action_mask` (B, T) bool
  marks the real steps of a padded batch (True = real);
- questions: a list of Q question strings asked of every row, or pre-tokenised ids from
  `model.tokenize(...)` of shape (Q, L) (shared) or (B, Q, L) (one set per row).
- proprio (optional): (B or 1, P) the robot's state at the image; a model that
  `reads_proprio` (tiny with `proprio_dim`) needs it, every other backend ignores it. A
  backend implements `answer_logits_from_features(features, actions, tokens, action_mask=None,
  proprio=None)`.

The logits are differentiable with respect to `actions`. To score many candidate chunks for
one image cheaply, encode the image once and reuse the features:

    feats = model.encode_image(image[None])                       # (1, N, D), cached
    q = model.tokenize(questions)                                 # (Q, L), cached
    logits = model.answer_logits_from_features(feats, chunks, q)  # (C, Q, 2) for C candidates

A planner asking the same questions many times also caches `model.prepare_questions(feats, q)`
and passes that in place of `q`.

Features with batch 1 broadcast over the candidates. `p_yes` is softmax(logits)[..., 1].
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.text import Tokenizer
from swm_ros.processing.image import ImageProcessor

Question = str
Questions = Union[Sequence[Question], torch.Tensor]
NO_INDEX, YES_INDEX = 0, 1          # order of the last logits axis


def frames_to_tensor(images: torch.Tensor | np.ndarray, size: int, device: torch.device | str,
                     antialias: bool | None = None, mode: str = "bilinear") -> torch.Tensor:
    """(B, H, W, 3) uint8 (0..255) or float (0..1) frames -> (B, 3, size, size) float in [0, 1]
    on `device`, resized with `mode` when needed; `antialias` None: only when shrinking."""
    x = torch.as_tensor(images)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3), got {tuple(x.shape)}")
    x = x.to(device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        shrink = x.shape[-1] > size
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False,
                          antialias=shrink if antialias is None else antialias)
        if mode == "bicubic":
            x = x.clamp(0.0, 1.0)                  # bicubic overshoots at edges
    return x


class WorldModel(nn.Module, abc.ABC):
    """Base class of world-model backends (see the module docstring for the contract)."""

    backend: ClassVar[str] = ""
    action_dim: int = ACTION_DIM

    def __init__(self, tokenizer: Tokenizer, max_question_len: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.max_question_len = int(max_question_len)
        # raw camera frame -> model input (crop + resize), from the training data; None: as given
        self.image_processor: ImageProcessor | None = None

    def processor_config(self) -> dict[str, Any] | None:
        """The image processor's config as checkpoints and SAQA files record it; None without one."""
        return self.image_processor.config.to_dict() if self.image_processor is not None else None

    def process_frames(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Raw (N, H, W, 3) uint8 camera frames -> the (N, S, S, 3) frames this model was trained on.

        Nodes and planners call this on camera images; training data is stored processed."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if self.image_processor is None:
            return frames
        return self.image_processor.batch(frames)

    # ---- to implement -----------------------------------------------------------------
    @abc.abstractmethod
    def encode_image(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) images -> image features, batch first (reusable across candidates)."""

    @abc.abstractmethod
    def answer_logits_from_features(self, features: torch.Tensor, actions: torch.Tensor,
                                    question_tokens: torch.Tensor,
                                    action_mask: torch.Tensor | None = None,
                                    proprio: torch.Tensor | None = None) -> torch.Tensor:
        """features (B or 1, ...), actions (B, T, A), tokens (Q, L) or (B, Q, L) -> (B, Q, 2).
        `proprio` (B or 1, P): the robot's state at the image, read by a model that
        `reads_proprio` (and required by it), ignored by the others."""

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """The model config as plain data (saved in checkpoints)."""

    # ---- shared -----------------------------------------------------------------------
    def prepare_questions(self, features: torch.Tensor, question_tokens: torch.Tensor) -> Any:
        """Questions (Q, L) in the form `answer_logits_from_features` takes fastest for these
        features, for callers that ask them many times of one frame (planners). By default
        the tokens themselves; a backend may embed them once here (tiny, effnet)."""
        return question_tokens

    def tokenize(self, questions: Questions) -> torch.Tensor:
        """Question strings -> (Q, L) ids; tensors pass through."""
        if isinstance(questions, torch.Tensor):
            return questions.to(torch.int64)
        if isinstance(questions, str):
            questions = [questions]
        return self.tokenizer.encode(list(questions), self.max_question_len)

    def answer_logits(self, images: torch.Tensor | np.ndarray, actions: torch.Tensor | np.ndarray,
                      questions: Questions, action_mask: torch.Tensor | np.ndarray | None = None,
                      proprio: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """(B, Q, 2) logits for [no, yes]."""
        actions = torch.as_tensor(actions, dtype=torch.float32) if not isinstance(actions, torch.Tensor) else actions
        if action_mask is not None and not isinstance(action_mask, torch.Tensor):
            action_mask = torch.as_tensor(action_mask, dtype=torch.bool)
        if proprio is not None and not isinstance(proprio, torch.Tensor):
            proprio = torch.as_tensor(proprio, dtype=torch.float32)
        return self.answer_logits_from_features(self.encode_image(images), actions, self.tokenize(questions),
                                                action_mask, proprio)

    def p_yes(self, images, actions, questions: Questions, action_mask=None) -> torch.Tensor:
        """(B, Q) probability of "yes"."""
        return self.answer_logits(images, actions, questions, action_mask).softmax(-1)[..., YES_INDEX]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def reads_proprio(self) -> bool:
        """Whether answering needs the robot's proprioception too (tiny's `proprio_dim`): callers
        then must pass `proprio` to `answer_logits_from_features`."""
        return getattr(self, "proprio", None) is not None

    @property
    def vocabulary(self) -> list[str]:
        return self.tokenizer.vocabulary
