"""The check of an upload runs in a box; here an attacker owns that box.

Each test takes the side of an attacker whose zip got code execution in the check (a decoder bug): the box
runs the attacker's program instead of sandbox/engine/check_upload.py, with every filter of the zip check
out of the way. What it writes and says is all it has: the worker must end the dataset `rejected` with a
reason, keep nothing, read nothing outside the box's folder, unpickle nothing, and take no fact from the
answer that it did not check. A positive control (a program that forges nothing) shows the same door lets
an honest answer through, so each refusal is the check's doing.
"""

from __future__ import annotations

import io
import struct
import textwrap
import zlib
from pathlib import Path

import pytest

from library import services
from library.models import Dataset
from library.tests.conftest import files_under, three_classes, zip_of
from sandbox import upload_check
from sandbox.engine import custom
from sandbox.launcher import python_executable

MARKER = Path("/tmp/buildx-check-box-pwned")

# The attacker's program starts with this: events on fd 3, tensors written as the honest child does.
PRELUDE = """
import json, os, sys
import torch
import buildx_runtime as rt

def say(**event):
    os.write(3, (json.dumps(event) + "\\n").encode())

def ok():
    say(kind="result", problems=[], more_problems=0, warnings=[], own_split=False, moved_duplicates=0,
        cache="upload.safetensors")

def tensors(n=12, classes=3, labels=None, train=None, test=None, names=None, shape=(3, 12, 12)):
    labels = torch.arange(n) % classes if labels is None else torch.tensor(labels)
    train = torch.arange(0, n - 3) if train is None else torch.tensor(train)
    test = torch.arange(n - 3, n) if test is None else torch.tensor(test)
    names = ["blue", "green", "red"] if names is None else names
    rt.write_safetensors(
        "upload.safetensors",
        {"images": torch.full((n, *shape), 7, dtype=torch.uint8), "labels": labels.long(),
         "train_idx": train.long(), "test_idx": test.long()},
        metadata={"class_names": json.dumps(names)},
    )
"""

ATTACKS = {
    "labels outside the classes": ("tensors(labels=[0, 1, 2, 5] * 3); ok()", "check_forged"),
    "a split that repeats an image": ("tensors(train=[0, 0, 1, 2, 3, 4, 5, 6, 7]); ok()", "check_forged"),
    "a class with no images": ("tensors(labels=[0, 1] * 6); ok()", "check_forged"),
    "a thousand class names": ("tensors(names=[f'c{i}' for i in range(1000)]); ok()", "check_forged"),
    "a class name that climbs out": ("tensors(names=['blue', '../../etc', 'red']); ok()", "check_forged"),
    "images larger than any check makes": ("tensors(shape=(3, 512, 512)); ok()", "check_forged"),
    "a pickle under the file's name": (
        """
import pickle
class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/buildx-check-box-pwned",))
open("upload.safetensors", "wb").write(pickle.dumps({"images": Payload()}))
ok()
""",
        "check_forged",
    ),
    "a header that claims a billion images": (
        """
head = json.dumps({"images": {"dtype": "U8", "shape": [10**9, 3, 64, 64], "data_offsets": [0, 16]},
                   "labels": {"dtype": "I64", "shape": [2], "data_offsets": [16, 32]},
                   "train_idx": {"dtype": "I64", "shape": [1], "data_offsets": [32, 40]},
                   "test_idx": {"dtype": "I64", "shape": [1], "data_offsets": [40, 48]}}).encode()
head += b" " * (-len(head) % 8)
open("upload.safetensors", "wb").write(len(head).to_bytes(8, "little") + head + bytes(48))
ok()
""",
        "check_forged",
    ),
    "a link to a file of the worker": (
        "os.symlink('/etc/passwd', 'upload.safetensors'); ok()",
        "check_forged",
    ),
    "a link to the zip itself": (
        "os.symlink('/box-data/dataset.pt', 'upload.safetensors'); ok()",
        "check_forged",
    ),
    "ok without a file": (
        "say(kind='result', problems=[], more_problems=0, warnings=[], cache=None)",
        "check_forged",
    ),
    "a file under another name": ("tensors(); os.rename('upload.safetensors', 'x'); ok()", "check_forged"),
    "no answer at all": ("sys.exit(0)", "check_failed"),
    "a crash": ("raise SystemExit(3)", "check_failed"),
    "a flood of events": (
        "[say(kind='progress', epoch=1, epochs=2, batch=i, batches=10**6) for i in range(5000)]",
        "check_failed",
    ),
    "memory until it is killed": (
        "hog = []\nwhile True:\n    hog.append(b'x' * (32 * 2**20))",
        "check_out_of_memory",
    ),
    "never answers": ("while True:\n    pass", "check_timeout"),
    "writes where it may not, then claims a good zip": (
        """
for path in ("/box-data/dataset.pt", "/box-data/evil", "/tmp/../etc/evil", "/work/evil"):
    try:
        open(path, "wb").write(b"pwned")
    except OSError:
        pass
ok()
""",
        "check_forged",
    ),
}


def attack(program: str) -> str:
    return PRELUDE + textwrap.dedent(program)


def uploaded(owner, *, per_class: int = 4) -> Dataset:
    data = zip_of(three_classes(per_class=per_class))
    return services.dataset_upload_whole(owner=owner, name="Colours", file=io.BytesIO(data), size=len(data))


def run_attack(dataset: Dataset, program: str) -> Dataset:
    checked = services.dataset_check(
        dataset_id=dataset.pk, entry=[python_executable(), "-s", "script.py"], code=attack(program)
    )
    assert checked is not None
    return checked


@pytest.mark.parametrize("case", list(ATTACKS))
def test_a_check_box_taken_over_gets_its_upload_rejected_and_nothing_kept(
    alice, data_dir, small_box, settings, case
):
    program, code = ATTACKS[case]
    if case == "never answers":
        settings.DATASET_CHECK_WALL_S = 3  # the loop never ends: the wall clock is what stops it
    MARKER.unlink(missing_ok=True)
    dataset = run_attack(uploaded(alice), program)
    assert dataset.status == "rejected"
    assert [p["code"] for p in dataset.problems] == [code], dataset.problems
    assert dataset.problems[0]["message"] == services.with_message(dataset.problems[0])["message"]
    assert dataset.class_names == [] and dataset.counts == {} and dataset.content_hash == ""
    # Nothing is kept, nothing was written outside the dataset's folder, nothing was unpickled.
    assert files_under(data_dir) == {"uploads", f"uploads/{dataset.pk}"}
    assert not MARKER.exists()
    assert not Path("/work/evil").exists()


def test_an_honest_answer_through_the_same_door_is_ready(alice, small_box):
    """The positive control: the attacker's door, a program that forges nothing."""
    dataset = run_attack(uploaded(alice), "tensors(); ok()")
    assert dataset.status == "ready", dataset.problems
    assert dataset.input_shape == [3, 12, 12]
    assert dataset.counts == {"blue": 4, "green": 4, "red": 4}  # from the checked labels
    assert dataset.split["train"] == 9 and dataset.split["test"] == 3
    assert [w["code"] for w in dataset.warnings] == ["few_images"] * 3


def test_a_refusal_is_kept_but_only_in_known_words(alice, small_box):
    program = """
problems = [{"entry": "\\u202e" + "x" * 100_000, "code": "<script>", "params": {"limit": "a" * 10_000}}]
problems += [{"entry": f"cats/{i}.png", "code": "not_an_image", "params": {"evil": [1, {}]}} for i in range(5000)]
say(kind="result", problems=problems, more_problems=10**12, warnings=[], cache=None)
"""
    dataset = run_attack(uploaded(alice), program)
    assert dataset.status == "rejected"
    assert len(dataset.problems) == 50  # the check's own limit on what the answer lists
    first, second = dataset.problems[0], dataset.problems[1]
    assert first["code"] == "check_failed" and first["entry"] == "x" * 299
    assert second == {
        "entry": "cats/0.png",
        "code": "not_an_image",
        "params": {},
        "message": "Only PNG and JPEG images are allowed.",
    }
    assert dataset.more_problems == 10**6 + 5001 - 50


def test_an_upload_that_claims_a_good_zip_gets_its_facts_from_the_tensors(alice, small_box):
    program = """
tensors(labels=[0] * 10 + [1, 2])
say(kind="result", problems=[], more_problems=0, own_split="yes", moved_duplicates=10**9, cache="upload.safetensors",
    warnings=[{"code": "few_images", "params": {"class": "<b>x</b>", "count": -1}},
              {"code": "duplicates_across_splits", "params": {"count": 99}}])
"""
    dataset = run_attack(uploaded(alice), program)
    assert dataset.status == "ready", dataset.problems
    assert dataset.counts == {"blue": 10, "green": 1, "red": 1}
    assert dataset.split["own"] is False and dataset.split["moved_duplicates"] == 0
    # Warnings about small and unbalanced classes are the worker's, from the labels; the child's count of
    # duplicates is more than the test split holds, so it is dropped.
    assert [(w["code"], w["params"].get("class")) for w in dataset.warnings] == [
        ("few_images", "blue"),
        ("few_images", "green"),
        ("few_images", "red"),
        ("imbalance", None),
    ]


def pixel_bomb_png(side: int) -> bytes:
    """A greyscale PNG of side x side zeros, written directly (a few hundred KB; Pillow would need it all)."""
    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_the_real_check_with_its_filters_off_is_held_by_the_box_memory_limit(tmp_path):
    """The honest child, with the pixel limit switched off, decoding a 400-megapixel image: the zip's
    filters no longer stop it, the box's memory limit does, and the answer is a reason, not a crash."""
    entries = three_classes(per_class=2)
    entries["colours/red/bomb.png"] = pixel_bomb_png(20_000)
    zip_path = tmp_path / "upload.zip"
    zip_path.write_bytes(zip_of(entries))
    check = upload_check.check_upload(
        zip_path=zip_path,
        work_path=tmp_path / "check.safetensors",
        zip_limits=custom.ZipLimits(max_image_pixels=10**12, max_ratio=1e9),  # the filters, off
        side=None,
        max_side=64,
        on_progress=lambda stage, done, total: None,
        wall_limit_s=1200,  # only a bound on a hang: the memory limit must end it, at any machine speed
        memory_bytes=384 * 2**20,
    )
    assert check.sandbox is not None and check.sandbox.killed_for == "memory"
    assert [p["code"] for p in check.problems] == ["check_out_of_memory"]
    assert check.decoded is None and not check.ok
    assert not (tmp_path / "check.safetensors").exists()


def test_a_refusal_reads_in_the_readers_language_from_its_code(alice, alice_client):
    stored = services.with_message({"entry": "cats/notes.png", "code": "not_an_image", "params": {}})
    dataset = Dataset.objects.create(
        owner=alice, name="Refused", size=10, status="rejected", problems=[stored]
    )
    assert stored["message"] == "Only PNG and JPEG images are allowed."
    page = alice_client.get(f"/datasets/{dataset.pk}/", HTTP_ACCEPT_LANGUAGE="ko")
    assert "PNG와 JPEG 이미지만 올릴 수 있습니다." in page.content.decode()
    answer = alice_client.get(f"/api/v1/datasets/{dataset.pk}/", HTTP_ACCEPT_LANGUAGE="ko").json()
    assert answer["problems"][0]["message"] == "PNG와 JPEG 이미지만 올릴 수 있습니다."
    assert answer["problems"][0]["entry"] == "cats/notes.png"
