"""Built-in datasets: tiny files in the exact standard formats, decoded, cached and read back."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tempfile
import time
import zipfile
from pathlib import Path

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


def write_cifar100_folder(folder, *, n_train: int = 6, n_test: int = 4, seed: int = 0, protocol: int = 2):
    """CIFAR-100's python version: `train` and `test` (fine and coarse labels), `meta` naming the classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(20, 100, n)]  # above 19, so no coarse label could pass for one
        batch = {
            b"filenames": [f"{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name} batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": data,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (data, fine)
    meta = {
        b"fine_label_names": [c.encode() for c in ds.BUILTIN["CIFAR100"].class_names],
        b"coarse_label_names": [f"group{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return written


def write_svhn_mat(path, images: np.ndarray, labels: np.ndarray) -> None:
    """SVHN's cropped digits: MATLAB v5, X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    from scipy.io import savemat

    x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # (N, 3, 32, 32) -> (32, 32, 3, N)
    savemat(path, {"X": x, "y": labels.reshape(-1, 1).astype(np.uint8)}, format="5")


def write_svhn_folder(folder, *, n_train: int = 12, n_test: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = np.arange(n) % 10 + 1  # 1..10, every digit (10 = 0) in the training file
        write_svhn_mat(folder / name, images, labels)
        written[name] = (images, labels)
    return written


EMNIST_LETTERS = {
    "train-images": "emnist-letters-train-images-idx3-ubyte",
    "train-labels": "emnist-letters-train-labels-idx1-ubyte",
    "test-images": "emnist-letters-test-images-idx3-ubyte",
    "test-labels": "emnist-letters-test-labels-idx1-ubyte",
}


def emnist_letters_arrays(*, n_train: int = 30, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Upright images (as a reader must return them) and labels 1..26; the first training image is an "L":
    a bar down the left edge and a bar along the bottom."""
    rng = np.random.default_rng(seed)
    upright_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    upright_train[0] = 0
    upright_train[0, 4:24, 4] = 255  # down the left
    upright_train[0, 23, 4:18] = 255  # along the bottom
    return {
        "train-images": upright_train,
        "train-labels": (np.arange(n_train) % 26 + 1).astype(np.uint8),
        "test-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test-labels": (np.arange(n_test) % 26 + 1).astype(np.uint8),
    }


def write_emnist_folder(folder, arrays: dict[str, np.ndarray]) -> None:
    """The letters' four gzipped IDX files as NIST stores them: each image transposed."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in EMNIST_LETTERS.items():
        array = arrays[key]
        stored = np.ascontiguousarray(array.transpose(0, 2, 1)) if array.ndim == 3 else array
        write_idx(folder / f"{name}.gz", stored, gz=True)


def write_emnist_zip(path, arrays: dict[str, np.ndarray]) -> None:
    """NIST's gzip.zip: every EMNIST split's gzipped IDX files under gzip/."""
    with tempfile.TemporaryDirectory() as work:
        members = Path(work)
        write_emnist_folder(members, arrays)
        # Another split beside them, which must not be taken.
        write_idx(members / "digits.gz", np.zeros((2, 28, 28), dtype=np.uint8), gz=True)
        with zipfile.ZipFile(path, "w") as zipped:
            for name in EMNIST_LETTERS.values():
                zipped.write(members / f"{name}.gz", f"gzip/{name}.gz")
            zipped.write(members / "digits.gz", "gzip/emnist-digits-train-images-idx3-ubyte.gz")


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
    assert ds.source_missing(name, data_dir=data_dir) == ()

    path = ds.ensure_cache(name, data_dir=data_dir, cache_dir=tmp_path / "cache")
    cache = rt.load_cache(path)
    assert path.name == f"{name.lower()}-v1.pt"
    assert cache["images"].shape == (30, 1, 28, 28) and cache["images"].dtype == torch.uint8
    assert torch.equal(cache["images"][:20, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(cache["images"][20:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert cache["train_idx"].tolist() == list(range(20))
    assert cache["test_idx"].tolist() == list(range(20, 30))
    assert cache["class_names"] == list(ds.BUILTIN[name].class_names)


def test_files_alone_are_not_ready_until_their_cache_is_built_and_sound(tmp_path):
    write_mnist_folder(tmp_path / "MNIST")
    a = ds.availability("MNIST", data_dir=tmp_path)
    assert not a.available and a.missing == ("mnist-v1.pt (the cache is not built)",)
    assert a.fix == "python manage.py fetch_dataset MNIST"
    path = ds.ensure_cache("MNIST", data_dir=tmp_path)
    assert ds.availability("MNIST", data_dir=tmp_path).available

    # A cache cut short (a full disk, a copy interrupted) is not ready, and a run rebuilds it.
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    a = ds.availability("MNIST", data_dir=tmp_path)
    assert not a.available and a.missing[0].startswith("mnist-v1.pt (")
    assert ds.ensure_cache("MNIST", data_dir=tmp_path) == path
    assert ds.availability("MNIST", data_dir=tmp_path).available

    # Another set's cache under this set's name is not this set.
    other = ds.ensure_cache("digits", data_dir=tmp_path)
    path.write_bytes(other.read_bytes())
    a = ds.availability("MNIST", data_dir=tmp_path)
    assert not a.available and "another set" in a.missing[0]


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


# --- CIFAR-100, SVHN, EMNIST letters --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar100_reads_the_fine_labels_and_the_class_names_from_meta(tmp_path, protocol):
    written = write_cifar100_folder(tmp_path / "CIFAR100" / "cifar-100-python", protocol=protocol)
    path = ds.ensure_cache("cifar-100", data_dir=tmp_path)
    cache = rt.load_cache(path)
    assert path.name == "cifar100-v1.pt"
    assert cache["images"].shape == (10, 3, 32, 32) and cache["images"].dtype == torch.uint8
    data, fine = written["train"]
    assert torch.equal(cache["images"][2, 2].flatten(), torch.from_numpy(data[2, 2048:]))  # the blue plane
    assert cache["labels"][:6].tolist() == fine
    assert cache["labels"][6:].tolist() == written["test"][1]
    assert cache["train_idx"].tolist() == list(range(6)) and cache["test_idx"].tolist() == list(range(6, 10))
    assert cache["class_names"][:3] == ["apple", "aquarium_fish", "baby"] and len(cache["class_names"]) == 100
    assert ds.availability("CIFAR100", data_dir=tmp_path).available


def test_cifar100_whose_meta_names_other_classes_is_refused(tmp_path):
    folder = tmp_path / "CIFAR100"
    write_cifar100_folder(folder)
    meta = {b"fine_label_names": [b"x%d" % i for i in range(100)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(ValueError, match="other classes"):
        ds.ensure_cache("CIFAR100", data_dir=tmp_path)
    assert not ds.availability("CIFAR100", data_dir=tmp_path).available


def test_svhn_mat_files_read_back_as_images_with_10_as_the_digit_0(tmp_path):
    written = write_svhn_folder(tmp_path / "SVHN")
    cache = rt.load_cache(ds.ensure_cache("svhn", data_dir=tmp_path))
    images, labels = written["train_32x32.mat"]
    assert cache["images"].shape == (17, 3, 32, 32) and cache["images"].dtype == torch.uint8
    assert torch.equal(cache["images"][:12], torch.from_numpy(images))
    assert torch.equal(cache["images"][12:], torch.from_numpy(written["test_32x32.mat"][0]))
    assert cache["labels"][:12].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # stored as 1..9, 10, 1, 2
    assert labels[9] == 10 and cache["labels"][9] == 0
    assert len(cache["train_idx"]) == 12 and cache["test_idx"].tolist() == list(range(12, 17))
    assert cache["class_names"] == [str(i) for i in range(10)]


def test_svhn_files_that_are_not_svhn_are_refused(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "SVHN"
    write_svhn_folder(folder)
    (folder / "test_32x32.mat").write_bytes(b"MATLAB 7.3 MAT-file, but HDF5 inside")
    with pytest.raises(ValueError, match="not an SVHN MATLAB v5 file"):
        rt.read_svhn_folder(folder)
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    write_svhn_mat(folder / "test_32x32.mat", images, np.array([0, 3]))  # 0 is no SVHN label
    with pytest.raises(ValueError, match=r"labels must lie in 1..10"):
        rt.read_svhn_folder(folder)
    savemat(folder / "test_32x32.mat", {"X": np.zeros((28, 28, 2), dtype=np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(ValueError, match="expected X as 32x32x3xN"):
        rt.read_svhn_folder(folder)


def test_emnist_letters_read_upright_with_labels_a_to_z_from_0(tmp_path):
    arrays = emnist_letters_arrays()
    folder = tmp_path / "EMNISTLetters"
    folder.mkdir()
    write_emnist_zip(tmp_path / "gzip.zip", arrays)
    ds.unpack(tmp_path / "gzip.zip", folder, members=ds.BUILTIN["EMNISTLetters"].downloads[0].extract)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in EMNIST_LETTERS.values())

    cache = rt.load_cache(ds.ensure_cache("emnist-letters", data_dir=tmp_path))
    assert cache["images"].shape == (38, 1, 28, 28)
    assert torch.equal(cache["images"][:30, 0], torch.from_numpy(arrays["train-images"]))
    assert torch.equal(cache["images"][30:, 0], torch.from_numpy(arrays["test-images"]))
    letter = cache["images"][0, 0]  # the "L", upright: its long bar runs down the left, not along the top
    assert int(letter[4:24, 4].min()) == 255 and int(letter[23, 4:18].min()) == 255
    assert int(letter[4, 5:24].max()) == 0
    assert cache["labels"][:27].tolist() == [*range(26), 0]  # stored as 1..26
    assert cache["class_names"][0] == "a" and cache["class_names"][25] == "z"
    assert len(cache["train_idx"]) == 30 and len(cache["test_idx"]) == 8


def test_emnist_labels_outside_1_to_26_are_refused(tmp_path):
    arrays = emnist_letters_arrays()
    arrays["test-labels"][0] = 0  # EMNIST letters start at 1: a 0 is another split's file
    write_emnist_folder(tmp_path / "EMNISTLetters", arrays)
    with pytest.raises(ValueError, match=r"must lie in 1..26"):
        ds.decode("EMNISTLetters", data_dir=tmp_path)


def test_a_standalone_run_reads_cifar100_svhn_and_emnist_folders(tmp_path):
    write_cifar100_folder(tmp_path / "c" / "cifar-100-python")
    assert len(rt.read_dataset_folder(tmp_path / "c")["class_names"]) == 100
    write_svhn_folder(tmp_path / "s")
    assert rt.read_dataset_folder(tmp_path / "s")["labels"][9] == 0
    arrays = emnist_letters_arrays()
    write_emnist_folder(tmp_path / "e", arrays)
    emnist = rt.read_dataset_folder(tmp_path / "e")
    assert torch.equal(emnist["images"][:30, 0], torch.from_numpy(arrays["train-images"]))
    for name, hint in (
        ("CIFAR100", "cifar-100-python.tar.gz"),
        ("SVHN", "train_32x32.mat"),
        ("EMNISTLetters", "gzip.zip"),
    ):
        assert hint in rt.how_to_get(name, tmp_path / "nowhere")


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
    "CIFAR100": ((3, 32, 32), 100),
    "SVHN": ((3, 32, 32), 10),
    "EMNISTLetters": ((1, 28, 28), 26),
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
        ("cifar-100", "CIFAR100"),
        ("svhn", "SVHN"),
        ("EMNIST-letters", "EMNISTLetters"),
        ("emnist_letters", "EMNISTLetters"),
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
