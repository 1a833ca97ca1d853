"""Ignore the stop signal, then try to kill everything it can see, then spin."""

import os  # HOSTILE
import signal

for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
for pid in (-1, 0, 1, os.getppid()):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as error:
        print("refused", pid, error)
for pid in range(2, 5000):
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
while True:
    pass
