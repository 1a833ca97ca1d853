"""manage.py fetch_dataset against a local HTTP server standing in for the dataset mirrors."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import tarfile
import threading

import pytest
import torch
from django.core.management import CommandError, call_command

from sandbox.engine import buildx_runtime as rt
from sandbox.engine import datasets as ds
from sandbox.tests.test_engine_datasets import (
    EMNIST_LETTERS,
    emnist_letters_arrays,
    write_cifar100_folder,
    write_cifar_folder,
    write_emnist_zip,
    write_mnist_folder,
    write_svhn_folder,
)


class Mirror:
    """http.server on 127.0.0.1 serving one folder, counting the requests it answers."""

    def __init__(self, folder) -> None:
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                super().do_GET()

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    mirror = Mirror(folder)
    yield folder, mirror
    mirror.close()


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def publish_checksums(monkeypatch, name: str, folder) -> None:
    """The tiny files stand in for the real ones, so the published checksums become theirs."""
    info = ds.BUILTIN[name]
    specs = tuple(dataclasses.replace(s, md5=md5(folder / s.name)) for s in info.downloads)
    monkeypatch.setitem(ds.BUILTIN, name, dataclasses.replace(info, downloads=specs))


def test_it_downloads_checks_and_caches_mnist_with_a_progress_bar(tmp_path, served, monkeypatch):
    folder, mirror = served
    arrays = write_mnist_folder(folder, n_train=30, n_test=10)
    publish_checksums(monkeypatch, "MNIST", folder)
    out = io.StringIO()
    data_dir = tmp_path / "data"

    call_command("fetch_dataset", "mnist", data_dir=str(data_dir), mirror=mirror.url, stdout=out)

    text = out.getvalue()
    assert "train-images-idx3-ubyte.gz  [##############################] 100%" in text
    assert text.count("checksum matches") == 4
    assert "MNIST: cache ready at" in text
    assert sorted(mirror.requests) == sorted(f"/{n}.gz" for n in rt.MNIST_FILES.values())
    assert ds.availability("MNIST", data_dir=data_dir).available
    cache = rt.load_cache(ds.cache_path("MNIST", cache_dir=data_dir / "cache"))
    assert torch.equal(cache["images"][:30, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))

    # A second run finds the files with matching checksums and downloads nothing.
    mirror.requests.clear()
    out = io.StringIO()
    call_command("fetch_dataset", "MNIST", data_dir=str(data_dir), mirror=mirror.url, stdout=out)
    assert mirror.requests == []
    assert out.getvalue().count("already here, checksum matches") == 4


def test_a_file_with_the_wrong_checksum_is_not_kept(tmp_path, served, monkeypatch):
    folder, mirror = served
    write_mnist_folder(folder)
    publish_checksums(monkeypatch, "MNIST", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    data_dir = tmp_path / "data"
    with pytest.raises(CommandError, match="t10k-labels-idx1-ubyte.gz: checksum .* does not match"):
        call_command(
            "fetch_dataset", "MNIST", data_dir=str(data_dir), mirror=mirror.url, stdout=io.StringIO()
        )
    assert sorted(p.name for p in (data_dir / "MNIST").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert not ds.availability("MNIST", data_dir=data_dir).available


def test_without_internet_it_says_where_to_copy_the_files(tmp_path):
    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}/"
    closed.server_close()  # nothing listens there now
    with pytest.raises(CommandError, match=r"copy the files .* into .*FashionMNIST"):
        call_command(
            "fetch_dataset", "fashion-mnist", data_dir=str(tmp_path), mirror=url, stdout=io.StringIO()
        )


def test_files_copied_in_by_hand_are_used_without_downloading(tmp_path, served):
    folder, mirror = served
    write_mnist_folder(tmp_path / "FashionMNIST", gz=False)
    out = io.StringIO()
    call_command("fetch_dataset", "FashionMNIST", data_dir=str(tmp_path), mirror=mirror.url, stdout=out)
    assert mirror.requests == []
    assert "unpacked files are already here" in out.getvalue()
    assert ds.cache_path("FashionMNIST", cache_dir=tmp_path / "cache").exists()


def test_cifar_is_downloaded_unpacked_and_cached(tmp_path, served, monkeypatch):
    folder, mirror = served
    write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    publish_checksums(monkeypatch, "CIFAR10", folder)
    data_dir = tmp_path / "data"
    call_command("fetch_dataset", "cifar10", data_dir=str(data_dir), mirror=mirror.url, stdout=io.StringIO())
    assert (data_dir / "CIFAR10" / "cifar-10-batches-py" / "data_batch_1").exists()
    cache = rt.load_cache(ds.cache_path("CIFAR10", cache_dir=data_dir / "cache"))
    assert cache["images"].shape == (24, 3, 32, 32)


def test_an_archive_that_writes_outside_its_folder_is_refused(tmp_path, served, monkeypatch):
    folder, mirror = served
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(evil, arcname="../../escaped.txt")
    publish_checksums(monkeypatch, "CIFAR10", folder)
    data_dir = tmp_path / "data"
    with pytest.raises(CommandError, match="unsafe or broken"):
        call_command(
            "fetch_dataset", "cifar10", data_dir=str(data_dir), mirror=mirror.url, stdout=io.StringIO()
        )
    assert not (tmp_path / "escaped.txt").exists() and not (data_dir / "escaped.txt").exists()


def test_digits_and_shapes_need_no_download_and_unknown_names_are_refused(tmp_path):
    out = io.StringIO()
    call_command("fetch_dataset", "shapes", data_dir=str(tmp_path), stdout=out)
    assert "shapes: nothing to download (generated)" in out.getvalue()
    assert ds.cache_path("shapes", cache_dir=tmp_path / "cache").exists()
    with pytest.raises(CommandError, match="Unknown dataset 'imagenet'"):
        call_command("fetch_dataset", "imagenet", data_dir=str(tmp_path))


# --- CIFAR-100, SVHN, EMNIST letters: the files as published, served locally ---------------------------


def serve_cifar100(tmp_path, folder) -> dict:
    written = write_cifar100_folder(tmp_path / "src" / "cifar-100-python")
    with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    return written


def serve_svhn(tmp_path, folder) -> dict:
    return write_svhn_folder(folder)


def serve_emnist(tmp_path, folder) -> dict:
    arrays = emnist_letters_arrays()
    write_emnist_zip(folder / "gzip.zip", arrays)
    return arrays


SERVE = {"CIFAR100": serve_cifar100, "SVHN": serve_svhn, "EMNISTLetters": serve_emnist}


def test_cifar100_is_downloaded_unpacked_cached_and_its_figures_checked(tmp_path, served, monkeypatch):
    folder, mirror = served
    written = serve_cifar100(tmp_path, folder)
    publish_checksums(monkeypatch, "CIFAR100", folder)
    data_dir = tmp_path / "data"
    out = io.StringIO()
    call_command("fetch_dataset", "cifar-100", data_dir=str(data_dir), mirror=mirror.url, stdout=out)
    assert mirror.requests == ["/cifar-100-python.tar.gz"]
    assert (data_dir / "CIFAR100" / "cifar-100-python" / "meta").exists()
    cache = rt.load_cache(ds.cache_path("CIFAR100", cache_dir=data_dir / "cache"))
    assert cache["images"].shape == (10, 3, 32, 32)
    assert cache["labels"].tolist() == written["train"][1] + written["test"][1]
    assert ds.availability("CIFAR100", data_dir=data_dir).available
    # Random pixels are not CIFAR-100's photos: the command computes the figures and says they differ.
    text = out.getvalue()
    assert "CIFAR100: training images' mean [" in text
    assert "differ from the published mean [0.5071, 0.4865, 0.4409]" in text


def test_svhn_is_downloaded_checked_and_cached_with_10_as_0(tmp_path, served, monkeypatch):
    folder, mirror = served
    written = serve_svhn(tmp_path, folder)
    publish_checksums(monkeypatch, "SVHN", folder)
    data_dir = tmp_path / "data"
    out = io.StringIO()
    call_command("fetch_dataset", "svhn", data_dir=str(data_dir), mirror=mirror.url, stdout=out)
    assert sorted(mirror.requests) == ["/test_32x32.mat", "/train_32x32.mat"]
    assert out.getvalue().count("checksum matches") == 2
    cache = rt.load_cache(ds.cache_path("SVHN", cache_dir=data_dir / "cache"))
    images, labels = written["train_32x32.mat"]
    assert torch.equal(cache["images"][:12], torch.from_numpy(images))
    assert cache["labels"][:12].tolist() == [int(v) % 10 for v in labels]
    assert 0 in cache["labels"].tolist() and 10 not in cache["labels"].tolist()
    assert ds.availability("SVHN", data_dir=data_dir).available


def test_emnist_letters_are_taken_out_of_the_zip_upright_and_cached(tmp_path, served, monkeypatch):
    folder, mirror = served
    arrays = serve_emnist(tmp_path, folder)
    publish_checksums(monkeypatch, "EMNISTLetters", folder)
    data_dir = tmp_path / "data"
    call_command(
        "fetch_dataset", "emnist-letters", data_dir=str(data_dir), mirror=mirror.url, stdout=io.StringIO()
    )
    assert mirror.requests == ["/gzip.zip"]
    assert sorted(p.name for p in (data_dir / "EMNISTLetters").iterdir()) == sorted(
        ["gzip.zip", *(f"{n}.gz" for n in EMNIST_LETTERS.values())]
    )  # only the letters, not the other splits in the archive
    cache = rt.load_cache(ds.cache_path("EMNISTLetters", cache_dir=data_dir / "cache"))
    assert torch.equal(cache["images"][:30, 0], torch.from_numpy(arrays["train-images"]))  # upright
    assert cache["labels"][:26].tolist() == list(range(26))
    assert ds.availability("EMNISTLetters", data_dir=data_dir).available

    # The letters' files removed, the archive kept: a second run takes them out again without downloading.
    for name in EMNIST_LETTERS.values():
        (data_dir / "EMNISTLetters" / f"{name}.gz").unlink()
    mirror.requests.clear()
    out = io.StringIO()
    call_command("fetch_dataset", "EMNISTLetters", data_dir=str(data_dir), mirror=mirror.url, stdout=out)
    assert mirror.requests == []
    assert (
        "gzip.zip: already here, checksum matches" in out.getvalue()
        and "gzip.zip: unpacked" in out.getvalue()
    )


@pytest.mark.parametrize(
    ("name", "damaged"),
    [("CIFAR100", "cifar-100-python.tar.gz"), ("SVHN", "test_32x32.mat"), ("EMNISTLetters", "gzip.zip")],
)
def test_a_new_sets_file_with_the_wrong_checksum_is_not_kept(tmp_path, served, monkeypatch, name, damaged):
    folder, mirror = served
    SERVE[name](tmp_path, folder)
    publish_checksums(monkeypatch, name, folder)
    good = (folder / damaged).read_bytes()
    (folder / damaged).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    data_dir = tmp_path / "data"
    with pytest.raises(CommandError, match=f"{damaged}: checksum .* does not match"):
        call_command("fetch_dataset", name, data_dir=str(data_dir), mirror=mirror.url, stdout=io.StringIO())
    assert not (data_dir / name / damaged).exists()
    assert not ds.availability(name, data_dir=data_dir).available
    assert not ds.cache_path(name, cache_dir=data_dir / "cache").exists()


def test_a_zip_without_the_letters_is_refused(tmp_path, served, monkeypatch):
    folder, mirror = served
    import zipfile

    with zipfile.ZipFile(folder / "gzip.zip", "w") as zipped:
        zipped.writestr("gzip/emnist-digits-train-images-idx3-ubyte.gz", b"not the letters")
    publish_checksums(monkeypatch, "EMNISTLetters", folder)
    data_dir = tmp_path / "data"
    with pytest.raises(CommandError, match="unsafe or broken .*holds no gzip/emnist-letters-train-images"):
        call_command(
            "fetch_dataset", "EMNISTLetters", data_dir=str(data_dir), mirror=mirror.url, stdout=io.StringIO()
        )
    assert not ds.availability("EMNISTLetters", data_dir=data_dir).available


def test_unpacked_files_copied_in_by_hand_that_are_not_the_set_build_no_cache(tmp_path, served):
    """Unpacked files have no published checksum: they are read, found wrong, and no cache is built."""
    folder, mirror = served
    write_cifar100_folder(tmp_path / "CIFAR100" / "cifar-100-python")
    (tmp_path / "CIFAR100" / "cifar-100-python" / "test").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CommandError, match="files are here but cannot be read as CIFAR100"):
        call_command(
            "fetch_dataset", "CIFAR100", data_dir=str(tmp_path), mirror=mirror.url, stdout=io.StringIO()
        )
    assert mirror.requests == []
    assert not ds.cache_path("CIFAR100", cache_dir=tmp_path / "cache").exists()
    assert not ds.availability("CIFAR100", data_dir=tmp_path).available
