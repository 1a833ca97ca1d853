"""Custom datasets: a zip with one folder per class of PNG/JPEG images, checked, then decoded to a cache.

Runs in the worker, never in the web process. Nothing is written to disk from the zip except the final
cache file: entries are read into memory one at a time, counting bytes as they decompress, because the
sizes in a zip's headers are whatever its author wrote (and Python 3.11.7's zipfile predates the check
for overlapping entries, the trick behind the smallest zip bombs).

check_zip() answers with every problem it found, each naming the entry, with a code the platform turns
into a translated message (this module has no Django). extract_to_cache() checks, then decodes every
image to one size into a cache file that buildx_runtime.load_cache reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from sandbox.engine import buildx_runtime as rt

ALLOWED_FORMATS = ("PNG", "JPEG")  # the only parsers Pillow may use on uploads
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
JUNK = re.compile(r"(^|/)(__MACOSX/|\.[^/]*$|Thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
CHUNK = 64 * 1024
SPLIT_FOLDERS = ("train", "test")  # a zip with these two top folders brings its own split
FEW_IMAGES = 20  # a class with fewer images than this gets a warning
IMBALANCE = 3.0  # the largest class over the smallest: above this, a warning

# progress(stage, done, total): "checking" while entries are read, "decoding" while the cache is made.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ZipLimits:
    max_zip_bytes: int = 200 * 1024 * 1024  # the upload itself
    max_entries: int = 20_000
    max_entry_bytes: int = 20 * 1024 * 1024  # one image, decompressed
    max_total_bytes: int = 1024 * 1024 * 1024  # everything, decompressed
    max_ratio: float = 100.0  # decompressed / compressed, per entry and for the whole zip
    ratio_grace_bytes: int = 64 * 1024  # small entries may compress well without looking like a bomb
    max_image_pixels: int = 25_000_000  # about 5000 x 5000: a phone photo fits, a pixel bomb does not
    max_classes: int = 100
    max_problems: int = 50  # the answer lists this many, then says how many more


@dataclass(frozen=True)
class ZipProblem:
    entry: str  # the entry's name inside the zip; "" for the whole archive
    code: str
    message: str  # English; the platform shows a translated message chosen by `code`
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ZipReport:
    problems: list[ZipProblem] = field(default_factory=list)
    more_problems: int = 0  # found beyond limits.max_problems
    classes: dict[str, int] = field(default_factory=dict)  # class name -> images
    images: list[tuple[str, str]] = field(default_factory=list)  # (entry, class) of every good image
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    colour: int = 0  # images that are not greyscale
    splits: dict[str, str] = field(
        default_factory=dict
    )  # entry -> "train" | "test", when the zip has its own
    digests: dict[str, str] = field(default_factory=dict)  # entry -> SHA-1 of its bytes (duplicates)
    warnings: list[ZipProblem] = field(default_factory=list)  # the dataset is usable, but look at this

    @property
    def ok(self) -> bool:
        return not self.problems and not self.more_problems

    def bad_entries(self) -> list[str]:
        return [p.entry for p in self.problems if p.entry]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [
                {"entry": p.entry, "code": p.code, "message": p.message, "params": p.params}
                for p in self.problems
            ],
            "more_problems": self.more_problems,
            "classes": dict(self.classes),
            "images": len(self.images),
            "warnings": [
                {"entry": p.entry, "code": p.code, "message": p.message, "params": p.params}
                for p in self.warnings
            ],
        }


class ZipRejected(Exception):
    def __init__(self, report: ZipReport) -> None:
        super().__init__("; ".join(f"{p.entry or 'zip'}: {p.message}" for p in report.problems[:5]))
        self.report = report


class _Budget:
    """Decompressed bytes left for the whole archive; exceeding it means a bomb, whatever the headers say."""

    def __init__(self, limit: int) -> None:
        self.left = limit


class _TooBig(Exception):
    def __init__(self, code: str, read: int) -> None:
        self.code = code
        self.read = read


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits, budget: _Budget) -> bytes:
    """Decompress one entry, counting real bytes against the entry's and the archive's limits."""
    # The ratio uses the compressed size from the header: if it lies low, we stop early (safe); if it
    # lies high, zipfile reads past the entry into others' data, which the archive budget still counts.
    entry_cap = min(
        limits.max_entry_bytes, max(limits.ratio_grace_bytes, int(info.compress_size * limits.max_ratio))
    )
    out = io.BytesIO()
    read = 0
    with zf.open(info) as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            read += len(chunk)
            budget.left -= len(chunk)
            if budget.left < 0:
                raise _TooBig("archive_too_big", read)
            if read > entry_cap:
                raise _TooBig("entry_too_big", read)
            out.write(chunk)
    return out.getvalue()


@contextlib.contextmanager
def _pillow_limits(max_pixels: int) -> Iterator[Any]:
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses twice this outright and warns above it
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _open_image(Image: Any, data: bytes, limits: ZipLimits) -> Any:
    """Open PNG or JPEG bytes with only those parsers, refusing pixel bombs before decoding."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    w, h = im.size
    if w * h > limits.max_image_pixels:
        raise Image.DecompressionBombError(f"{w}x{h}")
    return im


def _layout(names: list[str]) -> tuple[int, dict[str, str | None]]:
    """How many leading folders to drop (a zip of one folder holding the class folders), and each file's class."""
    strip, classes, _splits = layout(names)
    return strip, classes


def layout(names: list[str]) -> tuple[int, dict[str, str | None], dict[str, str]]:
    """(leading folders dropped, each file's class, each file's split when the zip has train/ and test/).

    `cats/a.png`, `pets/cats/a.png`: class folders (one wrapping folder is dropped). `train/cats/a.png`
    with `test/cats/b.png` (or under one wrapping folder): the user's own split.
    """
    parts = {n: PurePosixPath(n).parts for n in names}
    strip = 0
    firsts = {p[0] for p in parts.values() if p}
    if len(firsts) == 1 and all(len(p) >= 3 for p in parts.values()) and firsts != {"train"}:
        strip = 1
    tops = {p[strip].lower() for p in parts.values() if len(p) > strip}
    if tops == set(SPLIT_FOLDERS) and all(len(p) - strip >= 3 for p in parts.values()):
        in_split: dict[str, str | None] = {n: p[strip + 1] for n, p in parts.items()}
        splits = {n: p[strip].lower() for n, p in parts.items()}
        return strip + 1, in_split, splits
    classes: dict[str, str | None] = {
        n: (p[strip] if len(p) - strip >= 2 else None) for n, p in parts.items()
    }
    return strip, classes, {}


def _path_problem(info: zipfile.ZipInfo) -> ZipProblem | None:
    name = info.filename
    mode = (info.external_attr >> 16) & 0xFFFF
    if stat.S_ISLNK(mode):
        return ZipProblem(name, "link", "Links are not allowed in the zip.")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return ZipProblem(name, "absolute_path", "Absolute paths are not allowed in the zip.")
    if ".." in PurePosixPath(name).parts or "\x00" in name:
        return ZipProblem(name, "path_escape", "Paths that leave the zip's folder are not allowed.")
    if info.flag_bits & 0x1:
        return ZipProblem(name, "encrypted", "Encrypted entries cannot be read.")
    return None


# --- The central directory, read as a stream -------------------------------------------------------------

EOCD_SIG = b"PK\x05\x06"
EOCD64_LOCATOR_SIG = b"PK\x06\x07"
EOCD64_SIG = b"PK\x06\x06"
CENTRAL_SIG = b"PK\x01\x02"
LOCAL_HEADER_BYTES = 30  # a local file header without its name and extra field


@dataclass(frozen=True)
class CentralEntry:
    name_bytes: int
    compress_size: int
    header_offset: int


def _end_of_central_directory(f: Any, size: int) -> tuple[int, int, int, int] | None:
    """(entries the archive claims, central directory size, its offset as written, where the record sits)."""
    tail = min(size, 22 + 0xFFFF)
    f.seek(size - tail)
    data = f.read(tail)
    at = data.rfind(EOCD_SIG)
    if at < 0 or len(data) - at < 22:
        return None
    _sig, _disk, _cd_disk, _here, total, cd_size, cd_offset, _comment = struct.unpack_from(
        "<4sHHHHIIH", data, at
    )
    where = size - tail + at
    if (total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF) and at >= 20:
        loc = data[at - 20 : at]
        if loc[:4] == EOCD64_LOCATOR_SIG:
            (eocd64_offset,) = struct.unpack_from("<Q", loc, 8)
            if 0 <= eocd64_offset < size - 56:
                f.seek(eocd64_offset)
                rec = f.read(56)
                if rec[:4] == EOCD64_SIG:
                    total, cd_size, cd_offset = struct.unpack_from("<QQQ", rec, 32)
                    where = eocd64_offset
    return total, cd_size, cd_offset, where


def scan_central_directory(path: str | os.PathLike, *, max_entries: int) -> ZipProblem | list[CentralEntry]:
    """Read the central directory record by record, in bounded memory; stop at max_entries + 1.

    zipfile.ZipFile reads every record into a ZipInfo before anything can count them: a million tiny
    entries cost hundreds of MB before the first check. Here the count is taken as the bytes stream by,
    walking the directory's real size (the entry count in the end record is whatever the author wrote).
    Entries whose data overlap another's (the trick behind the smallest zip bombs, which Python 3.11.7's
    zipfile does not detect) are refused here too.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        end = _end_of_central_directory(f, size)
        if end is None:
            return ZipProblem("", "not_a_zip", "This file is not a zip archive.")
        _claimed, cd_size, cd_offset, where = end
        concat = where - cd_size - cd_offset  # bytes prepended to the archive (a self-extractor), as zipfile
        start = cd_offset + concat
        if concat < 0 or start < 0 or start + cd_size > size:
            return ZipProblem("", "not_a_zip", "This file is not a zip archive.")
        f.seek(start)
        reader = io.BufferedReader(_Window(f, cd_size), buffer_size=CHUNK)
        entries: list[CentralEntry] = []
        while True:
            head = reader.read(46)
            if len(head) < 46:
                break
            if head[:4] != CENTRAL_SIG:
                return ZipProblem("", "not_a_zip", "This file is not a zip archive.")
            if len(entries) >= max_entries:
                # One more is enough to say no; how many more there are does not matter.
                return ZipProblem(
                    "",
                    "too_many_entries",
                    f"The zip has more than {max_entries} entries.",
                    {"limit": max_entries},
                )
            compress_size, _file_size, name_len, extra_len, comment_len = struct.unpack_from(
                "<IIHHH", head, 20
            )
            (header_offset,) = struct.unpack_from("<I", head, 42)
            extra = reader.read(name_len + extra_len + comment_len)[name_len : name_len + extra_len]
            compress_size, header_offset = _zip64_sizes(extra, compress_size, header_offset, head)
            entries.append(CentralEntry(name_len, compress_size, header_offset + concat))
    ordered = sorted(entries, key=lambda e: e.header_offset)
    for previous, entry in zip(ordered, ordered[1:], strict=False):
        # The earliest the previous entry's data can end; a local extra field only makes it later.
        if (
            entry.header_offset
            < previous.header_offset + LOCAL_HEADER_BYTES + previous.name_bytes + previous.compress_size
        ):
            return ZipProblem(
                "",
                "overlap",
                "Entries of this zip share their data: a zip bomb?",
                {"offset": entry.header_offset},
            )
    return entries


def _zip64_sizes(extra: bytes, compress_size: int, header_offset: int, head: bytes) -> tuple[int, int]:
    """The real compressed size and header offset of an entry whose 32-bit fields say "see zip64"."""
    (file_size,) = struct.unpack_from("<I", head, 24)
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == 0x0001:
            values = extra[at + 4 : at + 4 + length]
            pos = 0
            if file_size == 0xFFFFFFFF and pos + 8 <= len(values):
                pos += 8
            if compress_size == 0xFFFFFFFF and pos + 8 <= len(values):
                (compress_size,) = struct.unpack_from("<Q", values, pos)
                pos += 8
            if header_offset == 0xFFFFFFFF and pos + 8 <= len(values):
                (header_offset,) = struct.unpack_from("<Q", values, pos)
            break
        at += 4 + length
    return compress_size, header_offset


class _Window(io.RawIOBase):
    """At most `length` bytes of an open file from where it stands: the central directory and no further."""

    def __init__(self, f: Any, length: int) -> None:
        self.f = f
        self.left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        data = self.f.read(n)
        buffer[: len(data)] = data
        self.left -= len(data)
        return len(data)


def check_zip(
    path: str | os.PathLike, *, limits: ZipLimits | None = None, progress: Progress | None = None
) -> ZipReport:
    """Check an uploaded zip completely; report.ok is True only if every rule holds."""
    limits = limits or ZipLimits()
    report = ZipReport()

    def problem(p: ZipProblem) -> None:
        if len(report.problems) < limits.max_problems:
            report.problems.append(p)
        else:
            report.more_problems += 1

    size = os.path.getsize(path)
    if size > limits.max_zip_bytes:
        problem(
            ZipProblem(
                "",
                "zip_too_big",
                f"The zip is larger than {limits.max_zip_bytes // 2**20} MB.",
                {"limit_mb": limits.max_zip_bytes // 2**20},
            )
        )
        return report
    scanned = scan_central_directory(path, max_entries=limits.max_entries)
    if isinstance(scanned, ZipProblem):
        problem(scanned)
        return report  # refused before zipfile reads the directory whole
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        problem(ZipProblem("", "not_a_zip", "This file is not a zip archive."))
        return report

    with zf, _pillow_limits(limits.max_image_pixels) as Image:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            problem(
                ZipProblem(
                    "",
                    "too_many_entries",
                    f"The zip has more than {limits.max_entries} entries.",
                    {"limit": limits.max_entries, "found": len(infos)},
                )
            )
            return report
        files = []
        seen: set[str] = set()
        for info in infos:
            bad = _path_problem(info)
            if bad:
                problem(bad)
                continue
            if info.filename in seen:
                problem(ZipProblem(info.filename, "duplicate", "This name appears twice in the zip."))
                continue
            seen.add(info.filename)
            if not info.is_dir() and not JUNK.search(info.filename):
                files.append(info)
        if report.problems:
            return report  # nothing is decompressed from a zip that tries to escape

        _, class_of, split_of = layout([i.filename for i in files])
        budget = _Budget(min(limits.max_total_bytes, int(max(size, 1) * limits.max_ratio)))
        for done, info in enumerate(files):
            if progress is not None and done % 100 == 0:
                progress("checking", done, len(files))
            name = info.filename
            cls = class_of[name]
            if cls is None:
                problem(
                    ZipProblem(
                        name,
                        "not_in_class_folder",
                        "Images must sit inside a folder named after their class.",
                    )
                )
                continue
            try:
                data = _read_entry(zf, info, limits, budget)
            except _TooBig as e:
                problem(
                    ZipProblem(
                        name,
                        "bomb",
                        "This entry decompresses to far more than its size: a zip bomb?",
                        {"read_bytes": e.read},
                    )
                )
                if e.code == "archive_too_big":
                    break  # the whole archive's budget is gone: stop decompressing anything
                continue
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as e:
                problem(ZipProblem(name, "corrupt", f"This entry cannot be read: {e}."))
                continue
            if not any(data.startswith(sig) for sig in SIGNATURES):
                problem(ZipProblem(name, "not_an_image", "Only PNG and JPEG images are allowed."))
                continue
            try:
                im = _open_image(Image, data, limits)
                w, h = im.size
                im.draft(
                    im.mode, (max(w // 8, 1), max(h // 8, 1))
                )  # JPEG: decode at 1/8 scale, still every byte
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                problem(
                    ZipProblem(
                        name,
                        "too_many_pixels",
                        f"This image is larger than {limits.max_image_pixels:,} pixels ({e}).",
                        {"limit": limits.max_image_pixels},
                    )
                )
                continue
            except Exception as e:  # noqa: BLE001 - any decoder failure means a broken image for the user
                problem(
                    ZipProblem(name, "corrupt_image", f"This image cannot be decoded ({type(e).__name__}).")
                )
                continue
            report.images.append((name, cls))
            report.digests[name] = hashlib.sha1(data, usedforsecurity=False).hexdigest()
            if name in split_of:
                report.splits[name] = split_of[name]
            report.classes[cls] = report.classes.get(cls, 0) + 1
            report.sizes[(w, h)] += 1
            if im.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                report.colour += 1

    if len(report.classes) > limits.max_classes:
        problem(
            ZipProblem(
                "",
                "too_many_classes",
                f"The zip has more than {limits.max_classes} class folders.",
                {"limit": limits.max_classes, "found": len(report.classes)},
            )
        )
    if not report.problems and len(report.classes) < 2:
        problem(
            ZipProblem(
                "",
                "too_few_classes",
                "A dataset needs at least two class folders, each with at least one image.",
                {"found": len(report.classes)},
            )
        )
    if report.splits and not report.problems:
        _check_own_split(report, problem)
    if progress is not None:
        progress("checking", len(report.images), len(report.images))
    _add_warnings(report)
    return report


def _check_own_split(report: ZipReport, problem: Callable[[ZipProblem], None]) -> None:
    """A zip with train/ and test/: every class in both, and the same classes."""
    by_split: dict[str, set[str]] = {s: set() for s in SPLIT_FOLDERS}
    for name, cls in report.images:
        by_split[report.splits[name]].add(cls)
    missing = sorted(by_split["train"] ^ by_split["test"])
    if missing:
        problem(
            ZipProblem(
                "",
                "split_classes_differ",
                "train/ and test/ must hold the same class folders; only one has: "
                + ", ".join(missing)
                + ".",
                {"classes": missing},
            )
        )


def class_warnings(classes: dict[str, int]) -> list[ZipProblem]:
    """Warnings from the images per class alone: tiny classes, imbalance. The worker computes them
    again from the tensors the check's box wrote (sandbox/upload_check.py)."""
    warnings = []
    for cls, n in sorted(classes.items()):
        if n < FEW_IMAGES:
            warnings.append(
                ZipProblem(
                    "",
                    "few_images",
                    f"Class {cls} has {n} images: add more (at least {FEW_IMAGES}).",
                    {"class": cls, "count": n, "min": FEW_IMAGES},
                )
            )
    if classes:
        most, least = max(classes.values()), min(classes.values())
        if least and most / least > IMBALANCE:
            warnings.append(
                ZipProblem(
                    "",
                    "imbalance",
                    f"The largest class has {most / least:.1f} times the images of the smallest.",
                    {"ratio": round(most / least, 1), "largest": most, "smallest": least},
                )
            )
    return warnings


def _add_warnings(report: ZipReport) -> None:
    """What makes a poor dataset without making it unusable: tiny classes, imbalance, duplicates."""
    report.warnings.extend(class_warnings(report.classes))
    if report.splits:
        train = {report.digests[n] for n, _c in report.images if report.splits[n] == "train"}
        both = [n for n, _c in report.images if report.splits[n] == "test" and report.digests[n] in train]
        if both:
            report.warnings.append(
                ZipProblem(
                    both[0],
                    "duplicates_across_splits",
                    f"{len(both)} test images are also in train/: the test accuracy will look better than it is.",
                    {"count": len(both)},
                )
            )


@dataclass(frozen=True)
class CustomDataset:
    cache_path: Path
    input_shape: tuple[int, int, int]
    class_names: list[str]
    counts: dict[str, int]
    train: int
    test: int
    mean: tuple[float, ...] = ()  # per channel, of the [0, 1] training images: Normalize's default
    std: tuple[float, ...] = ()
    content_hash: str = ""  # SHA-256 of the decoded images, labels and split: what a run trained on
    own_split: bool = False  # the zip brought train/ and test/
    moved_duplicates: int = 0  # test images moved to train because the same bytes were there too
    warnings: list[ZipProblem] = field(default_factory=list)


def target_shape(report: ZipReport, *, max_side: int, side: int | None = None) -> tuple[int, int, int]:
    """(C, H, W): the most common image size, shrunk to fit max_side; colour if most images are colour.

    `side` (the user's choice) makes it square: side x side.
    """
    channels = 3 if report.colour * 2 > len(report.images) else 1
    if side:
        return channels, side, side
    (w, h), _ = report.sizes.most_common(1)[0]
    scale = min(1.0, max_side / max(w, h))
    return channels, max(1, round(h * scale)), max(1, round(w * scale))


def content_hash(decoded: dict[str, Any]) -> str:
    """SHA-256 over the tensors a run reads: the same images, labels and split give the same hash."""
    digest = hashlib.sha256()
    for key in ("images", "labels", "train_idx", "test_idx"):
        t = decoded[key].contiguous()
        digest.update(key.encode() + str(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes())
    digest.update("\n".join(decoded["class_names"]).encode())
    return digest.hexdigest()


def channel_stats(images: torch.Tensor, idx: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the [0, 1] images at idx, in slices (never a float copy of them all)."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, len(idx), 1024):
        x = images.index_select(0, idx[start : start + 1024]).double() / 255.0  # (b, C, H, W)
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        return tuple(0.5 for _ in range(c)), tuple(0.5 for _ in range(c))
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(round(max(float(s), 1e-3), 4) for s in std)


def write_samples(
    images: torch.Tensor, labels: torch.Tensor, *, classes: int, path: str | os.PathLike, per_class: int = 8
) -> Path:
    """A PNG grid: one row per class, its first `per_class` images, each scaled to at most 64 pixels."""
    from PIL import Image

    _n, c, h, w = images.shape
    scale = max(1, 64 // max(h, w))
    cell_h, cell_w = h * scale, w * scale
    grid = Image.new("RGB", (per_class * (cell_w + 2), classes * (cell_h + 2)), (255, 255, 255))
    for k in range(classes):
        idx = (labels == k).nonzero().flatten()[:per_class]
        for j, i in enumerate(idx.tolist()):
            pixels = images[i].permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
            im = Image.fromarray(pixels[:, :, 0], "L") if c == 1 else Image.fromarray(pixels, "RGB")
            if scale > 1:
                im = im.resize((cell_w, cell_h), Image.Resampling.NEAREST)
            grid.paste(im.convert("RGB"), (j * (cell_w + 2), k * (cell_h + 2)))
    out = Path(path)
    grid.save(out, format="PNG")
    return out


def decode_images(
    zip_path: str | os.PathLike,
    *,
    limits: ZipLimits | None = None,
    max_side: int = 64,
    side: int | None = None,
    test_share: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    report: ZipReport | None = None,
) -> tuple[dict[str, Any], ZipReport, int]:
    """Check the zip (unless `report` is its check), then decode every image to one (C, H, W).

    Returns (decoded, report, moved): `decoded` holds `images` uint8 (N, C, H, W), `labels`,
    `class_names`, `train_idx`, `test_idx`, as a dataset cache does. The split is the zip's own (train/
    and test/) or `test_share` of each class, fixed by `seed`; an image whose exact bytes are in both
    parts of a split made here moves to train (`moved` counts them).
    Raises ZipRejected with the full report when the zip breaks a rule.
    """
    from PIL import ImageOps

    limits = limits or ZipLimits()
    if report is None:
        report = check_zip(zip_path, limits=limits, progress=progress)
    if not report.ok:
        raise ZipRejected(report)
    c, h, w = target_shape(report, max_side=max_side, side=side)
    class_names = sorted(report.classes)
    index = {name: i for i, name in enumerate(class_names)}
    images = torch.empty(len(report.images), c, h, w, dtype=torch.uint8)
    labels = torch.empty(len(report.images), dtype=torch.int64)
    budget = _Budget(limits.max_total_bytes)
    total = len(report.images)
    with zipfile.ZipFile(zip_path) as zf, _pillow_limits(limits.max_image_pixels) as Image:
        for i, (name, cls) in enumerate(report.images):
            if progress is not None and i % 100 == 0:
                progress("decoding", i, total)
            im = _open_image(Image, _read_entry(zf, zf.getinfo(name), limits, budget), limits)
            im.draft("RGB" if c == 3 else "L", (w, h))  # JPEG decodes straight at (about) the target size
            im = ImageOps.exif_transpose(im).convert("RGB" if c == 3 else "L")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
            pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, c)
            images[i] = pixels.permute(2, 0, 1)
            labels[i] = index[cls]
    moved = 0
    if report.splits:
        test_mask = torch.tensor(
            [report.splits[name] == "test" for name, _c in report.images], dtype=torch.bool
        )
        train_idx = (~test_mask).nonzero().flatten()
        test_idx = test_mask.nonzero().flatten()
    else:
        train_idx, test_idx = rt.split_indices(labels, share=test_share, seed=seed)
        in_train = {report.digests[report.images[i][0]] for i in train_idx.tolist()}
        dup = [i for i in test_idx.tolist() if report.digests[report.images[i][0]] in in_train]
        if dup:
            moved = len(dup)
            train_idx = torch.cat([train_idx, torch.tensor(dup, dtype=torch.long)]).sort().values
            keep = ~torch.isin(test_idx, torch.tensor(dup, dtype=torch.long))
            test_idx = test_idx[keep]
    decoded = {
        "images": images,
        "labels": labels,
        "class_names": class_names,
        "train_idx": train_idx,
        "test_idx": test_idx,
    }
    if progress is not None:
        progress("decoding", total, total)
    return decoded, report, moved


def extract_to_cache(
    zip_path: str | os.PathLike,
    *,
    cache_path: str | os.PathLike,
    limits: ZipLimits | None = None,
    max_side: int = 64,
    side: int | None = None,
    test_share: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    report: ZipReport | None = None,
) -> CustomDataset:
    """decode_images(), then the dataset cache file: the same uint8 file built-in sets use, so training
    reads it the same way, as fast. Raises ZipRejected with the full report when the zip breaks a rule."""
    decoded, report, moved = decode_images(
        zip_path,
        limits=limits,
        max_side=max_side,
        side=side,
        test_share=test_share,
        seed=seed,
        progress=progress,
        report=report,
    )
    from sandbox.engine.datasets import write_cache

    path = write_cache(Path(cache_path), decoded, name="custom")
    mean, std = channel_stats(decoded["images"], decoded["train_idx"])
    c, h, w = decoded["images"].shape[1:]
    return CustomDataset(
        cache_path=path,
        input_shape=(c, h, w),
        class_names=decoded["class_names"],
        counts={name: report.classes[name] for name in decoded["class_names"]},
        train=len(decoded["train_idx"]),
        test=len(decoded["test_idx"]),
        mean=mean,
        std=std,
        content_hash=content_hash(decoded),
        own_split=bool(report.splits),
        moved_duplicates=moved,
        warnings=list(report.warnings),
    )
