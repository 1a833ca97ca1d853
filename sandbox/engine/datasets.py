"""Built-in datasets: what they are, whether they are here, and one decoded cache file each.

Plain torch (no Django): the worker calls ensure_cache() before a run; the sandboxed child only reads the
cache file (buildx_runtime.load_cache). Sources, all offline once fetched:
- digits: the 8x8 digits that ship inside scikit-learn (real data, 1797 images);
- shapes: generated here, deterministic by seed: circles, squares, triangles and crosses with noise;
- MNIST, FashionMNIST: the standard IDX files (gzipped or not) in BUILDX_DATA_DIR/<name>/;
- CIFAR10: the standard python batches in BUILDX_DATA_DIR/CIFAR10/ (or its cifar-10-batches-py/).

A cache file holds uint8 images (N, C, H, W), int64 labels, class names and the fixed train/test split
(the official one where the dataset has one); the validation share is carved from train at load time.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import dataset_facts as facts
from sandbox.engine.dataset_facts import DatasetFacts

CACHE_VERSION = 1
TEST_SHARE = rt.TEST_SHARE  # of digits and shapes, which ship without a test split
SPLIT_SEED = rt.SPLIT_SEED  # the test split never changes between runs


@dataclass(frozen=True)
class FileSpec:
    name: str  # as stored in the dataset's folder
    md5: str
    url: str


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: its facts (sandbox/engine/dataset_facts.py) and where its images come from."""

    facts: DatasetFacts
    source: str  # "bundled" | "generated" | "download"
    downloads: tuple[FileSpec, ...] = field(default=())
    required: tuple[str, ...] = field(default=())  # files that must exist in the folder (a .gz counts)

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def title(self) -> str:
        return self.facts.title

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.facts.input_shape

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.facts.class_names

    @property
    def num_classes(self) -> int:
        return self.facts.num_classes


MNIST_URL, FASHION_URL, CIFAR10_URL = rt.MNIST_URL, rt.FASHION_URL, rt.CIFAR10_URL
IDX_FILES = tuple(rt.MNIST_FILES.values())


def _idx_downloads(base: str, md5s: tuple[str, str, str, str]) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(f"{name}.gz", md5, f"{base}{name}.gz") for name, md5 in zip(IDX_FILES, md5s, strict=True)
    )


BUILTIN: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(facts.DIGITS, "bundled"),
        DatasetInfo(facts.SHAPES, "generated"),
        DatasetInfo(
            facts.MNIST,
            "download",
            # The official checksums, as torchvision publishes them.
            _idx_downloads(
                MNIST_URL,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ),
            IDX_FILES,
        ),
        DatasetInfo(
            facts.FASHION_MNIST,
            "download",
            _idx_downloads(
                FASHION_URL,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            ),
            IDX_FILES,
        ),
        DatasetInfo(
            facts.CIFAR10,
            "download",
            (
                FileSpec(
                    rt.CIFAR10_ARCHIVE,
                    "c58f30108f718f92721af3b95e74349a",
                    f"{CIFAR10_URL}{rt.CIFAR10_ARCHIVE}",
                ),
            ),
            tuple(rt.CIFAR10_FILES),
        ),
    ]
}


def canonical_name(name: str) -> str | None:
    """The built-in dataset a spec means: case, dashes, underscores and spaces do not matter."""
    found = facts.lookup(str(name))
    return None if found is None else found.name


def get_info(name: str) -> DatasetInfo:
    canonical = canonical_name(name)
    if canonical is None:
        raise KeyError(f"unknown dataset {name!r}; built-in: {', '.join(BUILTIN)}")
    return BUILTIN[canonical]


def dataset_folder(name: str, *, data_dir: Path) -> Path:
    """Where a downloaded dataset's files live: BUILDX_DATA_DIR/<name>/ (CIFAR may sit one folder down)."""
    info = get_info(name)
    folder = Path(data_dir) / info.name
    if info.name == "CIFAR10" and (folder / "cifar-10-batches-py").is_dir():
        return folder / "cifar-10-batches-py"
    return folder


@dataclass(frozen=True)
class Availability:
    available: bool
    missing: tuple[str, ...] = ()
    fix: str = ""  # the command that makes it available


def availability(name: str, *, data_dir: Path) -> Availability:
    info = get_info(name)
    if info.source == "bundled":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            return Availability(False, ("scikit-learn",), "pip install scikit-learn")
        return Availability(True)
    if info.source == "generated":
        return Availability(True)
    folder = dataset_folder(info.name, data_dir=data_dir)
    missing = tuple(f for f in info.required if rt.find_file(folder, f) is None)
    if missing:
        return Availability(False, missing, f"python manage.py fetch_dataset {info.name}")
    return Availability(True)


def catalog(*, data_dir: Path) -> list[dict[str, Any]]:
    """Every built-in dataset with its shape, classes and availability, for pages and the API."""
    rows = []
    for info in BUILTIN.values():
        a = availability(info.name, data_dir=data_dir)
        rows.append(
            {
                "name": info.name,
                "title": info.title,
                "input_shape": list(info.input_shape),
                "num_classes": info.num_classes,
                "class_names": list(info.class_names),
                "available": a.available,
                "missing": list(a.missing),
                "fix": a.fix,
            }
        )
    return rows


# --- Decoding ---------------------------------------------------------------------------------------


# One implementation of each, in the runtime, so that a downloaded script trains on the very same images
# and test split without BuildX around it.
load_digits = rt.load_digits


def generate_shapes(**options: Any) -> dict[str, Any]:
    """Coloured shapes, generated (buildx_runtime.generate_shapes), labelled with the facts' class names."""
    return rt.generate_shapes(class_names=facts.SHAPES.class_names, **options)


def decode(name: str, *, data_dir: Path) -> dict[str, Any]:
    """Read a built-in dataset from its source into the cache's dict (slow: done once, then cached)."""
    info = get_info(name)
    if info.name == "digits":
        decoded = load_digits()
    elif info.name == "shapes":
        decoded = generate_shapes()
    else:
        a = availability(info.name, data_dir=data_dir)
        if not a.available:
            raise FileNotFoundError(
                f"{info.name} is not available (missing {', '.join(a.missing)}): run `{a.fix}`"
            )
        folder = dataset_folder(info.name, data_dir=data_dir)
        if info.name == "CIFAR10":
            decoded = rt.read_cifar10_folder(folder)
        else:
            decoded = rt.read_mnist_folder(folder, info.class_names)
    check_decoded(decoded, expected_shape=info.input_shape, num_classes=info.num_classes)
    return decoded


def check_decoded(
    decoded: dict[str, Any], *, expected_shape: tuple[int, ...] | None, num_classes: int
) -> None:
    images, labels = decoded["images"], decoded["labels"]
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be uint8 (N, C, H, W)")
    if expected_shape is not None and tuple(images.shape[1:]) != tuple(expected_shape):
        raise ValueError(f"images are {tuple(images.shape[1:])}, expected {tuple(expected_shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError("one label per image")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")


# --- The cache file ---------------------------------------------------------------------------------


def cache_path(name: str, *, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{get_info(name).name.lower()}-v{CACHE_VERSION}.pt"


def default_cache_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "cache"


def write_cache(path: Path, decoded: dict[str, Any], *, name: str) -> Path:
    """Write a decoded dataset atomically (tensors and plain containers: torch.load weights_only reads it)."""
    payload = {
        "version": CACHE_VERSION,
        "name": name,
        "images": decoded["images"].contiguous(),
        "labels": decoded["labels"].long().contiguous(),
        "class_names": [str(c) for c in decoded["class_names"]],
        "train_idx": decoded["train_idx"].long().contiguous(),
        "test_idx": decoded["test_idx"].long().contiguous(),
        "input_shape": list(decoded["images"].shape[1:]),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def ensure_cache(name: str, *, data_dir: Path, cache_dir: Path | None = None, force: bool = False) -> Path:
    """The dataset's cache file (in data_dir/cache/ unless told), decoding the source first if it is not there."""
    path = cache_path(name, cache_dir=cache_dir or default_cache_dir(data_dir))
    if path.exists() and not force:
        return path
    return write_cache(path, decode(name, data_dir=data_dir), name=get_info(name).name)


def load_cache(path: Path) -> dict[str, Any]:
    return rt.load_cache(path)


def training_cache(path: Path) -> Path:
    """The cache without its test split, beside it (made once): what a training child gets.

    A script that could read the test images could train on them; the test split is only ever given to
    the platform's own evaluation (sandbox/engine/harness.py, "evaluate"), which runs no user code.
    Keyed by the full cache's size and time, so a rebuilt cache gets a new one.
    """
    path = Path(path)
    info = path.stat()
    out = path.with_name(f"{path.stem}.train-{info.st_size:x}-{int(info.st_mtime_ns):x}.pt")
    if out.exists():
        return out
    data = rt.load_cache(path)
    idx = data["train_idx"]
    decoded = {
        "images": data["images"].index_select(0, idx),
        "labels": data["labels"].index_select(0, idx),
        "class_names": data["class_names"],
        "train_idx": torch.arange(len(idx)),
        "test_idx": torch.zeros(0, dtype=torch.long),
    }
    for old in path.parent.glob(f"{path.stem}.train-*.pt"):
        if old != out:
            old.unlink(missing_ok=True)  # an earlier version of the same cache
    return write_cache(out, decoded, name=str(data.get("name", path.stem)))


# --- Fetching (where the machine has internet) ------------------------------------------------------------


class ChecksumError(Exception):
    pass


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the published checksums are MD5: integrity, not secrecy
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: Path,
    *,
    md5: str,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """The one place that fetches over the network: stream `url` to `dest`, keeping it only if the MD5 matches.

    progress(bytes_so_far, total_or_None) is called as blocks arrive.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:  # noqa: S310 - fixed https URLs or an operator's mirror
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        while block := response.read(1 << 16):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    if digest.hexdigest() != md5:
        tmp.unlink(missing_ok=True)
        raise ChecksumError(f"{dest.name}: checksum {digest.hexdigest()} does not match the published {md5}")
    os.replace(tmp, dest)
    return dest


def fetch(
    name: str,
    *,
    data_dir: Path,
    mirror: str | None = None,
    progress_for: Callable[[str], Callable[[int, int | None], None]] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Download a dataset's files into data_dir/<name>/ unless they are there with the right checksum.

    `mirror` replaces the directory part of each URL (an operator's copy, or a test's local server).
    CIFAR-10's archive is unpacked with tarfile's "data" filter: no links, devices or paths outside.
    """
    info = get_info(name)
    folder = Path(data_dir) / info.name
    fetched = []
    for spec in info.downloads:
        dest = folder / spec.name
        if dest.exists():
            if file_md5(dest) == spec.md5:
                log(f"{spec.name}: already here, checksum matches")
                fetched.append(dest)
                continue
            log(f"{spec.name}: checksum does not match the published one; downloading it again")
        elif availability(info.name, data_dir=data_dir).available:
            # Unpacked files put here by hand: the published checksums are for the archives.
            log(f"{spec.name}: its unpacked files are already here; nothing to download")
            continue
        url = spec.url if mirror is None else mirror.rstrip("/") + "/" + spec.name
        log(f"{spec.name}: downloading {url}")
        download_file(url, dest, md5=spec.md5, progress=progress_for(spec.name) if progress_for else None)
        log(f"{spec.name}: checksum matches")
        fetched.append(dest)
        if spec.name.endswith(".tar.gz"):
            with tarfile.open(dest) as tar:
                tar.extractall(folder, filter="data")  # raises tarfile.FilterError on anything unsafe
            log(f"{spec.name}: unpacked")
    return fetched
