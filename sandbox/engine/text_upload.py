"""A user's plain-text upload, checked and tokenised into the text cache the built-in corpora use (no Django).

The file is hostile input: it is read as bytes, bounded by the size the server takes, and never
decompressed, parsed as anything but UTF-8, or written anywhere but the one cache file. What comes out is
the same `torch.save` of plain data as `corpora.build` makes (tokens, split by position at line starts,
and the tokenizer), so a run, the trusted evaluation and generation read an upload exactly as they read
a built-in corpus.

Two sides use it. The check's box (engine/check_text.py) reads the text and tokenises it (`read_text`,
`tokenise`: the tokenizers library trains a BPE on the hostile text there, never in the worker). The worker
(sandbox/text_check.py) reads the text again with `read_text` (bounded bytes, CPython's strict UTF-8
decoder: no third-party parser), checks the box's tokens against it, and builds and writes the cache
itself (`cache_from_tokens`, `text_facts`, `write_cache`).

A problem is an answer, not an exception: `read_text` and `tokenise` raise `TextRejected` with the code,
an English message and its parameters (the library app writes the messages it shows from the code).
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import corpora

TOKENIZERS = ("char", "bpe")
SAMPLE_CHARS = 600  # what the dataset page shows of the text
PROMPT_CHARS = 12  # the run page's samples start from the first characters of the training text


@dataclass(frozen=True)
class TextLimits:
    max_bytes: int = 16 * 2**20  # the file
    min_chars: int = 2_000  # less does not fill a validation and a test part worth the name
    max_char_vocab: int = 4_096  # distinct characters a character-level tokenizer takes (Korean text: ~2,000)
    min_split_tokens: int = (
        65  # each of the validation and test parts: one window of 64 tokens and its target
    )


@dataclass(frozen=True)
class TextProblem:
    code: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"entry": "", "code": self.code, "message": self.message, "params": dict(self.params)}


class TextRejected(Exception):
    def __init__(self, problem: TextProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True)
class TextDataset:
    """What the dataset page and validation show of a checked text."""

    tokenizer: str
    vocab_size: int
    chars: int
    lines: int
    tokens: dict[str, int]  # train, val, test
    sample: str
    prompt: str
    alphabet: str  # the character tokenizer's vocabulary ("" for BPE)
    content_hash: str


def read_text(path: Path, *, limits: TextLimits) -> str:
    """The file's text (BOM dropped, line ends made "\\n"), or TextRejected with the first problem found."""
    with open(path, "rb") as f:
        raw = f.read(limits.max_bytes + 1)  # never more than the limit, whatever the file claims
    if len(raw) > limits.max_bytes:
        raise TextRejected(
            TextProblem(
                "too_large",
                f"The file is larger than {limits.max_bytes // 2**20} MB.",
                {"max_mb": limits.max_bytes // 2**20},
            )
        )
    if not raw.strip():
        raise TextRejected(TextProblem("empty", "The file is empty."))
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        raise TextRejected(
            TextProblem("binary", f"This is not a text file: byte {at} is a NUL.", {"offset": at})
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextRejected(
            TextProblem(
                "not_utf8",
                f"The file is not UTF-8 text: byte {exc.start} cannot be decoded.",
                {"offset": exc.start},
            )
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    controls = sum(1 for ch in text if ch not in "\n\t" and unicodedata.category(ch) == "Cc")
    if controls > len(text) // 100:  # decodes as UTF-8, but it is bytes of something else
        raise TextRejected(
            TextProblem(
                "binary",
                f"This is not a text file: {controls} of its {len(text)} characters are control characters.",
                {"controls": controls},
            )
        )
    if len(text) < limits.min_chars:
        raise TextRejected(
            TextProblem(
                "too_few_characters",
                f"The text has {len(text)} characters; a language model needs at least {limits.min_chars}.",
                {"chars": len(text), "min": limits.min_chars},
            )
        )
    return text


def tokenise(
    text: str, *, tokenizer: str, vocab_size: int | None, limits: TextLimits, name: str
) -> dict[str, Any]:
    """The text cache of a checked text (the check's box does this: the BPE is trained on hostile text);
    TextRejected with the reason when the text cannot make one."""
    if tokenizer == "char":
        alphabet = "".join(sorted(set(text)))
        if len(alphabet) > limits.max_char_vocab:
            raise TextRejected(
                TextProblem(
                    "too_many_characters",
                    f"The text has {len(alphabet)} different characters; a character-level tokenizer takes "
                    f"at most {limits.max_char_vocab}. Choose byte-level BPE.",
                    {"chars": len(alphabet), "max": limits.max_char_vocab},
                )
            )
        cache = rt.text_cache(name, text, rt.Tokenizer(kind="char", alphabet=alphabet))
    else:
        val_at, _test_at = rt.split_points(text)
        ours, library = corpora.train_bpe(text[:val_at], vocab_size=int(vocab_size or 512))
        cache = rt.text_cache(name, text, ours, encode=lambda part: library.encode(part).ids)
    check_split(split_sizes(cache["splits"]), limits=limits)
    return cache


def split_sizes(splits: dict[str, list[int]]) -> dict[str, int]:
    """Tokens in each part of a cache's `splits` (train, val, test)."""
    return {part: end - start for part, (start, end) in splits.items()}


def check_split(tokens: dict[str, int], *, limits: TextLimits) -> None:
    """TextRejected when the validation or the test part is under a window of tokens."""
    if min(tokens["val"], tokens["test"]) < limits.min_split_tokens:
        # The split is by position at line starts: one enormous line leaves nothing to validate on.
        raise TextRejected(
            TextProblem(
                "split_too_small",
                "The text is split by lines (the last 10% validates and tests), and its lines are too long "
                f"or too few: the validation part has {tokens['val']} tokens and the test part "
                f"{tokens['test']}; each needs {limits.min_split_tokens}. Add text or break long lines.",
                {"val": tokens["val"], "test": tokens["test"], "min": limits.min_split_tokens},
            )
        )


def cache_from_tokens(
    name: str, *, tokens: torch.Tensor, splits: tuple[int, int], tokenizer: rt.Tokenizer, chars: int
) -> dict[str, Any]:
    """The text cache `rt.text_cache` makes, from a token stream (int64, (N,)) and the token positions
    where validation and test start: what the worker writes from a check's tokens once it has checked them."""
    a, b = splits
    dtype = torch.uint16 if tokenizer.vocab_size <= 65536 else torch.int32
    return {
        "kind": "text",
        "name": name,
        "version": rt.TEXT_CACHE_VERSION,
        "tokens": tokens.to(dtype),
        "splits": {"train": [0, a], "val": [a, b], "test": [b, tokens.numel()]},
        "tokenizer": tokenizer.as_json(),
        "vocab_size": tokenizer.vocab_size,
        "chars": chars,
    }


def text_facts(text: str, *, cache: dict[str, Any]) -> TextDataset:
    """What the dataset page and validation show, from the text itself and its cache's tokenizer."""
    tokenizer = cache["tokenizer"]
    digest = hashlib.sha256(text.encode("utf-8"))
    digest.update(json.dumps(tokenizer, sort_keys=True).encode())
    first_line = next((line for line in text.split("\n") if line.strip()), text)
    return TextDataset(
        tokenizer=str(tokenizer["kind"]),
        vocab_size=int(cache["vocab_size"]),
        chars=len(text),
        lines=text.count("\n") + (0 if text.endswith("\n") else 1),
        tokens=split_sizes(cache["splits"]),
        sample=text[:SAMPLE_CHARS],
        prompt=first_line[:PROMPT_CHARS],
        alphabet=str(tokenizer.get("alphabet", "")),
        content_hash=digest.hexdigest(),
    )


def write_cache(cache: dict[str, Any], cache_path: Path) -> None:
    """The cache as `torch.save` of plain data (read with weights_only=True), replaced atomically."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    torch.save(cache, tmp)
    os.replace(tmp, cache_path)
