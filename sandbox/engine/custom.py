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
import io
import os
import re
import stat
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from sandbox.engine import buildx_runtime as rt

ALLOWED_FORMATS = ("PNG", "JPEG")  # the only parsers Pillow may use on uploads
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
JUNK = re.compile(r"(^|/)(__MACOSX/|\.[^/]*$|Thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
CHUNK = 64 * 1024


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
    parts = {n: PurePosixPath(n).parts for n in names}
    strip = 0
    firsts = {p[0] for p in parts.values() if p}
    if len(firsts) == 1 and all(len(p) >= 3 for p in parts.values()):
        strip = 1
    classes = {n: (p[strip] if len(p) - strip >= 2 else None) for n, p in parts.items()}
    return strip, classes


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


def check_zip(path: str | os.PathLike, *, limits: ZipLimits | None = None) -> ZipReport:
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

        _, class_of = _layout([i.filename for i in files])
        budget = _Budget(min(limits.max_total_bytes, int(max(size, 1) * limits.max_ratio)))
        for info in files:
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
    return report


@dataclass(frozen=True)
class CustomDataset:
    cache_path: Path
    input_shape: tuple[int, int, int]
    class_names: list[str]
    counts: dict[str, int]
    train: int
    test: int


def target_shape(report: ZipReport, *, max_side: int) -> tuple[int, int, int]:
    """(C, H, W): the most common image size, shrunk to fit max_side; colour if most images are colour."""
    (w, h), _ = report.sizes.most_common(1)[0]
    scale = min(1.0, max_side / max(w, h))
    channels = 3 if report.colour * 2 > len(report.images) else 1
    return channels, max(1, round(h * scale)), max(1, round(w * scale))


def extract_to_cache(
    zip_path: str | os.PathLike,
    *,
    cache_path: str | os.PathLike,
    limits: ZipLimits | None = None,
    max_side: int = 64,
    test_share: float = 0.2,
    seed: int = 0,
) -> CustomDataset:
    """Check the zip, then decode every image to one (C, H, W) into a dataset cache file.

    Raises ZipRejected with the full report when the zip breaks a rule.
    """
    from PIL import ImageOps

    limits = limits or ZipLimits()
    report = check_zip(zip_path, limits=limits)
    if not report.ok:
        raise ZipRejected(report)
    c, h, w = target_shape(report, max_side=max_side)
    class_names = sorted(report.classes)
    index = {name: i for i, name in enumerate(class_names)}
    images = torch.empty(len(report.images), c, h, w, dtype=torch.uint8)
    labels = torch.empty(len(report.images), dtype=torch.int64)
    budget = _Budget(limits.max_total_bytes)
    with zipfile.ZipFile(zip_path) as zf, _pillow_limits(limits.max_image_pixels) as Image:
        for i, (name, cls) in enumerate(report.images):
            im = _open_image(Image, _read_entry(zf, zf.getinfo(name), limits, budget), limits)
            im.draft("RGB" if c == 3 else "L", (w, h))  # JPEG decodes straight at (about) the target size
            im = ImageOps.exif_transpose(im).convert("RGB" if c == 3 else "L")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
            pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, c)
            images[i] = pixels.permute(2, 0, 1)
            labels[i] = index[cls]
    train_idx, test_idx = rt.split_indices(labels, share=test_share, seed=seed)
    from sandbox.engine.datasets import write_cache

    decoded = {
        "images": images,
        "labels": labels,
        "class_names": class_names,
        "train_idx": train_idx,
        "test_idx": test_idx,
    }
    path = write_cache(Path(cache_path), decoded, name="custom")
    return CustomDataset(
        cache_path=path,
        input_shape=(c, h, w),
        class_names=class_names,
        counts={name: report.classes[name] for name in class_names},
        train=len(train_idx),
        test=len(test_idx),
    )
