"""Text datasets on the worker's side: the built-in corpora tokenized and cached (no Django).

A text dataset is named by a key: the corpus, and for byte-level BPE its vocabulary size
("addition", "python:bpe512"). Its cache is the same kind of file as an image set's (a `torch.save` of
plain data, read with weights_only=True; see buildx_runtime.text_cache): the token stream, the split
positions and the tokenizer, so that the tokenizer always travels with the tokens it made.

BPE is trained with the `tokenizers` library (GPT-2's byte-level scheme) on the training part only, and
stored as byte strings and merges, which buildx_runtime.Tokenizer decodes and encodes without the library.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import corpus_facts

CACHE_VERSION = rt.TEXT_CACHE_VERSION


dataset_key = corpus_facts.dataset_key
parse_key = corpus_facts.parse_key


def is_text(key: str) -> bool:
    return parse_key(key) is not None


def cache_path(key: str, *, cache_dir: Path) -> Path:
    name, tokenizer, vocab = parse_key(key) or (key, "char", None)
    suffix = "char" if tokenizer == "char" else f"bpe{vocab}"
    return Path(cache_dir) / f"text-{name}-{suffix}-v{CACHE_VERSION}.pt"


@cache
def _bytes_of_symbol() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte in a BPE token."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _symbol_bytes(token: str) -> bytes:
    table = _bytes_of_symbol()
    return bytes(table[ch] for ch in token)


def train_bpe(text: str, *, vocab_size: int) -> tuple[rt.Tokenizer, Any]:
    """A byte-level BPE trained on `text`: (the runtime's Tokenizer, the library's, for fast encoding)."""
    from tokenizers import ByteLevelBPETokenizer  # only the worker that builds a BPE cache needs it

    library = ByteLevelBPETokenizer()
    library.train_from_iterator([text], vocab_size=vocab_size, min_frequency=2, show_progress=False)
    vocab = library.get_vocab()  # symbol string -> id
    pieces = [""] * len(vocab)
    for symbol, index in vocab.items():
        pieces[index] = _symbol_bytes(symbol).hex()
    model = json.loads(library.to_str())["model"]
    merges = []
    for merge in model.get("merges", []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merges.append(f"{_symbol_bytes(left).hex()} {_symbol_bytes(right).hex()}")
    return rt.Tokenizer(kind="bpe", pieces=pieces, merges=merges), library


def build(key: str) -> dict[str, Any]:
    """The cache's content for a text dataset key (the Python corpus is read from this Python's library)."""
    parsed = parse_key(key)
    if parsed is None:
        raise ValueError(f"{key!r} names no text dataset")
    name, tokenizer, vocab = parsed
    text = rt.CORPUS_TEXT[name]()
    if tokenizer == "char":
        return rt.text_cache(name, text, rt.Tokenizer(kind="char", alphabet=rt.CORPUS_ALPHABETS[name]))
    val_at, _test_at = rt.split_points(text)
    ours, library = train_bpe(text[:val_at], vocab_size=int(vocab or 512))
    return rt.text_cache(name, text, ours, encode=lambda part: library.encode(part).ids)


def ensure_text_cache(key: str, *, cache_dir: Path, force: bool = False) -> Path:
    """The text dataset's cache file, built (atomically) on first use."""
    path = cache_path(key, cache_dir=cache_dir)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(build(key), tmp)
    os.replace(tmp, path)
    return path


def training_text_cache(path: Path) -> Path:
    """The cache without its test tokens, beside it (made once): what a training child gets."""
    path = Path(path)
    info = path.stat()
    out = path.with_name(f"{path.stem}.train-{info.st_size:x}-{int(info.st_mtime_ns):x}.pt")
    if out.exists():
        return out
    data = rt.load_cache(path)
    test_start = data["splits"]["test"][0]
    trimmed = dict(data)
    trimmed["tokens"] = data["tokens"][:test_start].clone()
    trimmed["splits"] = {k: v for k, v in data["splits"].items() if k != "test"}
    for old in path.parent.glob(f"{path.stem}.train-*.pt"):
        if old != out:
            old.unlink(missing_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.save(trimmed, tmp)
    os.replace(tmp, out)
    return out
