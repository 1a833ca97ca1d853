"""A pool of unprivileged uids: each sandbox runs as a uid no other sandbox holds at the same time.

The kernel counts some limits per uid across the whole machine (RLIMIT_NPROC: processes and threads),
and a uid owns files and signals. One shared uid for every sandbox let one student's 250 threads make
a classmate's run fail to start its own. As isolate's boxes do, each sandbox leases a uid of its own.

A lease is an exclusive `flock` on a file named after the uid in a folder every worker process on the
host shares: the kernel drops it when the holder dies, so a killed worker's uids come back by
themselves. A uid is only handed out when no process runs as it (one a dead worker left would
otherwise share it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
from dataclasses import dataclass
from pathlib import Path


class PoolExhausted(Exception):
    """Every uid of the pool is leased (more sandboxes at once than the pool has uids)."""


@dataclass
class Lease:
    uid: int
    gid: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def _uids_in_use() -> set[int]:
    """Real uids of the processes on this host (this pid namespace)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                found.add(os.stat(entry.path).st_uid)
    return found


def acquire(*, base: int, count: int, lock_dir: Path) -> Lease:
    """Lease a free uid of [base, base + count). Raises PoolExhausted when every one is taken."""
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    busy = _uids_in_use()
    candidates = list(range(base, base + count))
    random.shuffle(candidates)  # many workers starting at once do not all try the same uid first
    for uid in candidates:
        if uid in busy:
            continue
        fd = os.open(lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Lease(uid=uid, gid=uid, fd=fd)
    raise PoolExhausted(f"all {count} sandbox uids from {base} are in use")
