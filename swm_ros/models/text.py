"""Word-level tokenizer for world-model questions.

The model reads questions as text tokens, as a VLM does, but from a small closed vocabulary
built from the SAQA family phrasings, direction phrases, colour and object words. The
vocabulary is saved with every checkpoint, so a model always decodes with the words it was
trained on; a word outside it maps to ``<unk>``.

    tok = Tokenizer.default()
    tok.encode(["Is the red block touching the green block?"], max_len=24)  # (1, 24) int64
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

PAD, UNK, ANSWER = "<pad>", "<unk>", "<answer>"
SPECIALS: tuple[str, ...] = (PAD, UNK, ANSWER)
YES, NO = "yes", "no"

# colour words of the nominal and OOD scene variants (swm_ros.envs.variants) and a few more
COLOR_WORDS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink",
                                "black", "white", "gray", "grey", "brown")
OBJECT_WORDS: tuple[str, ...] = ("block", "blocks", "cube", "cylinder", "distractor", "peg", "object")

_WORD = re.compile(r"[a-z0-9]+|'s|\?")


def words(text: str) -> list[str]:
    """Lower-cased words, "'s" and "?" as tokens of their own."""
    return _WORD.findall(text.lower())


def default_vocabulary() -> list[str]:
    """Specials, then the sorted words of every family phrasing, direction phrase, colour and object word."""
    from swm_ros.saqa.families import FAMILIES

    vocab: set[str] = {YES, NO, *COLOR_WORDS, *OBJECT_WORDS}
    for fam in FAMILIES:
        for template in fam.phrasings:
            vocab.update(words(re.sub(r"\{[a-z]+\}", " ", template)))
        for phrases in fam.direction_words.values():
            for p in phrases:
                vocab.update(words(p))
    return list(SPECIALS) + sorted(vocab)


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary; id 0 is padding."""

    def __init__(self, vocabulary: Sequence[str]):
        vocab = list(vocabulary)
        if tuple(vocab[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {vocab[:len(SPECIALS)]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate words")
        for w in (YES, NO):
            if w not in vocab:
                raise ValueError(f"vocabulary lacks the answer word {w!r}")
        self.vocabulary = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.unk_id, self.answer_id = 0, self.ids[UNK], self.ids[ANSWER]
        self.yes_id, self.no_id = self.ids[YES], self.ids[NO]

    @classmethod
    def default(cls) -> "Tokenizer":
        return cls(default_vocabulary())

    def __len__(self) -> int:
        return len(self.vocabulary)

    def encode_one(self, text: str) -> list[int]:
        return [self.ids.get(w, self.unk_id) for w in words(text)]

    def encode(self, texts: str | Iterable[str], max_len: int) -> torch.Tensor:
        """(N, max_len) int64 ids, right-padded with 0; longer questions are truncated."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode_one(t)[:max_len] for t in texts]
        out = torch.zeros((len(rows), max_len), dtype=torch.int64)
        for i, r in enumerate(rows):
            if r:
                out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocabulary[int(i)] for i in ids if int(i) != self.pad_id)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words(text) if w not in self.ids]
