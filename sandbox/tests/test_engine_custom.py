"""Custom dataset zips: good ones become a cache; hostile ones are refused, naming the bad entries."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile

import pytest
import torch
from PIL import Image

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import custom


def png(size=(12, 10), colour=(200, 30, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(size=(16, 16), colour=(20, 200, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def make_zip(path, entries: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> str:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return str(path)


def good_entries(prefix: str = "") -> dict[str, bytes]:
    return {
        f"{prefix}cats/a.png": png(colour=(200, 0, 0)),
        f"{prefix}cats/b.jpg": jpeg(colour=(210, 10, 10)),
        f"{prefix}cats/c.png": png(colour=(190, 5, 0)),
        f"{prefix}dogs/a.png": png(colour=(0, 0, 200)),
        f"{prefix}dogs/b.jpeg": jpeg(size=(24, 20), colour=(0, 10, 220)),
        f"{prefix}dogs/.DS_Store": b"\x00\x01junk",  # the clutter that zipping a folder brings along
        f"{prefix}__MACOSX/dogs/._a.png": b"junk",
    }


def codes(report: custom.ZipReport) -> dict[str, str]:
    return {p.entry: p.code for p in report.problems}


# --- what a good zip becomes ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "my-pets/"])
def test_a_zip_of_class_folders_becomes_a_cache_of_one_image_size(tmp_path, prefix):
    path = make_zip(tmp_path / "pets.zip", good_entries(prefix))
    report = custom.check_zip(path)
    assert report.ok, report.problems
    assert report.classes == {"cats": 3, "dogs": 2}

    result = custom.extract_to_cache(path, cache_path=tmp_path / "custom-1-v1.pt")
    assert result.class_names == ["cats", "dogs"]
    assert result.input_shape == (3, 10, 12)  # the most common size, colour
    assert result.counts == {"cats": 3, "dogs": 2}
    cache = rt.load_cache(result.cache_path)
    assert cache["images"].shape == (5, 3, 10, 12) and cache["images"].dtype == torch.uint8
    assert cache["class_names"] == ["cats", "dogs"]
    assert sorted(cache["labels"].tolist()) == [0, 0, 0, 1, 1]
    red = cache["images"][cache["labels"] == 0].float().mean(dim=(0, 2, 3))
    assert red[0] > 150 and red[2] < 40  # the cats are red, channel first
    assert len(cache["train_idx"]) + len(cache["test_idx"]) == 5 and len(cache["test_idx"]) >= 2
    assert not (tmp_path / "cats").exists() and not (tmp_path / "my-pets").exists()  # nothing extracted


def test_large_images_shrink_to_the_side_limit_and_greyscale_stays_one_channel(tmp_path):
    entries = {f"{c}/{i}.png": png(size=(200, 100), mode="L") for c in ("a", "b") for i in range(2)}
    result = custom.extract_to_cache(
        make_zip(tmp_path / "g.zip", entries), cache_path=tmp_path / "c.pt", max_side=64
    )
    assert result.input_shape == (1, 32, 64)


# --- hostile zips ---------------------------------------------------------------------------------------


def test_a_zip_bomb_entry_is_refused_by_counting_what_it_decompresses_to(tmp_path):
    entries = good_entries()
    entries["cats/bomb.png"] = b"\x89PNG\r\n\x1a\n" + bytes(30 * 1024 * 1024)  # 30 MB of zeros, ~30 KB zipped
    path = make_zip(tmp_path / "bomb.zip", entries)
    assert os.path.getsize(path) < 100_000
    report = custom.check_zip(path)
    assert codes(report) == {"cats/bomb.png": "bomb"}
    # it stopped reading soon after passing the ratio, not at 30 MB
    assert report.problems[0].params["read_bytes"] < 5 * 1024 * 1024


def patch_central_record(path, entry: str, fmt: str, offset: int, value: int) -> None:
    """Overwrite one field of an entry's central directory record: the header zipfile believes."""
    raw = bytearray(open(path, "rb").read())
    at = raw.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46 : at + 46 + name_len] == entry.encode():
            struct.pack_into(fmt, raw, at + offset, value)
            open(path, "wb").write(bytes(raw))
            return
        at = raw.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{entry} not found")


def test_a_zip_whose_headers_understate_the_size_is_refused(tmp_path):
    path = make_zip(
        tmp_path / "liar.zip", {**good_entries(), "dogs/liar.png": b"\x89PNG\r\n\x1a\n" + bytes(2_000_000)}
    )
    patch_central_record(path, "dogs/liar.png", "<I", 24, 1024)  # "uncompressed size: 1 KB"
    report = custom.check_zip(path)
    assert set(codes(report)) == {"dogs/liar.png"}
    assert codes(report)["dogs/liar.png"] in {"bomb", "corrupt"}


def test_many_entries_that_together_decompress_to_too_much_stop_the_whole_check(tmp_path):
    noise = [os.urandom(300_000) for _ in range(5)]  # incompressible: each entry's ratio is fine
    entries = {f"cats/{i}.png": b"\x89PNG\r\n\x1a\n" + n for i, n in enumerate(noise)}
    entries["dogs/a.png"] = png()
    limits = custom.ZipLimits(max_total_bytes=1_000_000)
    report = custom.check_zip(make_zip(tmp_path / "big.zip", entries), limits=limits)
    assert [p.code for p in report.problems][-1] == "bomb"
    assert report.problems[-1].entry == "cats/3.png"  # the entry that crossed the budget; nothing after it


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../evil.png", "path_escape"),
        ("cats/../../evil.png", "path_escape"),
        ("/etc/evil.png", "absolute_path"),
        ("C:/evil.png", "absolute_path"),
        ("cats\\..\\evil.png", "absolute_path"),
    ],
)
def test_paths_that_escape_or_are_absolute_are_refused_before_anything_is_decompressed(tmp_path, name, code):
    path = tmp_path / "escape.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in good_entries().items():
            zf.writestr(entry, data)
        zf.writestr(zipfile.ZipInfo(name), png())
    report = custom.check_zip(path)
    assert codes(report) == {name: code}
    assert report.images == []  # no entry was decoded


def test_a_symlink_entry_is_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in good_entries().items():
            zf.writestr(entry, data)
        link = zipfile.ZipInfo("cats/passwd.png")
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    assert codes(custom.check_zip(path)) == {"cats/passwd.png": "link"}


def test_an_encrypted_entry_is_refused(tmp_path):
    path = tmp_path / "enc.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in good_entries().items():
            zf.writestr(entry, data)
        zf.writestr("dogs/secret.png", png())
    patch_central_record(path, "dogs/secret.png", "<H", 8, 0x1)  # general purpose flag: encrypted
    assert codes(custom.check_zip(path)) == {"dogs/secret.png": "encrypted"}


def test_too_many_entries_are_refused_without_reading_them(tmp_path):
    entries = {f"c{i % 2}/{i}.png": png() for i in range(12)}
    report = custom.check_zip(
        make_zip(tmp_path / "many.zip", entries), limits=custom.ZipLimits(max_entries=10)
    )
    assert [(p.entry, p.code, p.params) for p in report.problems] == [("", "too_many_entries", {"limit": 10})]


def test_an_upload_over_the_size_limit_or_not_a_zip_is_refused(tmp_path):
    path = make_zip(tmp_path / "ok.zip", good_entries())
    assert codes(custom.check_zip(path, limits=custom.ZipLimits(max_zip_bytes=100))) == {"": "zip_too_big"}
    (tmp_path / "x.zip").write_bytes(b"not a zip at all")
    assert codes(custom.check_zip(tmp_path / "x.zip")) == {"": "not_a_zip"}


def test_files_that_are_not_png_or_jpeg_are_named(tmp_path):
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    bmp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bmp, format="BMP")
    entries = {
        **good_entries(),
        "cats/readme.txt": b"hello",
        "cats/script.py": b"import os; os.system('id')",
        "dogs/anim.png": gif.getvalue(),  # a GIF wearing a .png name
        "dogs/old.bmp": bmp.getvalue(),
        "dogs/broken.png": png()[:40],  # a PNG signature, then garbage
        "notes.png": png(),  # not inside a class folder
    }
    report = custom.check_zip(make_zip(tmp_path / "mixed.zip", entries))
    assert codes(report) == {
        "cats/readme.txt": "not_an_image",
        "cats/script.py": "not_an_image",
        "dogs/anim.png": "not_an_image",
        "dogs/old.bmp": "not_an_image",
        "dogs/broken.png": "corrupt_image",
        "notes.png": "not_in_class_folder",
    }
    assert not report.ok
    with pytest.raises(custom.ZipRejected) as rejected:
        custom.extract_to_cache(make_zip(tmp_path / "mixed2.zip", entries), cache_path=tmp_path / "c.pt")
    assert "cats/readme.txt" in rejected.value.report.bad_entries()
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("side", [6000, 8000])  # above the limit, and above twice the limit
def test_an_image_with_a_huge_pixel_count_is_refused_before_it_is_decoded(tmp_path, side):
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # a few KB on disk, 36+ million pixels
    path = make_zip(tmp_path / "pixels.zip", {**good_entries(), "cats/huge.png": buf.getvalue()})
    report = custom.check_zip(path)
    assert codes(report) == {"cats/huge.png": "too_many_pixels"}
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own default is back for the rest of the process


def test_a_single_class_is_not_a_dataset(tmp_path):
    report = custom.check_zip(make_zip(tmp_path / "one.zip", {"cats/a.png": png(), "cats/b.png": png()}))
    assert [(p.code, p.params) for p in report.problems] == [("too_few_classes", {"found": 1})]


def test_the_answer_lists_at_most_the_problem_limit_and_counts_the_rest(tmp_path):
    entries = {**good_entries(), **{f"cats/{i}.txt": b"x" for i in range(8)}}
    report = custom.check_zip(make_zip(tmp_path / "m.zip", entries), limits=custom.ZipLimits(max_problems=5))
    assert len(report.problems) == 5 and report.more_problems == 3
    assert report.as_dict()["more_problems"] == 3 and not report.ok


# --- the central directory, streamed; overlapping entries; broken images; a split of the user's own -------


def central_record(name: bytes, *, offset: int, compress_size: int) -> bytes:
    return (
        struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            0,
            0,
            0,
            0,
            compress_size,
            compress_size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + name
    )


def end_record(entries: int, cd_size: int, cd_offset: int) -> bytes:
    n = min(entries, 0xFFFF)
    return struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, cd_size, cd_offset, 0)


def test_a_million_entries_are_refused_reading_the_directory_as_a_stream(tmp_path):
    import time
    import tracemalloc

    path = tmp_path / "million.zip"
    record = central_record(b"a/x.png", offset=0, compress_size=0)
    with open(path, "wb") as f:
        for _ in range(10):
            f.write(record * 100_000)  # the directory alone: 53 MB
        f.write(end_record(1_000_000, len(record) * 1_000_000, 0))
    tracemalloc.start()
    started = time.monotonic()
    report = custom.check_zip(path)
    _now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(p.code, p.params) for p in report.problems] == [("too_many_entries", {"limit": 20_000})]
    assert peak < 8 * 2**20, peak  # zipfile.ZipFile would have built a million ZipInfo objects
    assert time.monotonic() - started < 60  # a generous bound: it stops after 20,001 records


def test_an_end_record_that_understates_the_entries_does_not_hide_them(tmp_path):
    path = tmp_path / "liar.zip"
    record = central_record(b"a/x.png", offset=0, compress_size=0)
    with open(path, "wb") as f:
        f.write(record * 30)
        f.write(end_record(2, len(record) * 30, 0))  # "two entries"
    report = custom.check_zip(path, limits=custom.ZipLimits(max_entries=10))
    assert [p.code for p in report.problems] == ["too_many_entries"]


def test_entries_that_share_their_data_are_an_overlap_bomb(tmp_path):
    import zlib

    # One deflated kernel of 10 MB of zeros, named by many central records: the smallest zip bombs.
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = packer.compress(b"\x89PNG\r\n\x1a\n" + bytes(10 * 2**20)) + packer.flush()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(kernel), 10 * 2**20 + 8, 7, 0)
    body = local + b"a/0.png" + kernel
    records = b"".join(
        central_record(f"a/{i}.png".encode(), offset=0, compress_size=len(kernel)) for i in range(3)
    )
    path = tmp_path / "overlap.zip"
    path.write_bytes(body + records + end_record(3, len(records), len(body)))
    report = custom.check_zip(path)
    assert [p.code for p in report.problems] == ["overlap"]
    assert report.images == []


def test_a_truncated_image_and_text_named_png_are_named(tmp_path):
    whole = png(size=(64, 64))
    entries = {
        **good_entries(),
        "cats/cut.png": whole[: len(whole) - 30],
        "dogs/notes.png": b"just some text\n",
    }
    report = custom.check_zip(make_zip(tmp_path / "bad.zip", entries))
    assert codes(report) == {"cats/cut.png": "corrupt_image", "dogs/notes.png": "not_an_image"}


def noise_png(seed: int, size=(10, 10)) -> bytes:
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_a_zip_with_train_and_test_folders_keeps_its_split(tmp_path):
    entries = {}
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cats", "dogs"):
            for i in range(n):
                entries[f"pets/{split}/{cls}/{i}.png"] = noise_png(hash((split, cls, i)) % 10_000)
    entries["pets/test/cats/dup.png"] = entries["pets/train/cats/0.png"]
    path = make_zip(tmp_path / "split.zip", entries)
    report = custom.check_zip(path)
    assert report.ok, report.problems
    assert report.classes == {"cats": 9, "dogs": 8}
    assert {w.code for w in report.warnings} == {"few_images", "duplicates_across_splits"}
    result = custom.extract_to_cache(path, cache_path=tmp_path / "c.pt", report=report)
    assert (result.train, result.test, result.own_split) == (12, 5, True)
    assert len(result.content_hash) == 64 and len(result.mean) == 3


def test_a_split_whose_folders_differ_is_refused(tmp_path):
    entries = {"train/cats/a.png": png(), "train/dogs/a.png": png(), "test/cats/b.png": png()}
    report = custom.check_zip(make_zip(tmp_path / "s.zip", entries))
    assert [(p.code, p.params) for p in report.problems] == [("split_classes_differ", {"classes": ["dogs"]})]


def test_identical_images_never_land_on_both_sides_of_a_split_made_here(tmp_path):
    same = noise_png(1)
    entries = {f"a/{i}.png": same for i in range(10)} | {f"b/{i}.png": noise_png(100 + i) for i in range(10)}
    result = custom.extract_to_cache(make_zip(tmp_path / "d.zip", entries), cache_path=tmp_path / "c.pt")
    cache = rt.load_cache(result.cache_path)
    assert result.moved_duplicates == 2
    assert (cache["labels"][cache["test_idx"]] == 0).sum() == 0  # every copy of the same image is in train
    assert result.train + result.test == 20


def test_progress_is_reported_and_a_few_images_and_imbalance_warn(tmp_path):
    entries = {f"a/{i}.png": noise_png(i) for i in range(30)} | {
        f"b/{i}.png": noise_png(50 + i) for i in range(5)
    }
    seen = []
    result = custom.extract_to_cache(
        make_zip(tmp_path / "w.zip", entries),
        cache_path=tmp_path / "c.pt",
        progress=lambda stage, done, total: seen.append((stage, done, total)),
        side=16,
    )
    assert result.input_shape == (3, 16, 16)
    assert ("checking", 35, 35) in seen and ("decoding", 35, 35) in seen
    assert {(w.code, tuple(sorted(w.params.items()))) for w in result.warnings} == {
        ("few_images", (("class", "b"), ("count", 5), ("min", 20))),
        ("imbalance", (("largest", 30), ("ratio", 6.0), ("smallest", 5))),
    }
    samples = custom.write_samples(
        rt.load_cache(result.cache_path)["images"],
        rt.load_cache(result.cache_path)["labels"],
        classes=2,
        path=tmp_path / "s.png",
    )
    assert Image.open(samples).size == (8 * 66, 2 * 66)
