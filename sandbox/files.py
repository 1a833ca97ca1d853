"""Reading what a sandboxed child left in its folder, as the hostile input it is.

The child owns its run folder and may have put anything there: a symlink to /proc/self/environ or to
another user's model, a hard link, a FIFO that blocks whoever opens it, a device node, a file that
keeps growing. A file is only read when it is a regular file reached without following a link at
any component (each opened with O_NOFOLLOW from the descriptor of the folder above it, starting at
the run folder), has at most two names (the runtime hard-links `best` to `last`), and is no larger
than the caller's bound. It is read in chunks from the descriptor it was checked on: a rename or a
new link after the check changes nothing about what is read.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, TypeAlias

CHUNK = 1 << 20

# A binary file open for reading, as the worker hands one on: an open file, a BytesIO or a FieldFile
# (IO[bytes]), or a BoundedFile (a RawIOBase, which typeshed does not count as an IO[bytes]).
ReadableFile: TypeAlias = IO[bytes] | io.RawIOBase


class Refused(Exception):
    """A file the platform will not read; `str()` says why (for the worker's log and the run's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BoundedFile(io.RawIOBase):
    """A read-only file object over a checked descriptor that never yields more than `limit` bytes
    (`Refused` is raised by the read that would pass it: the file grew after it was checked)."""

    def __init__(self, fd: int, *, size: int, limit: int, name: str) -> None:
        super().__init__()
        self.fd = fd
        self.size = size
        self.limit = limit
        self.name = name
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = os.lseek(self.fd, offset, whence)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        data = os.read(self.fd, len(buffer))
        if self.position + len(data) > self.limit:
            raise Refused("too_large", f"{self.name} grew past {self.limit} bytes while it was read")
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()

    def chunks(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


def open_regular(folder: Path, relative: str, *, max_bytes: int, max_links: int = 2) -> BoundedFile:
    """Open `folder/relative` for reading under the rules above, or raise Refused (or FileNotFoundError)."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("", ".", "..") or "/" in part for part in parts) or relative.startswith("/"):
        raise Refused("bad_name", f"{relative!r} is not a plain relative path")
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(folder, flags_dir)
    try:
        for part in parts[:-1]:
            next_fd = _open_at(part, fd, flags_dir, relative)
            os.close(fd)
            fd = next_fd
        # O_NONBLOCK: a FIFO planted under the file's name must not hang the worker in open().
        file_fd = _open_at(
            parts[-1], fd, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, relative
        )
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not_regular", f"{relative} is not a regular file")
        if info.st_nlink > max_links:
            raise Refused("links", f"{relative} has {info.st_nlink} names")
        if info.st_size > max_bytes:
            raise Refused(
                "too_large", f"{relative} is {info.st_size} bytes; at most {max_bytes} are accepted"
            )
    except BaseException:
        os.close(file_fd)
        raise
    return BoundedFile(file_fd, size=info.st_size, limit=max_bytes, name=relative)


def _open_at(name: str, dir_fd: int, flags: int, relative: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        # ELOOP: a symlink where O_NOFOLLOW stops; ENOTDIR: a file or link in a folder's place.
        raise Refused("link", f"{relative} cannot be opened safely ({error.strerror})") from error


def read_bytes(folder: Path, relative: str, *, max_bytes: int) -> bytes:
    """Small files (a checkpoint's JSON): the whole content, under the same rules."""
    with open_regular(folder, relative, max_bytes=max_bytes) as f:
        return f.read()


def remove_links(folder: Path) -> int:
    """Delete the links a child left in its folder, so that the worker never follows one out.

    Runs after the child is dead, so nothing can race it. Symlinks may point anywhere. A hard link
    whose other names are not all inside the folder could be another file of the filesystem
    (link() allows it without bubblewrap; across its bind mount it fails with EXDEV); hard links
    between files of the run (the runtime links best to last) stay.
    """
    removed = 0
    names: dict[tuple[int, int], list[str]] = {}
    links: dict[tuple[int, int], int] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*files, *dirs]:
            path = os.path.join(root, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(info.st_mode):
                os.unlink(path)
                removed += 1
            elif not stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                names.setdefault(key, []).append(path)
                links[key] = info.st_nlink
    for key, paths in names.items():
        if links[key] > len(paths):
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                removed += 1
    return removed
