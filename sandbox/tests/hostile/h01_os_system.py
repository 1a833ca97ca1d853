"""Run a shell through os.system: copy the environment out and write outside the run directory."""

import os  # HOSTILE

os.system("env > /tmp/buildx-escape.txt; env; cat /proc/*/environ; echo pwned > ../escaped.txt")
