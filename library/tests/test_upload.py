"""Uploads through the API: chunks (resumed after a drop), the check, quotas, and hostile zips."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile

import pytest
from django.test import Client

from library import services
from library.models import Dataset
from library.tests.conftest import class_png, three_classes, zip_of
from sandbox.engine import custom  # noqa: F401 - torch and Pillow loaded before any memory is measured

CHUNK = 16 * 1024


def create(client: Client, data: bytes, name: str = "Colours", **extra) -> dict:
    response = client.post(
        "/api/v1/datasets/", {"name": name, "size": len(data), **extra}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def put(client: Client, dataset_id: int, data: bytes, start: int, end: int):
    return client.put(
        f"/api/v1/datasets/{dataset_id}/upload/",
        data[start:end],
        content_type="application/octet-stream",
        HTTP_CONTENT_RANGE=f"bytes {start}-{end - 1}/{len(data)}",
    )


def upload(client: Client, data: bytes, **extra) -> Dataset:
    """Send the zip in chunks as the page does, then run the check as the worker does."""
    body = create(client, data, **extra)
    for start in range(0, len(data), CHUNK):
        response = put(client, body["id"], data, start, min(start + CHUNK, len(data)))
        assert response.status_code == 200, response.content
    assert response.json()["status"] == "checking"
    services.dataset_check(dataset_id=body["id"])
    return Dataset.objects.get(pk=body["id"])


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_zip_sent_in_chunks_becomes_a_ready_dataset(alice_client, alice, data_dir):
    dataset = upload(alice_client, zip_of(three_classes(per_class=10)))
    assert dataset.status == "ready", dataset.problems
    assert dataset.class_names == ["blue", "green", "red"]
    assert dataset.counts == {"blue": 10, "green": 10, "red": 10}
    assert dataset.input_shape == [3, 12, 12]
    assert dataset.split["train"] + dataset.split["test"] == 30
    assert len(dataset.content_hash) == 64 and len(dataset.mean) == 3
    assert {w["code"] for w in dataset.warnings} == {"few_images"}  # 10 < 20 per class
    assert files_under(data_dir) == {
        "uploads",
        f"uploads/{dataset.pk}",
        f"uploads/{dataset.pk}/upload.zip",
        f"uploads/{dataset.pk}/cache.pt",
        f"uploads/{dataset.pk}/samples.png",
    }
    answer = alice_client.get("/api/v1/datasets/").json()["results"]
    mine = [d for d in answer if d["source"] == "upload"]
    assert [(d["name"], d["available"], d["input_shape"]) for d in mine] == [
        (f"upload-{dataset.pk}", True, [3, 12, 12])
    ]
    assert alice_client.get(f"/api/v1/datasets/{dataset.pk}/samples/")["Content-Type"] == "image/png"
    export = alice_client.get(f"/api/v1/datasets/{dataset.pk}/export/")
    assert export.status_code == 200
    assert b"".join(export.streaming_content) == (data_dir / f"uploads/{dataset.pk}/upload.zip").read_bytes()


def test_an_interrupted_upload_resumes_from_where_the_server_stands(alice_client):
    data = zip_of(three_classes(per_class=8, size=32))
    assert len(data) > 3 * CHUNK
    body = create(alice_client, data)
    assert put(alice_client, body["id"], data, 0, CHUNK).status_code == 200
    # The connection dropped after the second chunk reached the server but before its answer did: the page
    # sends the second chunk again, then a chunk from the wrong place.
    assert put(alice_client, body["id"], data, CHUNK, 2 * CHUNK).status_code == 200
    again = put(alice_client, body["id"], data, CHUNK, 2 * CHUNK)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "offset_mismatch"
    assert again.json()["error"]["received"] == 2 * CHUNK
    # The page asks where the upload stands and goes on from there.
    state = alice_client.get(f"/api/v1/datasets/{body['id']}/upload/").json()
    assert state["received"] == 2 * CHUNK and state["status"] == "uploading"
    for start in range(state["received"], len(data), CHUNK):
        assert put(alice_client, body["id"], data, start, min(start + CHUNK, len(data))).status_code == 200
    services.dataset_check(dataset_id=body["id"])
    dataset = Dataset.objects.get(pk=body["id"])
    assert dataset.status == "ready"
    assert services.upload_path(dataset).read_bytes() == data


def test_a_whole_zip_in_one_multipart_request_is_checked_too(alice_client):
    data = zip_of(three_classes(per_class=4))
    response = alice_client.post(
        "/api/v1/datasets/", {"name": "One go", "file": io.BytesIO(data)}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "checking"
    assert services.dataset_check(dataset_id=response.json()["id"]).status == "ready"


def test_size_limits_and_quotas_answer_with_numbers(alice_client, alice, settings):
    settings.DATASET_MAX_UPLOAD_BYTES = 10 * 2**20
    too_big = alice_client.post(
        "/api/v1/datasets/", {"name": "Huge", "size": 11 * 2**20}, content_type="application/json"
    )
    assert too_big.status_code == 413
    assert "10 MB" in too_big.json()["error"]["message"]
    settings.DATASET_USER_QUOTA_BYTES = 12 * 2**20
    create(alice_client, b"x" * 10, name="first")  # declared sizes count against the quota at once
    Dataset.objects.filter(owner=alice).update(size=8 * 2**20)
    over = alice_client.post(
        "/api/v1/datasets/", {"name": "More", "size": 5 * 2**20}, content_type="application/json"
    )
    assert over.status_code == 413 and over.json()["error"]["code"] == "quota_storage"
    assert "12 MB" in over.json()["error"]["message"]


def test_a_chunk_past_the_declared_size_is_refused(alice_client):
    body = create(alice_client, b"0123456789")
    response = alice_client.put(
        f"/api/v1/datasets/{body['id']}/upload/",
        b"0123456789AB",
        content_type="application/octet-stream",
        HTTP_CONTENT_RANGE="bytes 0-11/12",
    )
    assert response.status_code == 400


def test_another_users_dataset_is_a_404_for_upload_rename_delete_and_export(alice_client, bob, client):
    body = create(alice_client, b"0123456789")
    client.force_login(bob)
    for method, url in [
        ("get", f"/api/v1/datasets/{body['id']}/"),
        ("get", f"/api/v1/datasets/{body['id']}/upload/"),
        ("patch", f"/api/v1/datasets/{body['id']}/"),
        ("delete", f"/api/v1/datasets/{body['id']}/"),
        ("get", f"/api/v1/datasets/{body['id']}/export/"),
        ("get", f"/datasets/{body['id']}/"),
    ]:
        response = getattr(client, method)(url, content_type="application/json")
        assert response.status_code == 404, (method, url)


# --- hostile zips: each ends rejected with the reasons, and nothing is kept or written elsewhere ------------


def zip_with(extra) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in three_classes(per_class=3).items():
            zf.writestr(name, data)
        extra(zf)
    return buf.getvalue()


def ratio_bomb() -> bytes:
    return zip_with(lambda zf: zf.writestr("colours/red/bomb.png", b"\x89PNG\r\n\x1a\n" + bytes(20 * 2**20)))


def named(name: str, data: bytes | None = None):
    def add(zf: zipfile.ZipFile) -> None:
        zf.writestr(zipfile.ZipInfo(name), data or class_png((1, 2, 3), 1))

    return zip_with(add)


def symlink() -> bytes:
    def add(zf: zipfile.ZipFile) -> None:
        link = zipfile.ZipInfo("colours/red/passwd.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")

    return zip_with(add)


def pixel_bomb() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    return zip_with(lambda zf: zf.writestr("colours/red/huge.png", buf.getvalue()))


def truncated() -> bytes:
    whole = class_png((10, 10, 10), 5, size=64)
    return zip_with(lambda zf: zf.writestr("colours/red/cut.png", whole[: len(whole) - 40]))


def overlap_bomb() -> bytes:
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = packer.compress(b"\x89PNG\r\n\x1a\n" + bytes(5 * 2**20)) + packer.flush()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(kernel), 5 * 2**20 + 8, 7, 0)
    body = local + b"a/0.png" + kernel
    records = b""
    for i in range(4):
        name = f"{'ab'[i % 2]}/{i}.png".encode()
        records += (
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                0,
                0,
                len(kernel),
                5 * 2**20 + 8,
                len(name),
                0,
                0,
                0,
                0,
                0,
                0,
            )
            + name
        )
    return body + records + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 4, 4, len(records), len(body), 0)


def million_entries() -> bytes:
    name = b"a/x.png"
    record = (
        struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0)
        + name
    )
    return record * 1_000_000 + struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(record) * 1_000_000, 0, 0
    )


HOSTILE = {
    "ratio bomb": (ratio_bomb, "bomb"),
    "overlap bomb": (overlap_bomb, "overlap"),
    "a million entries": (million_entries, "too_many_entries"),
    "../": (lambda: named("colours/../../evil.png"), "path_escape"),
    "absolute path": (lambda: named("/etc/evil.png"), "absolute_path"),
    "backslashes": (lambda: named("colours\\red\\evil.png"), "absolute_path"),
    "symlink": (symlink, "link"),
    "pixel bomb": (pixel_bomb, "too_many_pixels"),
    "truncated image": (truncated, "corrupt_image"),
    "text named .png": (lambda: named("colours/red/notes.png", b"hello, I am text\n" * 10), "not_an_image"),
    "one class": (
        lambda: zip_of({f"cats/{i}.png": class_png((1, 2, 3), i) for i in range(5)}),
        "too_few_classes",
    ),
    "not a zip": (lambda: b"MZ this is an executable, not a zip" * 100, "not_a_zip"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_upload_ends_rejected_with_its_reason_and_nothing_kept(
    alice_client, data_dir, settings, case
):
    import resource
    import time

    settings.DATASET_CHUNK_BYTES = 64 * 2**20  # one request: the point here is the check
    make, code = HOSTILE[case]
    data = make()
    body = create(alice_client, data, name=case)
    response = put(alice_client, body["id"], data, 0, len(data))
    assert response.status_code == 200
    started = time.monotonic()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dataset = services.dataset_check(dataset_id=body["id"])
    elapsed = time.monotonic() - started
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert dataset is not None and dataset.status == "rejected"
    assert code in [p["code"] for p in dataset.problems], dataset.problems
    assert all(p["message"] for p in dataset.problems)
    # Bounded: the peak resident size of this process grew by less than 200 MB (the largest entry is 20 MB).
    assert grown_kb < 200 * 1024, grown_kb
    assert elapsed < 120  # generous: a loaded shared machine; nothing here reads more than a few MB
    # Nothing of it is kept, and nothing was ever written outside the dataset's folder.
    assert files_under(data_dir) == {"uploads", f"uploads/{dataset.pk}"}
    answer = alice_client.get(f"/api/v1/datasets/{dataset.pk}/").json()
    assert answer["status"] == "rejected" and answer["problems"]
    page = alice_client.get(f"/datasets/{dataset.pk}/")
    assert page.status_code == 200 and b"This zip was refused" in page.content
    assert not os.path.exists("/tmp/evil.png") and not os.path.exists("/etc/evil.png")


def test_the_user_chooses_the_image_size_and_the_check_resizes_every_image_to_it_once(alice_client):
    from sandbox.engine import buildx_runtime as rt

    dataset = upload(alice_client, zip_of(three_classes(per_class=6, size=12)), image_side=20)
    assert dataset.status == "ready", dataset.problems
    assert dataset.image_side == 20 and dataset.input_shape == [3, 20, 20]
    cache = rt.load_cache(services.cache_path(dataset))
    assert tuple(cache["images"].shape) == (18, 3, 20, 20)  # stored at the chosen size: no resizing per run
    listed = {d["name"]: d for d in alice_client.get("/api/v1/datasets/").json()["results"]}
    assert listed[dataset.spec_name]["input_shape"] == [3, 20, 20]

    for side in (4, 500):
        refused = alice_client.post(
            "/api/v1/datasets/",
            {"name": "Odd", "size": 100, "image_side": side},
            content_type="application/json",
        )
        assert refused.status_code == 400
        assert "between 8 and 128 pixels" in refused.json()["error"]["fields"]["image_side"][0]
