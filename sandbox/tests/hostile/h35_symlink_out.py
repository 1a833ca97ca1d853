"""Leave symlinks in the run directory pointing outside it, for the worker to follow later."""

import os  # HOSTILE

os.symlink("/etc/shadow", "checkpoints/last.json")
os.symlink("/root", "root-link")
os.symlink("..", "checkpoints/up")
try:
    os.link("/etc/passwd", "hardlink")
    print("HARDLINKED")
except OSError as error:
    print("refused", error)
