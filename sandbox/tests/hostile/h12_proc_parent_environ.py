"""Read the worker's environment through /proc: the parent, pid 1, and every pid there is."""

import os  # HOSTILE

for pid in ["1", str(os.getppid()), *os.listdir("/proc")]:
    if pid.isdigit():
        for name in ["environ", "cmdline"]:
            try:
                print(pid, name, open(f"/proc/{pid}/{name}", "rb").read())
            except OSError as error:
                print("refused", pid, name, error)
