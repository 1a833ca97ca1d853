"""Throughput of storing a 100 MiB checkpoint through Django's storage API: the local disk against an
S3-compatible server (moto's server mode on this machine, started here), as a trainer stores it.

    python bench/storage_upload.py [--mb 100] [--repeat 3]

Both write the same file from disk, streamed (django-storages uploads it to the bucket in parts with
boto3's managed transfer). moto keeps objects in its own process's memory: the figure is the cost of the
S3 protocol and the client on this machine, not of a network or of a real object store.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_answers(url: str) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_answers(endpoint + "/moto-api/")
        os.environ.update(
            DJANGO_SETTINGS_MODULE="buildx.settings",
            STORAGE_URL=f"s3://bench/runs?endpoint_url={endpoint}&region=us-east-1",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench-secret",
            MEDIA_ROOT=str(Path(tmp.name) / "media"),
            SQLITE_PATH=str(Path(tmp.name) / "bench.sqlite3"),
        )
        import django

        django.setup()
        from django.core.files.base import File
        from django.core.files.storage import FileSystemStorage, default_storage
        from django.core.management import call_command

        call_command("storage_setup", stdout=io.StringIO())
        checkpoint = Path(tmp.name) / "last.safetensors"
        with open(checkpoint, "wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(1 << 20))
        size = checkpoint.stat().st_size
        local = FileSystemStorage(location=Path(tmp.name) / "disk")
        print(f"Storing a {args.mb} MiB checkpoint through Django's storage API, {os.cpu_count()} CPUs")
        for label, storage in (
            ("local disk (FileSystemStorage)", local),
            ("S3 on moto (S3Storage)", default_storage),
        ):
            seconds = []
            for i in range(args.repeat):
                with open(checkpoint, "rb") as f:
                    start = time.perf_counter()
                    name = storage.save(f"runs/{i}/last.safetensors", File(f))
                    seconds.append(time.perf_counter() - start)
                assert storage.size(name) == size
            best, median = min(seconds), statistics.median(seconds)
            print(
                f"{label:<32} median {median:6.2f} s  ({size / 1e6 / median:7.1f} MB/s)   "
                f"best {best:6.2f} s  ({size / 1e6 / best:7.1f} MB/s)   runs: "
                + ", ".join(f"{s:.2f}" for s in seconds)
            )
    finally:
        moto.terminate()
        moto.wait(timeout=30)
        tmp.cleanup()


if __name__ == "__main__":
    main()
