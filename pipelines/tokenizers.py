"""In-memory tokenizers for offline models (no hub download): byte-level CLIP and a char T5."""

from __future__ import annotations

import itertools
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


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's byte-pair encoding of one word: merge the lowest-ranked adjacent pair until none is left."""
    while len(pieces) > 1:
        pairs = set(itertools.pairwise(pieces))
        best = min(pairs, key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


def word_clip_tokenizer(words: list[str], max_length: int = 32) -> CLIPTokenizer:
    """Byte-level CLIP tokenizer plus whole-word tokens for ``words`` (each word one token).

    Each word gets the merges that join what the merges made so far leave of it, left to right,
    ranked after them, so every word ends as one token whatever substrings the words share (spelling
    each word out letter by letter from scratch does not: "right" adds the merge r+i, which then
    splits "triangle" into t, ri, a, n, g, l, e). Any other text still tokenizes byte by byte.
    Used by the reference models' small vocabulary.
    """
    vocab = _byte_vocab(["<|startoftext|>", "<|endoftext|>"])
    for char in bytes_to_unicode().values():
        vocab[char + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted({w.lower() for w in words}):
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces = _bpe(pieces, ranks)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)  # type: ignore[arg-type]


def word_t5_tokenizer(words: list[str], max_length: int = 24) -> T5Tokenizer:
    """Unigram T5 tokenizer where each of ``words`` is one piece; other text falls back to chars."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    pieces += [("▁" + w.lower(), -1.0) for w in sorted(set(words))]
    pieces += [(c, -10.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)
