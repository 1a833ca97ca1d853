"""The check of an uploaded text runs in a box; here an attacker owns that box.

Each test takes the side of an attacker whose text got code execution in the check (a bug in the tokenizers
library, which trains a BPE on it there): the box runs the attacker's program instead of
sandbox/engine/check_text.py, with every filter of the text check out of the way. What it writes and says is
all it has: the worker must end the dataset `rejected` with a reason, keep nothing, read nothing outside the
box's folder, unpickle nothing, and take no fact from the answer that it did not check against the text.
Positive controls (programs that forge nothing, one of them with a tokenizer of its own making) show the
same door lets an honest answer through, so each refusal is the check's doing.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
import torch
from django.utils import translation

from library import services, text_datasets
from library.models import Dataset
from library.tests.conftest import files_under
from sandbox.engine import buildx_runtime as rt
from sandbox.launcher import python_executable

MARKER = Path("/tmp/buildx-text-check-box-pwned")
# Sums and Korean words, one a line: 7,000-odd characters, bytes beyond ASCII.
TEXT = "".join(f"{a}+{b}={a + b} 안녕 BuildX\n" for a in range(20) for b in range(20))

# The attacker's program starts with this: events on fd 3, the text read as the honest child reads it,
# and the honest answer's parts (character-level, or a byte-level BPE of the attacker's own with one merge).
PRELUDE = """
import json, os, sys
import torch
import buildx_runtime as rt

TEXT = open("/box-data/dataset.pt", "rb").read().decode("utf-8", errors="replace")
VAL_AT, TEST_AT = rt.split_points(TEXT)
PARTS = (TEXT[:VAL_AT], TEXT[VAL_AT:TEST_AT], TEXT[TEST_AT:])

def say(**event):
    os.write(3, (json.dumps(event) + "\\n").encode())

def char():
    alphabet = "".join(sorted(set(TEXT)))
    tok = rt.Tokenizer(kind="char", alphabet=alphabet)
    return [tok.encode(p) for p in PARTS], tok.as_json()

def bpe(pieces=None, merges=None):
    pieces = [bytes([i]).hex() for i in range(256)] + [b"12".hex()] if pieces is None else pieces
    merges = [b"1".hex() + " " + b"2".hex()] if merges is None else merges
    return [list(p.encode()) for p in PARTS], {"kind": "bpe", "pieces": pieces, "merges": merges}

def write(parts, tokenizer, *, ids=None, splits=None, dtype=torch.int32, extra=None, name="tokens"):
    ids = [t for p in parts for t in p] if ids is None else ids
    a, b = len(parts[0]), len(parts[0]) + len(parts[1])
    tensors = {name: torch.tensor(ids, dtype=dtype), **(extra or {})}
    metadata = {"tokenizer": tokenizer if isinstance(tokenizer, str) else json.dumps(tokenizer),
                "splits": json.dumps([a, b] if splits is None else splits)}
    rt.write_safetensors("text.safetensors", tensors, metadata=metadata)

def ok(parts, tokenizer, **changes):
    n, a, b = sum(map(len, parts)), len(parts[0]), len(parts[0]) + len(parts[1])
    vocab = len(tokenizer["alphabet"]) if tokenizer["kind"] == "char" else len(tokenizer["pieces"])
    say(kind="result", **{"problems": [], "cache": "text.safetensors", "vocab_size": vocab,
                          "tokens": {"train": a, "val": b - a, "test": n - b}, **changes})

def forge(parts, tokenizer, **write_changes):
    write(parts, tokenizer, **write_changes)
    ok(parts, tokenizer)
"""

ATTACKS = {
    # The tokens: name, type, rank, ids, count, and whether they are the text's.
    "a token id past the vocabulary": (
        "p, t = char(); ids = sum(p, []); ids[7] = len(t['alphabet']); forge(p, t, ids=ids)",
        "char",
    ),
    "a negative token id": ("p, t = char(); ids = sum(p, []); ids[7] = -1; forge(p, t, ids=ids)", "char"),
    "tokens as int64": ("p, t = char(); forge(p, t, dtype=torch.int64)", "char"),
    "tokens as floats": ("p, t = char(); forge(p, t, dtype=torch.float32)", "char"),
    "tokens under another name": ("p, t = char(); forge(p, t, name='ids')", "char"),
    "a second tensor": ("p, t = char(); forge(p, t, extra={'x': torch.zeros(3)})", "char"),
    "tokens of rank two": (
        "p, t = char(); write(p, t); "
        "rt.write_safetensors('text.safetensors', {'tokens': torch.tensor([sum(p, [])], dtype=torch.int32)}, "
        "metadata={'tokenizer': json.dumps(t), 'splits': json.dumps([len(p[0]), len(p[0]) + len(p[1])])}); "
        "ok(p, t)",
        "char",
    ),
    "more tokens than the text has bytes": (
        "p, t = char(); forge(p, t, ids=sum(p, []) * 3)",
        "char",
    ),
    "the training tokens twice": (
        "p, t = char(); forge([p[0] * 2, p[1], p[2]], t)",
        "char",
    ),
    "tokens of another text": (
        "p, t = char(); forge([sorted(p[0]), p[1], p[2]], t)",
        "char",
    ),
    "a token moved from validation into training": (
        "p, t = char(); forge(p, t, splits=[len(p[0]) + 1, len(p[0]) + len(p[1])])",
        "char",
    ),
    "split positions out of order": (
        "p, t = char(); forge(p, t, splits=[len(p[0]) + len(p[1]), len(p[0])])",
        "char",
    ),
    "split positions that are not numbers": ("p, t = char(); forge(p, t, splits=['a', None])", "char"),
    # The tokenizer.
    "an alphabet with a character the text lacks": (
        "p, t = char(); t['alphabet'] += '\\U0001f600'; forge(p, t)",
        "char",
    ),
    "a tokenizer of the other kind": ("p, t = bpe(); forge(p, t)", "char"),
    "a tokenizer that is not JSON": ("p, t = char(); write(p, '{not json'); ok(p, t)", "char"),
    "a tokenizer of nine megabytes": (
        "p, t = char(); write(p, json.dumps({**t, 'pad': 'x' * (9 * 2**20)})); ok(p, t)",
        "char",
    ),
    "a BPE without the byte 0xff": (
        "pieces = [bytes([i]).hex() for i in range(255)] + ['3132', '3334']; p, t = bpe(pieces=pieces); forge(p, t)",
        "bpe",
    ),
    "a BPE with an empty piece": (
        "pieces = [bytes([i]).hex() for i in range(256)] + ['']; p, t = bpe(pieces=pieces, merges=[]); forge(p, t)",
        "bpe",
    ),
    "a BPE piece twice": (
        "pieces = [bytes([i]).hex() for i in range(256)] + ['41']; p, t = bpe(pieces=pieces, merges=[]); forge(p, t)",
        "bpe",
    ),
    "a BPE merge into no piece": ("p, t = bpe(merges=['31 33']); forge(p, t)", "bpe"),
    "a BPE merge that is not hex": ("p, t = bpe(merges=['zz 12']); forge(p, t)", "bpe"),
    "a BPE over the vocabulary asked for": (
        "pieces = [bytes([i]).hex() for i in range(256)] + [f'41{i:04x}' for i in range(60)]; "
        "p, t = bpe(pieces=pieces, merges=[]); forge(p, t)",
        "bpe",
    ),
    # The report and the file itself.
    "a report whose counts are not the file's": (
        "p, t = char(); write(p, t); ok(p, t, vocab_size=9999)",
        "char",
    ),
    "a header that claims a terabyte": (
        "open('text.safetensors', 'wb').write((2**40).to_bytes(8, 'little') + b'{}' * 100); "
        "p, t = char(); ok(p, t)",
        "char",
    ),
    "a header that claims a billion tokens": (
        """
head = json.dumps({"tokens": {"dtype": "I32", "shape": [10**9], "data_offsets": [0, 16]}}).encode()
head += b" " * (-len(head) % 8)
open("text.safetensors", "wb").write(len(head).to_bytes(8, "little") + head + bytes(16))
p, t = char(); ok(p, t)
""",
        "char",
    ),
    "a pickle under the file's name": (
        """
import pickle
class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/buildx-text-check-box-pwned",))
open("text.safetensors", "wb").write(pickle.dumps({"tokens": Payload()}))
p, t = char(); ok(p, t)
""",
        "char",
    ),
    "a link to a file of the worker": (
        "os.symlink('/etc/passwd', 'text.safetensors'); p, t = char(); ok(p, t)",
        "char",
    ),
    "a link to the upload itself": (
        "os.symlink('/box-data/dataset.pt', 'text.safetensors'); p, t = char(); ok(p, t)",
        "char",
    ),
    "ok without a file": ("say(kind='result', problems=[], cache=None)", "char"),
    "a file under another name": (
        "p, t = char(); write(p, t); os.rename('text.safetensors', 'x'); ok(p, t)",
        "char",
    ),
}
FAILURES = {
    "no answer at all": ("sys.exit(0)", "check_failed"),
    "a crash": ("raise SystemExit(3)", "check_failed"),
    "memory until it is killed": (
        "hog = []\nwhile True:\n    hog.append(b'x' * (32 * 2**20))",
        "check_out_of_memory",
    ),
    "sleeps past the wall clock": ("import time\nwhile True:\n    time.sleep(1)", "check_timeout"),
}


def attack(program: str) -> str:
    return PRELUDE + textwrap.dedent(program)


def uploaded(owner, *, data: bytes = TEXT.encode(), tokenizer: str = "char") -> Dataset:
    fields = {"tokenizer": tokenizer, "vocab_size": 300 if tokenizer == "bpe" else None}
    return text_datasets.text_upload_whole(
        owner=owner, name="Sums", file=io.BytesIO(data), size=len(data), **fields
    )


def run_attack(dataset: Dataset, program: str) -> Dataset:
    checked = text_datasets.text_check(
        dataset_id=dataset.pk, entry=[python_executable(), "-s", "script.py"], code=attack(program)
    )
    assert checked is not None
    return checked


def assert_rejected_and_nothing_kept(dataset: Dataset, code: str, data_dir: Path) -> None:
    assert dataset.status == Dataset.Status.REJECTED
    assert [p["code"] for p in dataset.problems] == [code], dataset.problems
    with translation.override("en"):
        assert dataset.problems[0]["message"] == text_datasets.problem_message(dataset.problems[0])
    assert set(dataset.text_facts) == {"tokenizer", "vocab_size"}  # as created: no fact of the answer
    assert dataset.content_hash == "" and dataset.cache_bytes in (0, None)
    # Nothing is kept, nothing was written outside the dataset's folder, nothing was unpickled.
    assert files_under(data_dir) == {"uploads", f"uploads/{dataset.pk}"}
    assert not MARKER.exists()


@pytest.mark.parametrize("case", list(ATTACKS))
def test_a_text_check_box_that_forges_its_answer_gets_the_upload_rejected_and_nothing_kept(
    alice, data_dir, small_box, case
):
    program, tokenizer = ATTACKS[case]
    MARKER.unlink(missing_ok=True)
    dataset = run_attack(uploaded(alice, tokenizer=tokenizer), program)
    assert_rejected_and_nothing_kept(dataset, "check_forged", data_dir)
    assert "does not hold together" in dataset.problems[0]["message"]


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_text_check_box_that_fails_gets_the_upload_rejected_with_the_reason(
    alice, data_dir, small_box, settings, case
):
    program, code = FAILURES[case]
    if case == "sleeps past the wall clock":
        settings.DATASET_CHECK_WALL_S = 3  # the loop never ends: the wall clock is what stops it
    dataset = run_attack(uploaded(alice), program)
    assert_rejected_and_nothing_kept(dataset, code, data_dir)


def test_an_honest_answer_through_the_same_door_is_ready_with_the_workers_facts(alice, small_box):
    """The positive control: the attacker's door, a program that forges nothing (but its report's extras)."""
    program = "p, t = char(); write(p, t); ok(p, t, sample='<b>forged</b>', chars=1, content_hash='0' * 64)"
    dataset = run_attack(uploaded(alice), program)
    assert dataset.status == Dataset.Status.READY, dataset.problems
    facts = dataset.text_facts
    assert facts["chars"] == len(TEXT) and facts["lines"] == 400 and facts["sample"] == TEXT[:600]
    assert facts["prompt"] == TEXT[:12] and facts["alphabet"] == "".join(sorted(set(TEXT)))
    cache = rt.load_cache(services.cache_path(dataset))  # written by the worker, in the built-in format
    assert cache["tokens"].dtype == torch.uint16
    assert rt.Tokenizer.from_json(cache["tokenizer"]).decode(cache["tokens"].tolist()) == TEXT
    assert sum(facts["tokens"].values()) == len(TEXT) == cache["chars"]


def test_a_bpe_of_the_boxs_own_making_passes_when_it_decodes_to_the_text(alice, small_box):
    """What a forger is left: another valid tokenizer of the same text (the uploader's own choice anyway)."""
    dataset = run_attack(uploaded(alice, tokenizer="bpe"), "p, t = bpe(); forge(p, t)")
    assert dataset.status == Dataset.Status.READY, dataset.problems
    assert dataset.text_facts["vocab_size"] == 257 and dataset.text_facts["tokenizer"] == "bpe"
    cache = rt.load_cache(services.cache_path(dataset))
    assert rt.Tokenizer.from_json(cache["tokenizer"]).decode(cache["tokens"].tolist()) == TEXT


def test_a_box_that_says_ok_on_a_text_the_worker_refuses_is_forged(alice, data_dir, small_box):
    binary = bytes(range(256)) * 40  # NUL bytes: the worker's own reading refuses it
    dataset = run_attack(uploaded(alice, data=binary), "p, t = char(); forge(p, t)")
    assert_rejected_and_nothing_kept(dataset, "check_forged", data_dir)


def test_a_box_that_passes_a_character_tokenizer_over_its_limit_is_forged(alice, data_dir, small_box):
    many = (
        "".join(chr(0xAC00 + i) + ("\n" if i % 40 == 39 else "") for i in range(5000)) * 2
    )  # 5,001 characters
    dataset = run_attack(uploaded(alice, data=many.encode()), "p, t = char(); forge(p, t)")
    assert_rejected_and_nothing_kept(dataset, "check_forged", data_dir)


def test_a_refusal_is_kept_but_only_in_known_words_and_the_workers_limits(alice, small_box):
    for problems, code, said in (
        ([{"code": "not_utf8", "params": {"offset": 3, "evil": "<b>x</b>"}}], "not_utf8", "byte 3 cannot"),
        ([{"code": "too_few_characters", "params": {"chars": 5, "min": 10**9}}], "too_few_characters",
         "needs at least 2000"),
        ([{"code": "<script>", "params": {}}], "check_failed", "The check of this text failed"),
    ):  # fmt: skip
        program = f"say(kind='result', problems={problems!r} * 1000, cache='text.safetensors')"
        dataset = run_attack(uploaded(alice), program)
        assert dataset.status == Dataset.Status.REJECTED
        assert len(dataset.problems) == 1 and dataset.problems[0]["code"] == code
        assert "evil" not in dataset.problems[0]["params"]
        assert said in dataset.problems[0]["message"]


def test_a_refusal_of_the_check_reads_in_korean(alice, alice_client, small_box):
    dataset = run_attack(uploaded(alice), "raise SystemExit(3)")
    page = alice_client.get(f"/datasets/{dataset.pk}/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "이 텍스트의 검사에 실패했습니다." in page
