"""The warm sandbox's process: torch and the harness imported once, then one forked child per check.

    python forkserver.py CONTROL_FD SPOOL   (in bubblewrap, started by training/warm.py)

Starting Python and importing torch costs seconds, and a script's first optimizer costs another second
(torch imports its compiler on first use); a child forked from a process that did all of that once
pays only for its own model and batch. Each child runs the harness exactly as `harness.py` run as a
command would, in its own folder under SPOOL, with its own session, its own limits and its own pipes
(received from the worker over the control socket, so the worker reads them as it reads a new
process's).

This process is pid 1 of the sandbox's pid namespace, so a check cannot signal it (the kernel drops
signals from inside the namespace that pid 1 does not handle, SIGKILL included), and it is not
dumpable, so a check cannot read or write its memory through /proc. After every check, whatever the
check started is killed (kill(-1) as pid 1 reaches every process of the namespace), and what it left
in the shared places (/tmp, System V IPC) is removed, before the worker hears that the check ended:
the next check starts from the same state as the first.

Control socket (AF_UNIX, SOCK_SEQPACKET, one JSON object a packet):
    server -> worker   {"ready": true}                     after the warm-up
    worker -> server   {"run": ID, "dir": ..., "limits": {...}} with the child's stdout, stderr and
                       events pipes (SCM_RIGHTS)
    server -> worker   {"started": ID}
    worker -> server   {"stop": ID} (SIGUSR1: stop at the next batch) | {"kill": ID}
    server -> worker   {"exited": ID, "code": N (negative: a signal), "cpu": seconds}
End of file on the socket: the worker is done with us; we exit and the namespace goes with us.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import json
import os
import random
import resource
import select
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

if __name__ == "__main__":
    # Before torch opens anything of its own: keep only stdio and the control socket of what bubblewrap
    # and the worker passed down.
    os.closerange(3, int(sys.argv[1]))
    os.closerange(int(sys.argv[1]) + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])

import buildx_runtime as rt  # noqa: E402
import harness  # noqa: E402
import torch  # noqa: E402

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
IPC_RMID = 0
EVENTS_FD = 3  # the child's events pipe, as BUILDX_EVENTS_FD names it
REAP_SECONDS = 5.0  # a check's processes that outlive this after SIGKILL: give up and exit
MAX_MESSAGE = 1 << 16

_libc = ctypes.CDLL(None, use_errno=True)


def _send(ctl: socket.socket, **message) -> None:
    ctl.send(json.dumps(message).encode())


def _receive(ctl: socket.socket) -> tuple[dict | None, list[int]]:
    """The next message and the descriptors that came with it; (None, []) at end of file."""
    data, fds, _flags, _address = socket.recv_fds(ctl, MAX_MESSAGE, 3)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        message = json.loads(data)
    except ValueError:
        message = {}
    return (message if isinstance(message, dict) else {}), fds


# --- Between checks: nothing a check did survives it ------------------------------------------------


def _kill_everything_else() -> bool:
    """SIGKILL every other process of the namespace and reap them all; False if some would not die."""
    deadline = time.monotonic() + REAP_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # pid 1's kill(-1): every process of the namespace but us
        try:
            while True:
                pid, _status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break  # some are still dying
        except ChildProcessError:
            return True  # orphans are re-parented to us: no child left means no process left
        time.sleep(0.005)
    return False


def _mount_points() -> list[Path]:
    """Where the sandbox has mounts (the project, the interpreter, the spool...), from mountinfo."""
    try:
        with open("/proc/self/mountinfo") as f:
            return [Path(line.split()[4].replace("\\040", " ")) for line in f]
    except OSError:
        return []


def _wipe(folder: Path, keep: Path) -> None:
    """Delete what is in `folder` (a tmpfs of the sandbox) except the way down to `keep` (the spool,
    bound from the worker's disk) and to any other mount: never into another mount. When the project
    itself lives under /tmp (a CI clone, say), its bind mounts sit under this tmpfs."""
    try:
        device = os.lstat(folder).st_dev
        entries = list(os.scandir(folder))
    except OSError:
        return
    kept = [keep, *_mount_points()]
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.stat(follow_symlinks=False).st_dev != device:
                continue
        except OSError:
            continue
        if any(k == path or k.is_relative_to(path) for k in kept):
            if entry.is_dir(follow_symlinks=False):
                _wipe(path, keep)
            continue
        _remove(path, device)


def _remove(path: Path, device: int | None = None) -> None:
    """Delete `path` and what is under it, staying on `device` (default: the device of `path`)."""
    try:
        stat = os.lstat(path)
        if device is None:
            device = stat.st_dev
        if stat.st_dev != device:
            return  # a mount: not ours to empty
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)  # a check may have taken its own rights away
            for entry in os.scandir(path):
                _remove(Path(entry.path), device)
            path.rmdir()
        else:
            path.unlink()
    except OSError:
        pass


def _remove_ipc() -> None:
    """System V shared memory, message queues and semaphores live in the namespace, not the process."""
    for kind, remove in (
        ("shm", lambda i: _libc.shmctl(i, IPC_RMID, None)),
        ("msg", lambda i: _libc.msgctl(i, IPC_RMID, None)),
        ("sem", lambda i: _libc.semctl(i, 0, IPC_RMID)),
    ):
        try:
            rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            with contextlib.suppress(IndexError, ValueError):
                remove(int(row.split()[1]))


# --- One check ----------------------------------------------------------------------------------------


def _child(request: dict, fds: list[int], signals: dict, ctl: socket.socket) -> None:
    """In the forked child: become the harness of one check. Never returns."""
    code = harness.EXIT_FAILED
    try:
        ctl.detach()  # the number is closed below with the rest; the object must not close it again
        os.setsid()
        # Out of the way first: a received descriptor may have a number we are about to replace.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]
        for target, fd in zip((1, 2, EVENTS_FD), high, strict=True):
            os.dup2(fd, target)
        os.closerange(EVENTS_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        _limit(request["limits"])
        for number, handler in signals.items():
            signal.signal(number, handler)
        # As harness.py does before it imports torch: a stop that comes before the runtime takes over.
        signal.signal(signal.SIGUSR1, lambda signum, frame: harness._stop_before_runtime.append(signum))
        _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as any process is: its own /proc/self works
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.chdir(request["dir"])
        os.environ["HOME"] = request["dir"]
        os.environ["BUILDX_EVENTS_FD"] = str(EVENTS_FD)
        config = json.loads(Path("config.json").read_text())
        code = harness.run(Path("script.py"), config)
    except SystemExit as e:  # a script's exit() at its top level: what the interpreter would make of it
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            with contextlib.suppress(Exception):
                print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the interpreter would print it and exit with 1
        with contextlib.suppress(Exception):
            traceback.print_exc()
    harness.exit_now(code)


def _limit(limits: dict) -> None:
    """The limits training/sandbox.py's preexec sets on a new child, here on the forked one."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = limits["cpu_seconds"]  # a forked process starts at zero CPU time
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    if limits.get("processes"):
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    if limits.get("memory_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    # POSIX message queues outlive their process in the IPC namespace and cannot be listed without a
    # mount: none at all, so none is left for the next check.
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))


def _check(ctl: socket.socket, request: dict, fds: list[int], signals: dict, spool: Path) -> bool:
    """Run one check to its end; False when this process must exit (the worker left, or a check's
    processes would not die)."""
    check = request.get("run")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, fds, signals, ctl)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    _send(ctl, started=check)
    status = rusage = None
    worker_left = False
    try:
        while status is None:
            readable, _, _ = select.select([ctl, pidfd], [], [])
            if ctl in readable:
                message, extra = _receive(ctl)
                for fd in extra:
                    os.close(fd)
                if message is None:
                    worker_left = True
                    break
                if message.get("stop") == check:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGUSR1)
                elif message.get("kill") == check:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if pidfd in readable:
                _pid, status, rusage = os.wait4(pid, 0)
    finally:
        os.close(pidfd)
    clean = _kill_everything_else()
    _wipe(Path("/tmp"), spool)
    _remove_ipc()
    if worker_left or not clean:
        return False
    _send(
        ctl,
        exited=check,
        code=os.waitstatus_to_exitcode(status),
        cpu=rusage.ru_utime + rusage.ru_stime,
    )
    return True


# --- Start-up -----------------------------------------------------------------------------------------

WARM_UP_SCRIPT = """
import torch
from torch import nn

import buildx_runtime as rt

INPUT_SHAPE = (3, 8, 8)
TRAIN_TRANSFORM = rt.Compose([rt.RandomCrop(8, padding=1), rt.RandomHorizontalFlip(), rt.Normalize((0.5,) * 3, (0.5,) * 3)])
EVAL_TRANSFORM = rt.Compose([rt.Normalize((0.5,) * 3, (0.5,) * 3)])
EPOCHS = 1
BATCH_SIZE = 4


class WarmUp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.avg = nn.AdaptiveAvgPool2d((2, 2))
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.avg(self.pool(self.relu(self.bn(self.conv(x))))))))


def build_model():
    return WarmUp()


def train(model, data):
    rt.seed_everything(0)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    for optimizer in (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      torch.optim.Adam(model.parameters(), lr=0.01),
                      torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)):
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        rt.resume(model=model, optimizer=optimizer, scheduler=scheduler)
        model.train()
        for x, y in data.train.batches(BATCH_SIZE, shuffle=True, transform=TRAIN_TRANSFORM):
            with rt.autocast():
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        val_loss, val_acc = rt.evaluate(model, data.val, loss_fn=loss_fn, batch_size=BATCH_SIZE,
                                        transform=EVAL_TRANSFORM)
        rt.report_epoch(epoch=1, epochs=1, train_loss=loss.item(), train_acc=0.5, val_loss=val_loss,
                        val_acc=val_acc, lr=optimizer.param_groups[0]["lr"])
        rt.save_checkpoint(model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, metric=val_acc)
"""


def _warm_up() -> None:
    """Run the harness once, in smoke mode, on a script of our own: what a check does, done here so
    that every child starts with it done. Leaves no state a check could notice (seeds, threads, the
    stop handler, the runtime's state, files)."""
    folder = Path("/tmp/buildx-warm-up")
    folder.mkdir()
    torch_rng, python_rng = torch.get_rng_state(), random.getstate()
    threads = torch.get_num_threads()
    # One thread: a pool of OpenMP threads started here would not survive the fork into the children.
    torch.set_num_threads(1)
    events = os.open(os.devnull, os.O_WRONLY)
    events_env = os.environ.get("BUILDX_EVENTS_FD")
    cwd = os.getcwd()
    try:
        os.chdir(folder)
        n = 12
        torch.save(
            {
                "images": torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8),
                "labels": torch.arange(n) % 2,
                "class_names": ["a", "b"],
                "train_idx": torch.arange(0, 8),
                "test_idx": torch.arange(8, n),
                "input_shape": [3, 8, 8],
                "name": "warm-up",
                "version": 1,
            },
            "data.pt",
        )
        Path("script.py").write_text(WARM_UP_SCRIPT)
        os.environ["BUILDX_EVENTS_FD"] = str(events)
        config = {
            "dataset_cache": str(folder / "data.pt"),
            "checkpoint_dir": "checkpoints",
            "expect": {"output_shape": [2]},
            "val_split": 0.25,
            "device": "cpu",
            "smoke": True,
        }
        harness.run(Path("script.py"), config)
    finally:
        os.chdir(cwd)
        os.close(events)
        if events_env is None:
            os.environ.pop("BUILDX_EVENTS_FD", None)
        else:
            os.environ["BUILDX_EVENTS_FD"] = events_env
        sys.modules.pop("buildx_script", None)
        rt._state = rt._State()
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the runtime's stop handler, installed by run()
        torch.set_num_threads(threads)
        torch.set_rng_state(torch_rng)
        random.setstate(python_rng)
        _remove(folder)
        gc.collect()


def main() -> int:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    spool = Path(sys.argv[2])
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no check may open our /proc/1/mem
    # What a new Python process has; each child gets it back. Here nothing is caught, so that no
    # signal from a check reaches us (pid 1 of a namespace gets only the signals it handles).
    signals = {
        number: signal.getsignal(number)
        for number in signal.valid_signals()
        if number not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
        and signal.getsignal(number) is not None
    }
    for number in signals:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_IGN)
    os.close(os.pidfd_open(os.getpid()))  # a kernel without pidfds fails here, not at the first check
    _warm_up()
    _wipe(Path("/tmp"), spool)
    _send(ctl, ready=True)
    while True:
        message, fds = _receive(ctl)
        if message is None:
            return 0
        if "run" in message and len(fds) == 3:
            if not _check(ctl, message, fds, signals, spool):
                return 1
        else:
            for fd in fds:  # a stop or kill for a check that is over
                os.close(fd)


if __name__ == "__main__":
    harness.exit_now(main())
