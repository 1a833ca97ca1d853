"""The check of an uploaded text in a box of its own: the worker's side (the child is engine/check_text.py).

The worker never runs the tokenizers library on a stranger's text. A box (its own uid, a memory limit of
`memory_bytes` for the whole tree, a wall limit, no network, only its folder writable) gets the text
read-only at /box-data/dataset.pt, reads it, trains the BPE and answers with a report and, for a good text,
a safetensors file of the token stream with the tokenizer in its metadata. Both are hostile input
(docs/contracts.md, section 3), handled as sandbox/upload_check.py handles a zip's:

- the report: only its refusal counts (known codes, plain parameters: `upload_check.clean_answers`; the
  limits a message names are the worker's own). A child that reports no problem proves nothing by it;
- the file: read as a regular file within a bound fixed by the size limit (`files.open_regular`; at
  most one token per byte of text), its header within TEXT_HEADER_BYTES, parsed by safetensors, then
  checked against the text itself. The worker reads the upload's bytes again (`text_upload.read_text`:
  at most the size limit, CPython's strict UTF-8 decoder, no third-party parser, linear in the size),
  so it need not believe anything the child says about it:
  - the tokenizer (JSON within the header's bound) is the kind asked for and rebuilds into an
    `rt.Tokenizer`: char, its alphabet exactly the text's characters, sorted; BPE, at most the vocabulary
    asked for, pieces distinct and never empty, every byte a piece (any text encodes), every merge made
    of pieces into a piece; and it decodes what it encodes (the text's sample, both ways);
  - the tokens: int32 ids below the vocabulary, no more than the text has bytes, and each part
    (train, validation, test, at the worker's own split points) is exactly the bytes of that part of the
    text when its pieces are joined, so no id is made up, dropped, or moved between parts;
  - the counts: validation and test each hold a window, and the report's counts and vocabulary agree.
  The content hash, characters, lines, sample and prompt come from the worker's own reading of the text.

What this leaves a forger: a different split of the same text into valid pieces of a valid tokenizer, which
the uploader could get honestly by choosing the text; nothing that decodes to other text, indexes out of
the vocabulary, or disagrees with the facts shown. The worker then writes the cache itself
(`text_upload.cache_from_tokens`, `write_cache`: plain data, never the child's file). A child that breaks any
of this, runs out of memory or time, or dies, rejects the upload.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch  # the worker's side only: the check's tokens are checked here

from sandbox import files
from sandbox.engine import buildx_runtime as rt
from sandbox.engine import text_upload
from sandbox.launcher import ENGINE_DIR
from sandbox.runner import open_box
from sandbox.supervisor import SandboxResult
from sandbox.upload_check import Forged, check_limits, clean_answers, failure_answer, run_child

CHILD = ENGINE_DIR / "check_text.py"
OUTPUT = "text.safetensors"
PROBLEM_CODES = frozenset(
    {
        "too_large",
        "empty",
        "binary",
        "not_utf8",
        "too_few_characters",
        "too_many_characters",
        "split_too_small",
    }
)
PARAM_KEYS = frozenset({"max_mb", "offset", "controls", "chars", "min", "max", "val", "test"})
# The header holds the tokenizer: 16,384 BPE pieces and their merges, in hex, are under 1 MB for any text
# seen; this leaves room for long pieces and bounds what the worker parses.
TEXT_HEADER_BYTES = 8 << 20
CHECK_CHUNK_TOKENS = 1 << 20  # tokens compared with the text at a time: bounded memory for a 16 MB text


@dataclass
class TextCheck:
    """The answer: `cache` (the text cache, built here from checked parts) and `facts` when the text is
    good, else `problems` (one: `entry`, `code`, `params`). `sandbox` says how the box ended."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] | None = None
    facts: text_upload.TextDataset | None = None
    sandbox: SandboxResult | None = None

    @property
    def ok(self) -> bool:
        return self.cache is not None and self.facts is not None and not self.problems


def check_text(
    *,
    text_path: Path,
    work_path: Path,
    tokenizer: str,
    vocab_size: int | None,
    limits: text_upload.TextLimits,
    name: str,
    wall_limit_s: float,
    memory_bytes: int,
    entry: Sequence[str] | None = None,
    code: str = "",
) -> TextCheck:
    """Check and tokenise the text at `text_path` in a new box; `work_path` is where the worker copies the
    child's file while it reads it (deleted before this returns). `entry` and `code` (tests, benches):
    another program in the box, as an attacker who took over the check would run."""
    box = open_box(limits=check_limits(memory_bytes=memory_bytes))
    answer: dict[str, Any] = {}

    def on_event(event: dict) -> None:
        if event["kind"] == "result":
            answer.update(event)

    try:
        config = {
            "limits": dataclasses.asdict(limits),
            "tokenizer": tokenizer,
            "vocab_size": vocab_size,
            "name": name,
        }
        result = run_child(
            box=box,
            child=CHILD,
            config=config,
            upload=Path(text_path),
            on_event=on_event,
            wall_limit_s=wall_limit_s,
            entry=entry,
            code=code,
        )
        check = TextCheck(sandbox=result)
        if result.status != "succeeded" or not answer:
            check.problems = [failure_answer(result)]
            return check
        refusal = clean_answers(answer.get("problems"), PROBLEM_CODES, 1, keys=PARAM_KEYS)
        if refusal:
            check.problems = [with_own_limits(refusal[0], limits)]
            return check  # the child's refusal is the one thing of its answer taken as it is
        try:
            if answer.get("cache") != OUTPUT:
                raise Forged("no problem, and no file")
            text = read_own_text(text_path, limits=limits)
            cache = read_tokens(
                box.run_dir,
                work_path=work_path,
                text=text,
                tokenizer=tokenizer,
                vocab_size=vocab_size,
                limits=limits,
                name=name,
            )
            counts = {"vocab_size": cache["vocab_size"], "tokens": text_upload.split_sizes(cache["splits"])}
            if {key: answer.get(key) for key in counts} != counts:
                raise Forged("the report's counts are not the file's")
        except (Forged, files.Refused, FileNotFoundError) as e:
            check.problems = [{"entry": "", "code": "check_forged", "params": {}}]
            check.sandbox = dataclasses.replace(result, cause=str(e))
            return check
        check.cache, check.facts = cache, text_upload.text_facts(text, cache=cache)
        return check
    finally:
        box.close()
        Path(work_path).unlink(missing_ok=True)


def with_own_limits(problem: dict[str, Any], limits: text_upload.TextLimits) -> dict[str, Any]:
    """A refusal with the limit its message names set to the worker's (the child's may say anything)."""
    own = {
        "too_large": {"max_mb": limits.max_bytes // 2**20},
        "too_few_characters": {"min": limits.min_chars},
        "too_many_characters": {"max": limits.max_char_vocab},
        "split_too_small": {"min": limits.min_split_tokens},
    }.get(problem["code"], {})
    return {**problem, "params": {**problem["params"], **own}}


def read_own_text(path: Path, *, limits: text_upload.TextLimits) -> str:
    """The upload's text, read here (module docstring): Forged when the child passed a text it refuses."""
    try:
        return text_upload.read_text(path, limits=limits)
    except text_upload.TextRejected as e:
        raise Forged(f"the child passed a text that is refused here ({e.problem.code})") from e


def output_bound(*, max_bytes: int) -> int:
    """The largest file a check may write: an int32 id per byte of the largest text, and the header."""
    return 4 * max_bytes + TEXT_HEADER_BYTES


def read_tokens(
    run_dir: Path,
    *,
    work_path: Path,
    text: str,
    tokenizer: str,
    vocab_size: int | None,
    limits: text_upload.TextLimits,
    name: str,
) -> dict[str, Any]:
    """The child's tokens and tokenizer, copied out of its folder and checked against `text` (module
    docstring); the text cache built from them. Raises Forged, files.Refused or FileNotFoundError."""
    from safetensors import SafetensorError, safe_open

    with files.open_regular(run_dir, OUTPUT, max_bytes=output_bound(max_bytes=limits.max_bytes)) as src:
        with open(work_path, "wb") as out:
            shutil.copyfileobj(src, out, files.CHUNK)
    try:
        with open(work_path, "rb") as f:
            head = f.read(8)
        if len(head) < 8 or int.from_bytes(head, "little") > TEXT_HEADER_BYTES:
            raise Forged("the file's header is missing or too large")
        with safe_open(str(work_path), framework="pt") as f:
            if set(f.keys()) != {"tokens"} or f.get_slice("tokens").get_dtype() != "I32":
                raise Forged(f"tensors {sorted(f.keys())[:10]}, or tokens that are not I32")
            tokens = f.get_tensor("tokens")
            metadata = f.metadata() or {}
    except SafetensorError as e:
        raise Forged(f"not a safetensors file ({e})") from e
    data = text.encode("utf-8")
    if tokens.dim() != 1 or not 0 < tokens.numel() <= len(data):
        raise Forged(f"tokens of shape {tuple(tokens.shape)} for {len(data)} bytes")
    tokens = tokens.to(torch.int64)
    built = rebuilt_tokenizer(
        metadata.get("tokenizer"), kind=tokenizer, vocab_size=vocab_size, text=text, limits=limits
    )
    if int(tokens.min()) < 0 or int(tokens.max()) >= built.vocab_size:
        raise Forged("token ids outside the vocabulary")
    a, b = token_splits(metadata.get("splits"), n=tokens.numel())
    sizes = {"train": a, "val": b - a, "test": tokens.numel() - b}
    try:
        text_upload.check_split(sizes, limits=limits)
    except text_upload.TextRejected as e:
        raise Forged("a validation or test part the child should have refused") from e
    val_at, test_at = rt.split_points(text)
    parts = (text[:val_at], text[val_at:test_at], text[test_at:])
    for ids, part in zip((tokens[:a], tokens[a:b], tokens[b:]), parts, strict=True):
        if not decodes_to(ids, built.pieces, part.encode("utf-8")):
            raise Forged("tokens that do not decode to the text")
    sample = text[: text_upload.SAMPLE_CHARS]
    if built.decode(built.encode(sample)) != sample:
        raise Forged("a tokenizer that does not decode what it encodes")
    return text_upload.cache_from_tokens(name, tokens=tokens, splits=(a, b), tokenizer=built, chars=len(text))


def rebuilt_tokenizer(
    raw: object, *, kind: str, vocab_size: int | None, text: str, limits: text_upload.TextLimits
) -> rt.Tokenizer:
    """The tokenizer's JSON (the metadata's, already within the header's bound) as an rt.Tokenizer, or
    Forged when it is not one the check of this text makes."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise Forged(f"a tokenizer that is not {kind}")
    if kind == "char":
        if set(data) != {"kind", "alphabet"} or data["alphabet"] != "".join(sorted(set(text))):
            raise Forged("an alphabet that is not the text's characters")
        if len(data["alphabet"]) > limits.max_char_vocab:
            raise Forged("more characters than a character-level tokenizer takes")
        return rt.Tokenizer(kind="char", alphabet=data["alphabet"])
    pieces_hex, merges = data.get("pieces"), data.get("merges")
    if (
        set(data) != {"kind", "pieces", "merges"}
        or not isinstance(pieces_hex, list)
        or not isinstance(merges, list)
    ):
        raise Forged("a BPE tokenizer without pieces or merges")
    if not 257 <= len(pieces_hex) <= int(vocab_size or 0) or len(merges) > len(pieces_hex) - 256:
        raise Forged(f"{len(pieces_hex)} pieces and {len(merges)} merges for a vocabulary of {vocab_size}")
    try:
        pieces = [bytes.fromhex(p) for p in pieces_hex]  # a non-string or odd hex: TypeError, ValueError
        pairs = [tuple(bytes.fromhex(h) for h in m.split(" ")) for m in merges]
    except (TypeError, ValueError, AttributeError) as e:
        raise Forged("pieces or merges that are not hex") from e
    known = set(pieces)
    if len(known) != len(pieces) or b"" in known or not known >= {bytes([i]) for i in range(256)}:
        raise Forged("pieces repeated, empty, or without every byte")
    if any(len(pair) != 2 or not {*pair, pair[0] + pair[1]} <= known for pair in pairs):
        raise Forged("a merge of pieces into something that is not a piece")
    try:
        return rt.Tokenizer(kind="bpe", pieces=pieces_hex, merges=merges)
    except (TypeError, ValueError) as e:
        raise Forged(f"a tokenizer the runtime cannot build ({type(e).__name__})") from e


def token_splits(raw: object, *, n: int) -> tuple[int, int]:
    """The token positions where validation and test start (metadata JSON [a, b], 0 < a <= b < n)."""
    try:
        found = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        found = None
    if (
        not isinstance(found, list)
        or len(found) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in found)
        or not 0 < found[0] <= found[1] < n
    ):
        raise Forged(f"split positions {str(raw)[:40]!r} for {n} tokens")
    return found[0], found[1]


def decodes_to(ids: torch.Tensor, pieces: Sequence[bytes], data: bytes) -> bool:
    """Whether the pieces of `ids` (int64, within the vocabulary), joined, are exactly `data`; compared in
    chunks of tokens, so memory stays bounded whatever the text's size."""
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.int64)
    if int(torch.bincount(ids, minlength=len(pieces)) @ lengths) != len(data):
        return False
    if not data:
        return True
    starts = torch.cumsum(lengths, 0) - lengths  # where each piece begins in `flat`
    flat = torch.frombuffer(bytearray(b"".join(pieces)), dtype=torch.uint8)  # (sum of the pieces' bytes,)
    expected = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # (len(data),)
    at = 0
    for chunk in ids.split(CHECK_CHUNK_TOKENS):
        n = lengths[chunk]  # (k,) bytes of each token
        total = int(n.sum())
        # Byte j of this chunk's output is byte (j - before[t]) of token t's piece.
        before = torch.cumsum(n, 0) - n
        index = torch.repeat_interleave(starts[chunk] - before, n) + torch.arange(total)
        if not torch.equal(flat[index], expected[at : at + total]):
            return False
        at += total
    return True
