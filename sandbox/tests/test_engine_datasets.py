"""Built-in datasets: tiny files in the exact standard formats, decoded, cached and read back."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import time

import numpy as np
import pytest
import torch

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import datasets as ds

# --- writers for the standard formats, as the original files are laid out ---------------------------


def write_idx(path, array: np.ndarray, *, gz: bool = False) -> None:
    """IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, big-endian u32 sizes, data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist_folder(folder, *, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (f"{name}.gz" if gz else name), array, gz=gz)
    return arrays


def write_cifar_batch(path, data: np.ndarray, labels: list[int], *, protocol: int = 2) -> None:
    """A CIFAR python batch: a pickled dict with bytes keys, data uint8 (N, 3072) row-major RGB planes."""
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data, b"filenames": []}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def write_cifar_folder(folder, *, per_batch: int = 4, seed: int = 0, protocol: int = 2):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in rt.CIFAR10_FILES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        write_cifar_batch(folder / name, data, labels, protocol=protocol)
        written[name] = (data, labels)
    meta = {b"label_names": [c.encode() for c in rt.CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return written


# --- IDX ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_plain_or_gzipped_read_back_exactly(tmp_path, gz):
    array = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", array, gz=gz)
    assert torch.equal(rt.read_idx(tmp_path / "x"), torch.from_numpy(array))


def test_big_endian_idx_integers_read_back_as_native_numbers(tmp_path):
    array = np.array([[1, -2, 70000]], dtype=">i4")
    write_idx(tmp_path / "x", array)
    assert rt.read_idx(tmp_path / "x").tolist() == [[1, -2, 70000]]


def test_a_truncated_or_foreign_file_is_not_taken_for_idx(tmp_path):
    write_idx(tmp_path / "x", np.zeros((2, 28, 28), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "x").read_bytes()[:-5])
    with pytest.raises(ValueError, match="expected 1568 bytes"):
        rt.read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        rt.read_idx(tmp_path / "png")


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_an_mnist_style_folder_becomes_a_cache_with_the_official_split(tmp_path, name):
    data_dir = tmp_path / "data"
    arrays = write_mnist_folder(data_dir / name, gz=(name == "MNIST"))
    assert ds.availability(name, data_dir=data_dir).available

    path = ds.ensure_cache(name, data_dir=data_dir, cache_dir=tmp_path / "cache")
    cache = rt.load_cache(path)
    assert path.name == f"{name.lower()}-v1.pt"
    assert cache["images"].shape == (30, 1, 28, 28) and cache["images"].dtype == torch.uint8
    assert torch.equal(cache["images"][:20, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(cache["images"][20:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert cache["train_idx"].tolist() == list(range(20))
    assert cache["test_idx"].tolist() == list(range(20, 30))
    assert cache["class_names"] == list(ds.BUILTIN[name].class_names)


def test_a_missing_dataset_is_unavailable_with_the_command_that_fixes_it(tmp_path):
    write_mnist_folder(tmp_path / "MNIST")
    os.remove(tmp_path / "MNIST" / "t10k-labels-idx1-ubyte.gz")
    a = ds.availability("mnist", data_dir=tmp_path)
    assert not a.available
    assert a.missing == ("t10k-labels-idx1-ubyte",)
    assert a.fix == "python manage.py fetch_dataset MNIST"
    rows = {row["name"]: row for row in ds.catalog(data_dir=tmp_path)}
    assert rows["CIFAR10"]["available"] is False
    assert rows["CIFAR10"]["fix"] == "python manage.py fetch_dataset CIFAR10"
    assert rows["digits"]["available"] and rows["shapes"]["available"]
    with pytest.raises(FileNotFoundError, match="fetch_dataset MNIST"):
        ds.decode("MNIST", data_dir=tmp_path)


# --- CIFAR-10 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_python_batches_read_back_as_rgb_images(tmp_path, protocol):
    written = write_cifar_folder(tmp_path / "CIFAR10" / "cifar-10-batches-py", protocol=protocol)
    path = ds.ensure_cache("cifar-10", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    cache = rt.load_cache(path)
    assert cache["images"].shape == (24, 3, 32, 32)
    data, labels = written["data_batch_1"]
    # Each row holds the red plane, then green, then blue, each 32x32 row-major.
    assert torch.equal(cache["images"][0, 1].flatten(), torch.from_numpy(data[0, 1024:2048]))
    assert cache["labels"][:4].tolist() == labels
    test_data, test_labels = written["test_batch"]
    assert torch.equal(cache["images"][cache["test_idx"][0]].flatten(), torch.from_numpy(test_data[0]))
    assert len(cache["train_idx"]) == 20 and len(cache["test_idx"]) == 4
    assert cache["class_names"] == rt.CIFAR10_CLASSES


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/buildx-pwned",))


def test_a_cifar_batch_that_smuggles_code_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Boom(), b"labels": []}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="may not contain"):
        rt.read_cifar_batch(tmp_path / "evil")
    assert not os.path.exists("/tmp/buildx-pwned")


# --- digits and shapes -----------------------------------------------------------------------------------


def test_digits_are_scikit_learns_real_8x8_digits_with_a_fixed_stratified_split():
    d = ds.decode("Digits", data_dir=None)
    assert d["images"].shape == (1797, 1, 8, 8)
    assert int(d["images"].max()) == 255
    assert len(d["train_idx"]) + len(d["test_idx"]) == 1797
    assert set(d["train_idx"].tolist()).isdisjoint(d["test_idx"].tolist())
    per_class = torch.bincount(d["labels"][d["test_idx"]], minlength=10)
    assert all(30 <= int(c) <= 40 for c in per_class)  # about a fifth of each class
    again = ds.load_digits()
    assert torch.equal(again["test_idx"], d["test_idx"])


def test_shapes_are_generated_the_same_for_the_same_seed_and_differ_for_another():
    a = ds.generate_shapes(per_class=20, seed=5)
    b = ds.generate_shapes(per_class=20, seed=5)
    c = ds.generate_shapes(per_class=20, seed=6)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["images"], c["images"])
    assert a["images"].shape == (80, 3, 32, 32)
    assert torch.bincount(a["labels"]).tolist() == [20, 20, 20, 20]
    assert ds.generate_shapes(per_class=2, size=64)["images"].shape == (8, 3, 64, 64)


def test_shapes_draw_the_named_shape():
    """Noise off: a circle fills about pi/4 of its box, a square fills it, a cross much less."""
    d = ds.generate_shapes(per_class=50, seed=1, noise=0.0)
    images, labels = d["images"].float(), d["labels"]
    # The shape is the colour that differs from the corner pixel (always background).
    fg = (images - images[:, :, :1, :1]).abs().sum(1) > 30  # (N, H, W)
    fill = []
    for i in range(len(labels)):
        rows, cols = fg[i].nonzero(as_tuple=True)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill.append(float(fg[i].sum() / box))
    fill = torch.tensor(fill)
    of = {name: fill[labels == k] for k, name in enumerate(d["class_names"])}
    assert all(0.7 < float(f) < 0.87 for f in of["circle"])  # pi/4, whatever the turn
    assert all(float(f) < 0.6 for f in of["triangle"])  # at most about half of its box
    assert float(of["square"].mean()) > 0.6 > float(of["cross"].mean())


# --- the catalog, names and the cache -----------------------------------------------------------------


CONTRACT_TABLE = {  # docs/contracts.md, section 4
    "digits": ((1, 8, 8), 10),
    "shapes": ((3, 32, 32), 4),
    "MNIST": ((1, 28, 28), 10),
    "FashionMNIST": ((1, 28, 28), 10),
    "CIFAR10": ((3, 32, 32), 10),
}


def test_the_built_in_datasets_match_the_contract_table():
    assert {name: (info.input_shape, info.num_classes) for name, info in ds.BUILTIN.items()} == CONTRACT_TABLE
    assert ds.BUILTIN["digits"].class_names == tuple("0123456789")
    assert ds.BUILTIN["shapes"].class_names == ("circle", "square", "triangle", "cross")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("CIFAR10", "CIFAR10"),
        ("cifar10", "CIFAR10"),
        ("cifar-10", "CIFAR10"),
        ("fashion-mnist", "FashionMNIST"),
        ("Fashion_MNIST", "FashionMNIST"),
        ("mnist", "MNIST"),
        ("DIGITS", "digits"),
        ("imagenet", None),
    ],
)
def test_dataset_names_are_case_insensitive(given, canonical):
    assert ds.canonical_name(given) == canonical


def test_a_cached_dataset_loads_in_milliseconds_and_holds_only_tensors_and_plain_data(tmp_path):
    path = ds.ensure_cache("shapes", data_dir=tmp_path, cache_dir=tmp_path)
    started = time.perf_counter()
    cache = torch.load(path, weights_only=True, mmap=True)  # refuses anything but tensors and containers
    took = time.perf_counter() - started
    assert cache["images"].shape == (2400, 3, 32, 32)
    assert cache["version"] == ds.CACHE_VERSION and cache["name"] == "shapes"
    assert took < 1.0  # generous on a loaded machine; bench/ measures the real figure
    # a second ensure_cache finds the file and does not decode again
    mtime = path.stat().st_mtime_ns
    assert ds.ensure_cache("shapes", data_dir=tmp_path, cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime


def test_make_data_carves_the_same_validation_split_for_the_same_seed(tmp_path):
    cache = rt.load_cache(ds.ensure_cache("digits", data_dir=tmp_path, cache_dir=tmp_path))
    data, test = rt.make_data(cache, val_split=0.1, seed=42, device="cpu")
    again, _ = rt.make_data(cache, val_split=0.1, seed=42, device="cpu")
    assert len(data.train) + len(data.val) == len(cache["train_idx"])
    assert len(test) == len(cache["test_idx"])
    assert torch.equal(data.val.labels, again.val.labels) and torch.equal(data.val.images, again.val.images)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.class_names == [str(i) for i in range(10)]


def test_a_standalone_run_reads_a_folder_of_class_folders_or_an_mnist_folder(tmp_path):
    from PIL import Image

    for split, count in (("train", 3), ("test", 1)):
        for c, colour in (("cat", (250, 0, 0)), ("dog", (0, 0, 250))):
            (tmp_path / "pets" / split / c).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (10, 10) if i else (12, 12), colour).save(
                    tmp_path / "pets" / split / c / f"{i}.png"
                )
    pets = rt.read_dataset_folder(tmp_path / "pets")
    assert pets["class_names"] == ["cat", "dog"]
    assert pets["images"].shape == (8, 3, 12, 12)  # resized to the first image's size
    assert len(pets["train_idx"]) == 6 and len(pets["test_idx"]) == 2
    assert pets["images"][pets["labels"] == 0][:, 0].float().mean() > 200  # cats are red

    write_mnist_folder(tmp_path / "mnist", gz=False)
    mnist = rt.read_dataset_folder(tmp_path / "mnist")
    assert mnist["images"].shape == (30, 1, 28, 28)
    with pytest.raises(FileNotFoundError):
        rt.read_dataset_folder(tmp_path / "nowhere")
