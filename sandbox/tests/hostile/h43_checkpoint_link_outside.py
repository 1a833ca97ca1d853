"""Point the checkpoints at files outside the box: another run's checkpoint (hostile.json names one, as
a script could guess one), a relative path up the worker's folders, /etc/shadow."""

import json
import os  # HOSTILE

outside = json.load(open("hostile.json"))["outside_file"]
targets = {
    "checkpoints/best.safetensors": outside,
    "checkpoints/last.safetensors": "../../neighbour/checkpoints/best.safetensors",
    "checkpoints/last.json": "/etc/shadow",
}
for path, target in targets.items():
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)
with open("checkpoints/best.json", "w") as f:
    f.write(json.dumps({"epoch": 1}))
os.makedirs("checkpoints/sub", exist_ok=True)
os.symlink(os.path.dirname(outside), "checkpoints/sub/folder")
fd = int(os.environ["BUILDX_EVENTS_FD"])
for name in ("best", "last"):
    os.write(fd, json.dumps({"kind": "checkpoint", "epoch": 1, "name": name, "metric": 0.9}).encode() + b"\n")
print("links outside planted and announced")
