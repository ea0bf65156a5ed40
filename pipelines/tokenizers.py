"""In-memory tokenizers for offline models (no hub download): byte-level CLIP and a char T5."""

from __future__ import annotations

import string

from transformers import CLIPTokenizer, T5Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode


def _byte_vocab(specials: list[str]) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(specials)}
    for char in bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
    return vocab


def byte_clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """CLIP tokenizer over single bytes (514 tokens, no merges)."""
    vocab = _byte_vocab(["<|startoftext|>", "<|endoftext|>"])
    for char in bytes_to_unicode().values():
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def char_t5_tokenizer(max_length: int = 120) -> T5Tokenizer:
    """Unigram T5 tokenizer over ASCII letters, digits and punctuation."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -4.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)
