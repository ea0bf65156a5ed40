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


def word_clip_tokenizer(words: list[str], max_length: int = 32) -> CLIPTokenizer:
    """Byte-level CLIP tokenizer plus whole-word tokens for ``words`` (each word one token).

    The merges spell every word left to right, so known words become single tokens while any
    other text still tokenizes byte by byte. Used by the reference models' small vocabulary.
    """
    vocab = _byte_vocab(["<|startoftext|>", "<|endoftext|>"])
    for char in bytes_to_unicode().values():
        vocab[char + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in sorted({w.lower() for w in words}):
        parts = [*word[:-1], word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merged = left + right
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((left, right))
            left = merged
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)  # type: ignore[arg-type]


def word_t5_tokenizer(words: list[str], max_length: int = 24) -> T5Tokenizer:
    """Unigram T5 tokenizer where each of ``words`` is one piece; other text falls back to chars."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    pieces += [("▁" + w.lower(), -1.0) for w in sorted(set(words))]
    pieces += [(c, -10.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)
