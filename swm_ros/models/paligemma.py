"""`paligemma`: the paper's world model, `transformers` PaliGemma with an action projector.

Prompt, as in the SWM reference implementation (image tokens, then one token per action
step, then the question; the whole prompt is a bidirectional prefix):

    <image> x N   <action> x T   <bos> question \\n     -> next token: "yes" / "no"

- image tokens: PaliGemma's SigLIP tower + multimodal projector (`get_image_features`);
- action tokens: `Linear(action_dim -> hidden)` (the action projector), one embedding per
  step, placed at the `<action>` positions. The embeddings are concatenated in prompt order,
  which is the same as embedding the prompt ids and scattering image features and action
  embeddings into the placeholder positions, as the reference does; padded steps
  (`action_mask` False) are left out of attention and of the position ids, so a padded chunk
  gives the same answer as the unpadded one;
- answer: the language head's logits of the tokens "no" and "yes" at the last prompt
  position (the `\\n`), i.e. p(yes) vs p(no) of the next token.

Two ways to build it:

- `pretrained_path: /path/to/paligemma-3b-pt-224` (a directory a user has on disk, e.g. from
  `huggingface-cli download google/paligemma-3b-pt-224`): weights, tokenizer and image
  normalisation come from there with `local_files_only=True` (nothing is downloaded).
  `<action>` is added to the tokenizer as a special token (embedding rows are added only if
  the vocabulary has no room). Questions are tokenised with that tokenizer.
- `pretrained_path: null`: a randomly initialised PaliGemma of the sizes in this config (the
  `vision_*` and `text_*` keys), for tests and CPU experiments. Its vocabulary is the project's
  word vocabulary (`text.Tokenizer`, saved with the checkpoint) followed by
  `<image> <action> <bos> <sep>`; `<sep>` stands for the `\\n`.

`lora: true` wraps the PaliGemma model with `peft` LoRA adapters on `lora_targets` (default
the q/v projections, of both towers) and freezes its other weights; the action projector is
always trained. Checkpoints (`swm_ros.models.checkpoint`) hold what training can change: with
pretrained weights the trainable tensors (action projector + LoRA, or all of them when
fine-tuning fully), which load on top of the weights at `pretrained_path`; for a random
model, everything.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from swm_ros.envs.base import ACTION_DIM
from swm_ros.models.base import Questions, WorldModel, frames_to_tensor
from swm_ros.models.text import Tokenizer

ACTION_TOKEN = "<action>"
# appended to the project vocabulary for a random (pretrained_path: null) model
EXTRA_TOKENS: tuple[str, ...] = ("<image>", ACTION_TOKEN, "<bos>", "<sep>")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class PaliGemmaWMConfig:
    pretrained_path: str | None = None   # local PaliGemma directory; None: random model of the sizes below
    dtype: str = "float32"               # float32 | bfloat16 | float16 (the PaliGemma weights)
    lora: bool = False                   # LoRA adapters via peft (the base weights are then frozen)
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    freeze_vision: bool = False          # without LoRA: keep the SigLIP tower fixed
    gradient_checkpointing: bool = False
    max_steps: int = 64                  # longest action chunk
    max_question_len: int = 24           # question tokens (words or sub-words), without <bos> and \n
    action_dim: int = ACTION_DIM
    # sizes of the random model (ignored with pretrained_path)
    image_size: int = 64
    patch_size: int = 16
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden_size: int = 64
    text_intermediate_size: int = 128
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1
    text_head_dim: int = 32

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError("vision_hidden_size must be divisible by vision_heads")
        if self.text_heads % self.text_kv_heads:
            raise ValueError("text_heads must be a multiple of text_kv_heads")
        for name in ("max_steps", "max_question_len", "action_dim", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


def random_paligemma_config(cfg: PaliGemmaWMConfig, vocab_size: int, image_token_id: int):
    """A `transformers.PaliGemmaConfig` of the sizes in `cfg` (random weights, no download)."""
    from transformers import PaliGemmaConfig

    vision = dict(model_type="siglip_vision_model", hidden_size=cfg.vision_hidden_size,
                  intermediate_size=cfg.vision_intermediate_size, num_hidden_layers=cfg.vision_layers,
                  num_attention_heads=cfg.vision_heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
                  vision_use_head=False)
    n_img = (cfg.image_size // cfg.patch_size) ** 2
    text = dict(model_type="gemma", vocab_size=vocab_size, hidden_size=cfg.text_hidden_size,
                intermediate_size=cfg.text_intermediate_size, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_kv_heads,
                head_dim=cfg.text_head_dim, pad_token_id=0,
                max_position_embeddings=max(512, n_img + cfg.max_steps + cfg.max_question_len + 8))
    return PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                           vocab_size=vocab_size, projection_dim=cfg.text_hidden_size,
                           hidden_size=cfg.text_hidden_size)


class WordPrompt:
    """Question -> `<bos> words <sep>` ids over the project vocabulary + EXTRA_TOKENS (random model)."""

    def __init__(self, tokenizer: Tokenizer):
        self.words = tokenizer
        base = len(tokenizer)
        self.vocab_size = base + len(EXTRA_TOKENS)
        self.image_id, self.action_id, self.bos_id, self.sep_id = range(base, base + len(EXTRA_TOKENS))
        self.pad_id, self.yes_id, self.no_id = tokenizer.pad_id, tokenizer.yes_id, tokenizer.no_id

    def question_ids(self, question: str, max_len: int) -> list[int]:
        return [self.bos_id, *self.words.encode_one(question)[:max_len], self.sep_id]


class HFPrompt:
    """Question -> `<bos> question \\n` ids with a PaliGemma (Gemma) tokenizer from a local directory."""

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        if ACTION_TOKEN not in hf_tokenizer.get_vocab():
            hf_tokenizer.add_special_tokens({"additional_special_tokens": [ACTION_TOKEN]})
        self.vocab_size = len(hf_tokenizer)
        self.action_id = hf_tokenizer.convert_tokens_to_ids(ACTION_TOKEN)
        self.bos_id = hf_tokenizer.bos_token_id
        self.pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        if self.bos_id is None:
            raise ValueError("the PaliGemma tokenizer has no <bos> token")
        self.yes_id, self.no_id = self._single("yes"), self._single("no")

    def _single(self, word: str) -> int:
        ids = self.hf.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the tokenizer splits the answer word {word!r} into {len(ids)} tokens")
        return ids[0]

    def question_ids(self, question: str, max_len: int) -> list[int]:
        body = self.hf.encode(question, add_special_tokens=False)[:max_len]
        return [self.bos_id, *body, *self.hf.encode("\n", add_special_tokens=False)]


class PaliGemmaWorldModel(WorldModel):
    backend = "paligemma"

    def __init__(self, config: PaliGemmaWMConfig | None = None, tokenizer: Tokenizer | None = None):
        from transformers import PaliGemmaForConditionalGeneration

        config = config or PaliGemmaWMConfig()
        tokenizer = tokenizer or Tokenizer.default()
        super().__init__(tokenizer, config.max_question_len)
        self.config = config
        self.action_dim = config.action_dim
        dtype = DTYPES[config.dtype]
        mean, std = [0.5] * 3, [0.5] * 3               # SigLIP's normalisation
        if config.pretrained_path is None:
            self.prompt: WordPrompt | HFPrompt = WordPrompt(tokenizer)
            vlm = PaliGemmaForConditionalGeneration(
                random_paligemma_config(config, self.prompt.vocab_size, self.prompt.image_id)).to(dtype)
        else:
            from transformers import AutoTokenizer

            path = Path(config.pretrained_path).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no PaliGemma model at {path} (config.json missing); pretrained_path "
                                        f"must be a local directory, nothing is downloaded")
            vlm = PaliGemmaForConditionalGeneration.from_pretrained(str(path), local_files_only=True, dtype=dtype)
            self.prompt = HFPrompt(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
            if self.prompt.vocab_size > vlm.get_input_embeddings().num_embeddings:
                vlm.resize_token_embeddings(self.prompt.vocab_size, pad_to_multiple_of=64, mean_resizing=False)
            pre = path / "preprocessor_config.json"
            if pre.is_file():
                p = json.loads(pre.read_text())
                mean, std = p.get("image_mean", mean), p.get("image_std", std)
        vlm.config.use_cache = False
        self.image_size = int(vlm.config.vision_config.image_size)
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        hidden = vlm.config.text_config.hidden_size
        self.softcap = getattr(vlm.config.text_config, "final_logit_softcapping", None)

        if config.lora:
            from peft import LoraConfig, get_peft_model

            vlm = get_peft_model(vlm, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout,
                                                 target_modules=list(config.lora_targets)))
        elif config.freeze_vision:
            vlm.model.vision_tower.requires_grad_(False)
        if config.gradient_checkpointing:
            vlm.gradient_checkpointing_enable()
        self.vlm = vlm
        self.action_proj = nn.Linear(config.action_dim, hidden).to(dtype)   # the paper's action projector
        nn.init.normal_(self.action_proj.weight, std=0.2)
        nn.init.zeros_(self.action_proj.bias)
        self.register_buffer("answer_ids", torch.tensor([self.prompt.no_id, self.prompt.yes_id]), persistent=False)

    @property
    def paligemma(self):
        """The `PaliGemmaForConditionalGeneration` (inside the peft wrapper with LoRA)."""
        return self.vlm.get_base_model() if self.config.lora else self.vlm

    @property
    def dtype(self) -> torch.dtype:
        return self.action_proj.weight.dtype

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: everything for a random model, else the trainable tensors
        (loaded on top of the weights at `pretrained_path`)."""
        state = self.state_dict()
        if self.config.pretrained_path is None:
            return state
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in state.items() if k in trainable}

    # ---- text -------------------------------------------------------------------------
    def tokenize(self, questions: Questions) -> torch.Tensor:
        """Questions -> (Q, L) prompt-tail ids `<bos> question \\n`, right-padded; tensors pass through."""
        if isinstance(questions, torch.Tensor):
            return questions.to(torch.int64)
        if isinstance(questions, str):
            questions = [questions]
        rows = [self.prompt.question_ids(q, self.max_question_len) for q in questions]
        out = torch.full((len(rows), max((len(r) for r in rows), default=1)), self.prompt.pad_id, dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
        return out

    # ---- image ------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 / float in [0, 1] -> (B, 3, S, S) normalised for SigLIP."""
        x = frames_to_tensor(images, self.image_size, self.image_mean.device, mode="bicubic")
        return ((x - self.image_mean) / self.image_std).to(self.dtype)

    def encode_image(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) -> (B, N, hidden) image token embeddings (SigLIP + projector)."""
        return self.paligemma.model.get_image_features(self.preprocess(images)).pooler_output

    # ---- joint ------------------------------------------------------------------------
    def answer_logits_from_features(self, features: torch.Tensor, actions: torch.Tensor,
                                    question_tokens: torch.Tensor,
                                    action_mask: torch.Tensor | None = None,
                                    proprio: torch.Tensor | None = None) -> torch.Tensor:
        # `proprio` is ignored: the paper's model reads the image, the actions and the question
        c = self.config
        pg = self.paligemma
        device = features.device
        actions = torch.as_tensor(actions).to(device, self.dtype)
        if actions.dim() != 3 or actions.shape[-1] != c.action_dim:
            raise ValueError(f"actions must be (B, T, {c.action_dim}), got {tuple(actions.shape)}")
        b, t = actions.shape[0], actions.shape[1]
        if t > c.max_steps:
            raise ValueError(f"{t} action steps > max_steps {c.max_steps} of this model")
        if features.dim() != 3 or features.shape[0] not in (1, b):
            raise ValueError(f"features must be (1 or {b}, N, hidden) from encode_image, got {tuple(features.shape)}")
        tok = question_tokens.to(device, torch.int64)
        if tok.dim() == 2:
            tok = tok.unsqueeze(0).expand(b, -1, -1)
        if tok.dim() != 3 or tok.shape[0] != b:
            raise ValueError(f"question tokens must be (Q, L) or ({b}, Q, L), got {tuple(question_tokens.shape)}")
        q, length = tok.shape[1], tok.shape[2]
        if length > c.max_question_len + 3:
            raise ValueError(f"question tokens have length {length} > max_question_len {c.max_question_len} + 3")
        if action_mask is None:
            action_mask = torch.ones(b, t, dtype=torch.bool, device=device)
        action_mask = action_mask.to(device, torch.bool)
        n_img, hidden = features.shape[1], features.shape[2]

        # prompt embeddings: <image> x N, <action> x T, <bos> question \n (right-padded)
        img = features.to(self.dtype).expand(b, -1, -1).unsqueeze(1).expand(b, q, n_img, hidden)
        act = self.action_proj(actions).unsqueeze(1).expand(b, q, t, hidden)
        txt = pg.get_input_embeddings()(tok)
        x = torch.cat([img, act, txt], dim=2).reshape(b * q, n_img + t + length, hidden)
        text_real = tok != self.prompt.pad_id
        keep = torch.cat([torch.ones(b, q, n_img, dtype=torch.bool, device=device),
                          action_mask.unsqueeze(1).expand(b, q, t), text_real], dim=2).reshape(b * q, -1)
        position_ids = keep.long().cumsum(-1).clamp(min=1)          # PaliGemma positions start at 1
        out = pg.model(inputs_embeds=x, attention_mask=keep.long(), position_ids=position_ids,
                       token_type_ids=torch.zeros_like(position_ids), use_cache=False)   # all prefix: bidirectional
        last = (n_img + t + text_real.sum(-1) - 1).reshape(b * q)   # the "\n" position of each row
        h = out.last_hidden_state[torch.arange(b * q, device=device), last]
        logits = h @ pg.lm_head.weight[self.answer_ids].t()           # LM head rows of "no", "yes"
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float().reshape(b, q, 2)
