"""Built-in datasets: what they are, whether they are here, and one decoded cache file each.

Plain torch (no Django): the worker calls ensure_cache() before a run; the sandboxed child only reads the
cache file (buildx_runtime.load_cache). Sources, all offline once fetched:
- digits: the 8x8 digits that ship inside scikit-learn (real data, 1797 images);
- shapes: generated here, deterministic by seed: circles, squares, triangles and crosses with noise;
- MNIST, FashionMNIST: the standard IDX files (gzipped or not) in BUILDX_DATA_DIR/<name>/;
- CIFAR10, CIFAR100: the standard python batches in BUILDX_DATA_DIR/<name>/ (or the folder the archive
  unpacks to: cifar-10-batches-py/, cifar-100-python/);
- SVHN: the cropped digits' MATLAB files (train_32x32.mat, test_32x32.mat) in BUILDX_DATA_DIR/SVHN/;
- EMNISTLetters: the letters' four gzipped IDX files, taken out of NIST's gzip.zip, in
  BUILDX_DATA_DIR/EMNISTLetters/.

A cache file holds uint8 images (N, C, H, W), int64 labels, class names and the fixed train/test split
(the official one where the dataset has one); the validation share is carved from train at load time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
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
    # Members of a zip archive to take out, each into the dataset's folder under its own base name (the
    # rest of the archive is never unpacked). Empty for a .tar.gz (unpacked whole) or a plain file.
    extract: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: its facts (sandbox/engine/dataset_facts.py) and where its images come from."""

    facts: DatasetFacts
    source: str  # "bundled" | "generated" | "download"
    downloads: tuple[FileSpec, ...] = field(default=())
    required: tuple[str, ...] = field(default=())  # files that must exist in the folder (a .gz counts)
    subfolder: str = ""  # where its archive unpacks inside the folder, if it does

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
SVHN_URL, EMNIST_URL = rt.SVHN_URL, rt.EMNIST_URL
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
            subfolder="cifar-10-batches-py",
        ),
        DatasetInfo(
            facts.CIFAR100,
            "download",
            (
                FileSpec(
                    rt.CIFAR100_ARCHIVE,
                    "eb9058c3a382ffc7106e4002c42a8d85",
                    f"{CIFAR10_URL}{rt.CIFAR100_ARCHIVE}",
                ),
            ),
            tuple(rt.CIFAR100_FILES),
            subfolder="cifar-100-python",
        ),
        DatasetInfo(
            facts.SVHN,
            "download",
            (
                FileSpec("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", f"{SVHN_URL}train_32x32.mat"),
                FileSpec("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", f"{SVHN_URL}test_32x32.mat"),
            ),
            tuple(rt.SVHN_FILES),
        ),
        DatasetInfo(
            facts.EMNIST_LETTERS,
            "download",
            (
                FileSpec(
                    rt.EMNIST_ARCHIVE,
                    "58c8d27c78d21e728a6bc7b3cc06412e",
                    f"{EMNIST_URL}{rt.EMNIST_ARCHIVE}",
                    extract=tuple(f"gzip/{name}.gz" for name in rt.EMNIST_LETTERS_FILES.values()),
                ),
            ),
            tuple(rt.EMNIST_LETTERS_FILES.values()),
        ),
    ]
}

# How each downloaded set's folder is read (all in the runtime, which a downloaded script reads with too).
READERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "MNIST": lambda folder: rt.read_mnist_folder(folder, facts.MNIST.class_names),
    "FashionMNIST": lambda folder: rt.read_mnist_folder(folder, facts.FASHION_MNIST.class_names),
    "CIFAR10": rt.read_cifar10_folder,
    "CIFAR100": rt.read_cifar100_folder,
    "SVHN": rt.read_svhn_folder,
    "EMNISTLetters": rt.read_emnist_letters_folder,
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
    """Where a downloaded dataset's files live: BUILDX_DATA_DIR/<name>/ (CIFAR's may sit one folder down)."""
    info = get_info(name)
    folder = Path(data_dir) / info.name
    if info.subfolder and (folder / info.subfolder).is_dir():
        return folder / info.subfolder
    return folder


@dataclass(frozen=True)
class Availability:
    available: bool
    missing: tuple[str, ...] = ()
    fix: str = ""  # the command that makes it available


def source_missing(name: str, *, data_dir: Path) -> tuple[str, ...]:
    """The downloaded set's source files that are not in its folder (a .gz counts for its plain name)."""
    info = get_info(name)
    folder = dataset_folder(info.name, data_dir=data_dir)
    return tuple(f for f in info.required if rt.find_file(folder, f) is None)


def availability(name: str, *, data_dir: Path) -> Availability:
    """Whether a run can train on the set now. A downloaded set is ready only when its cache is built and
    sound (fetch_dataset checks the files and builds it): files alone may be broken or half copied, and a
    page must not call a set ready that a run then fails to read."""
    info = get_info(name)
    if info.source == "bundled":
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError:
            return Availability(False, ("scikit-learn",), "pip install scikit-learn")
        return Availability(True)
    if info.source == "generated":
        return Availability(True)
    fix = f"python manage.py fetch_dataset {info.name}"
    missing = source_missing(info.name, data_dir=data_dir)
    if missing:
        return Availability(False, missing, fix)
    problem = cache_problem(cache_path(info.name, cache_dir=default_cache_dir(data_dir)), name=info.name)
    if problem is not None:
        return Availability(False, (problem,), fix)
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
        missing = source_missing(info.name, data_dir=data_dir)
        if missing:
            raise FileNotFoundError(
                f"{info.name} is not available (missing {', '.join(missing)}): "
                f"run `python manage.py fetch_dataset {info.name}`"
            )
        decoded = READERS[info.name](dataset_folder(info.name, data_dir=data_dir))
    check_decoded(
        decoded, expected_shape=info.input_shape, num_classes=info.num_classes, class_names=info.class_names
    )
    return decoded


def check_decoded(
    decoded: dict[str, Any],
    *,
    expected_shape: tuple[int, ...] | None,
    num_classes: int,
    class_names: tuple[str, ...] | None = None,
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
    # Files that name their classes (CIFAR's meta) must name the ones the catalog shows, in its order:
    # otherwise every label would be shown as another class's.
    if class_names is not None and tuple(decoded["class_names"]) != tuple(class_names):
        raise ValueError(f"the files name other classes than {class_names[:3]}...")
    n = images.shape[0]
    for key in ("train_idx", "test_idx"):
        idx = decoded[key]
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(f"{key} points outside the {n} images")


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


_CACHE_PROBLEMS: dict[tuple[str, int, int], str | None] = {}  # by (path, size, mtime): read once per file


def cache_problem(path: Path, *, name: str) -> str | None:
    """Why a built-in set's cache file cannot be trained on, or None when it is there and sound: it loads,
    is this set's (version, name, image shape, classes) and its labels and split lie in range. Remembered
    per file size and time, so that a page listing every set reads each cache once, not on every request."""
    info = get_info(name)
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return f"{path.name} (the cache is not built)"
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE_PROBLEMS:
        _CACHE_PROBLEMS[key] = _check_cache(path, info)
    return _CACHE_PROBLEMS[key]


def _check_cache(path: Path, info: DatasetInfo) -> str | None:
    try:
        data = rt.load_cache(path)
        if data.get("version") != CACHE_VERSION or data.get("name") != info.name:
            return f"{path.name} (written by another version, or for another set)"
        check_decoded(
            data, expected_shape=info.input_shape, num_classes=info.num_classes, class_names=info.class_names
        )
        if not len(data["train_idx"]) or not len(data["test_idx"]):
            return f"{path.name} (no training or no test images)"
    except Exception as e:  # whatever a truncated or foreign file makes torch.load or the checks raise
        return f"{path.name} ({type(e).__name__}: {e})"[:300]
    return None


def ensure_cache(name: str, *, data_dir: Path, cache_dir: Path | None = None, force: bool = False) -> Path:
    """The dataset's cache file (in data_dir/cache/ unless told), decoding the source first if it is not
    there or not sound (cache_problem)."""
    path = cache_path(name, cache_dir=cache_dir or default_cache_dir(data_dir))
    if path.exists() and not force and cache_problem(path, name=name) is None:
        return path
    return write_cache(path, decode(name, data_dir=data_dir), name=get_info(name).name)


def measured_stats(path: Path) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a cache's training images in [0, 1], computed in chunks (the whole
    set as float would not fit in memory): what `fetch_dataset` checks the published figures against."""
    data = rt.load_cache(path)
    images = data["images"].index_select(0, data["train_idx"])  # (N, C, H, W) uint8
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].to(torch.float64) / 255  # (B, C, H, W)
        total += chunk.sum(dim=(0, 2, 3))
        squares += (chunk * chunk).sum(dim=(0, 2, 3))
    count = max(1, images.shape[0] * images.shape[2] * images.shape[3])
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


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
    A .tar.gz (CIFAR's) is unpacked with tarfile's "data" filter: no links, devices or paths outside; from
    a zip (EMNIST's) only the named members are taken, each to a name chosen here. An archive is unpacked
    after it is downloaded, or when it is here but the files it holds are not.
    """
    info = get_info(name)
    folder = Path(data_dir) / info.name
    fetched = []
    for spec in info.downloads:
        dest = folder / spec.name
        if dest.exists() and file_md5(dest) == spec.md5:
            log(f"{spec.name}: already here, checksum matches")
            downloaded = False
        else:
            if dest.exists():
                log(f"{spec.name}: checksum does not match the published one; downloading it again")
            elif not source_missing(info.name, data_dir=data_dir):
                # Unpacked files put here by hand: the published checksums are for the archives.
                log(f"{spec.name}: its unpacked files are already here; nothing to download")
                continue
            url = spec.url if mirror is None else mirror.rstrip("/") + "/" + spec.name
            log(f"{spec.name}: downloading {url}")
            download_file(url, dest, md5=spec.md5, progress=progress_for(spec.name) if progress_for else None)
            log(f"{spec.name}: checksum matches")
            downloaded = True
        fetched.append(dest)
        is_archive = spec.name.endswith(".tar.gz") or bool(spec.extract)
        if is_archive and (downloaded or source_missing(info.name, data_dir=data_dir)):
            unpack(dest, folder, members=spec.extract)
            log(f"{spec.name}: unpacked")
    return fetched


def unpack(archive: Path, folder: Path, *, members: tuple[str, ...] = ()) -> None:
    """A .tar.gz whole (tarfile.FilterError on anything unsafe), or the named members of a zip, each
    written under its base name into `folder` (zipfile.BadZipFile when the archive lacks one)."""
    if not members:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        return
    with zipfile.ZipFile(archive) as zipped:
        for member in members:
            target = folder / Path(member).name
            tmp = target.with_name(f".{target.name}.part")
            try:
                with zipped.open(member) as source, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
            except KeyError:
                tmp.unlink(missing_ok=True)
                raise zipfile.BadZipFile(f"{archive.name} holds no {member}") from None
            except zipfile.BadZipFile:  # a damaged member (its CRC does not match)
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, target)
